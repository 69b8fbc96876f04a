"""ddl.multiprocessing.spawn: fn(rank, *args) in nprocs processes, PyTorch's error semantics,
and the DDP tutorial's shape (each process calls init_process_group itself)."""
import os
import socket
import time

import pytest

import ddl.multiprocessing as mp


def _write_rank(rank, folder):
    with open(os.path.join(folder, f"r{rank}"), "w") as f:
        f.write(str(os.getpid()))


def _raise_on_one(rank, _):
    if rank == 1:
        raise ValueError(f"rank {rank} is unhappy")
    time.sleep(60)  # the others are terminated when rank 1 fails


def _exit_three(rank):
    os._exit(3 if rank == 0 else 0)


def _ddp_tutorial(rank, world_size, port, folder):
    import ddl
    import ddl.distributed as dist
    from ddl.nn.parallel import DistributedDataParallel as DDP

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    ddl.manual_seed(rank)  # different data per rank; DDP syncs the weights from rank 0
    model = DDP(ddl.nn.Linear(4, 1))
    opt = ddl.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ddl.nn.functional.mse_loss(model(ddl.randn(8, 4)), ddl.randn(8, 1)).backward()
        opt.step()
    with open(os.path.join(folder, f"w{rank}"), "w") as f:
        f.write(repr(model.module.weight.tolist()))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_spawn_runs_fn_with_rank(tmp_path):
    mp.spawn(_write_rank, args=(str(tmp_path),), nprocs=3)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r0", "r1", "r2"]
    assert len({p.read_text() for p in tmp_path.iterdir()}) == 3


def test_spawn_error_names_the_process():
    t0 = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException, match="Process 1 terminated") as e:
        mp.spawn(_raise_on_one, args=(None,), nprocs=3)
    assert "rank 1 is unhappy" in str(e.value) and e.value.error_index == 1
    assert time.monotonic() - t0 < 50  # the sleeping ranks were terminated, not waited for


def test_spawn_exit_code_and_join_false():
    ctx = mp.spawn(_exit_three, nprocs=2, join=False)
    assert len(ctx.pids()) == 2
    with pytest.raises(mp.ProcessExitedException, match="exit code 3") as e:
        while not ctx.join(60):
            pass
    assert e.value.exit_code == 3 and e.value.error_index == 0


def test_spawn_ddp_tutorial(tmp_path):
    mp.spawn(_ddp_tutorial, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = (tmp_path / "w0").read_text(), (tmp_path / "w1").read_text()
    assert w0 == w1  # DDP kept the replicas identical


def test_bad_nprocs():
    with pytest.raises(ValueError, match="nprocs"):
        mp.spawn(_write_rank, nprocs=0)
