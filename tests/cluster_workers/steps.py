"""A job of many small allreduce steps for the failure tests: prints 'step N' on rank 0;
STEPS (default 400) steps of SLEEP s; CRASH_NODE/CRASH_STEP make one node's rank die once
(on the first attempt) by os._exit(9); timeout TIMEOUT s (default 8)."""
import os
import time
from datetime import timedelta

import ddl
import ddl.distributed as dist

dist.init_process_group(timeout=timedelta(seconds=float(os.environ.get("TIMEOUT", "8"))))
rank, attempt = dist.get_rank(), int(os.environ.get("DDL_RESTART_COUNT", "0"))
crash_node, crash_step = os.environ.get("CRASH_NODE"), int(os.environ.get("CRASH_STEP", "-1"))
for step in range(int(os.environ.get("STEPS", "400"))):
    t = ddl.ones(1000) * (rank + 1)
    dist.all_reduce(t)
    ws = dist.get_world_size()
    assert float(t[0]) == ws * (ws + 1) / 2, float(t[0])
    if rank == 0:
        print(f"step {step} attempt {attempt}", flush=True)
    if attempt == 0 and os.environ.get("GROUP_RANK") == crash_node and step == crash_step:
        os._exit(9)
    time.sleep(float(os.environ.get("SLEEP", "0.05")))
print(f"done rank {rank} attempt {attempt}", flush=True)
dist.destroy_process_group()
