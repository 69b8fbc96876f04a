"""A job step for `srun -n N python slurm_train.py OUTDIR` (tests/test_slurm.py): init_process_group()
with no torch-style variables (ddl reads SLURM_*), one DDP step whose averaged gradients are
checked against every rank's own gradients computed here without communication, the updated
weights checked equal on every rank, and an all_reduce. Writes OUTDIR/out<rank> (one JSON
record) and prints 'ok <rank>'."""
import json
import os
import socket
import sys

import numpy as np

import ddl
import ddl.distributed as dist
from ddl.nn.parallel import DistributedDataParallel as DDP

BATCH = 8


def batch(rank):
    rng = np.random.default_rng(100 + rank)
    return (ddl.tensor(rng.standard_normal((BATCH, 6)).astype(np.float32)),
            ddl.tensor(rng.standard_normal((BATCH, 3)).astype(np.float32)))


def local_grads(model, rank):
    """The gradients of one rank's batch through a plain (non-DDP) copy of the model."""
    model.zero_grad()
    x, y = batch(rank)
    ddl.nn.functional.mse_loss(model(x), y).backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def main(outdir):
    launch_vars = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
                   if k in os.environ]
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()

    ddl.manual_seed(0)
    ref = ddl.nn.Linear(6, 3)
    model = ddl.nn.Linear(6, 3)
    model.load_state_dict(ref.state_dict())
    expected = [sum(g) / world for g in zip(*(local_grads(ref, r) for r in range(world)))]

    ddp = DDP(model)
    opt = ddl.optim.SGD(ddp.parameters(), lr=0.1)
    x, y = batch(rank)
    opt.zero_grad()
    ddl.nn.functional.mse_loss(ddp(x), y).backward()
    grad_err = max(float(np.abs(p.grad.numpy() - e).max())
                   for p, e in zip(model.parameters(), expected))
    opt.step()

    w = model.weight.detach().clone()   # the same step on every rank: equal weights
    total = w.clone()
    dist.all_reduce(total)
    weights_equal = bool(np.allclose(total.numpy(), world * w.numpy(), rtol=1e-6, atol=1e-6))

    t = ddl.ones(4) * (rank + 1)
    dist.all_reduce(t)

    rec = {"rank": rank, "world": world, "host": socket.gethostname(), "local_rank": int(os.environ["LOCAL_RANK"]),
           "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
           "slurm_procid": int(os.environ["SLURM_PROCID"]), "launch_vars_before": launch_vars,
           "grad_err": grad_err, "weights_equal": weights_equal, "allreduce": t.tolist()}
    with open(os.path.join(outdir, f"out{rank}"), "w") as f:
        json.dump(rec, f)
    dist.destroy_process_group()
    print(f"ok {rank}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
