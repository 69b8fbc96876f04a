"""One rank of a fault-injection job for tests/test_fault.py (from RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT): all_reduce of a 1 MiB tensor in a loop, checking each sum.

    ring.py TIMEOUT_S STEPS
Prints "OK <step>" after every step (flushed), "DONE" after STEPS (0: forever), or on the
first failure "CAUGHT <time.time()> <type name> <message on one line>" and exits 3.
"""
import os
import sys
import time
from datetime import timedelta

import numpy as np

import ddl.distributed as dist

timeout, steps = float(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
rank, world = dist.get_rank(), dist.get_world_size()
a = np.empty(1 << 18, np.float32)
try:
    i = 0
    while steps == 0 or i < steps:
        i += 1
        a.fill(rank + i)
        dist.all_reduce(a)
        expect = sum(r + i for r in range(world))
        if not (a == expect).all():
            print(f"WRONG {i} {a[0]} != {expect}", flush=True)
            sys.exit(4)
        print(f"OK {i}", flush=True)
    print("DONE", flush=True)
    dist.destroy_process_group()
except Exception as e:  # noqa: BLE001 - report whatever it is, the test checks the type
    msg = str(e).replace("\n", " ")
    print(f"CAUGHT {time.time()} {type(e).__name__} {msg}", flush=True)
    os._exit(3)
