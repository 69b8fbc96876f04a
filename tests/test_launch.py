"""ddl.distributed.launch: forked ranks, results, failures (notebook-defined functions are
covered by tests/test_notebook.py)."""
import pytest

import ddl
import ddl.distributed as dist


def _sum_ranks(scale):
    import ddl
    import ddl.distributed as dist

    t = ddl.ones(3) * (dist.get_rank() + 1) * scale
    dist.all_reduce(t)
    return dist.get_world_size(), t.tolist()


@pytest.mark.timeout(60)
def test_returns_rank0_result_after_this_process_used_gloo():
    ddl._C.gloo_selftest()  # the parent's Gloo device must not leak into the forked ranks
    world, values = dist.launch(_sum_ranks, nprocs=3, args=(2.0,), timeout=50)
    assert world == 3 and values == [12.0] * 3


def _fail_on_rank1():
    import ddl.distributed as dist

    if dist.get_rank() == 1:
        raise KeyError("boom on rank 1")
    dist.barrier()


@pytest.mark.timeout(60)
def test_a_failing_rank_is_named_with_its_error():
    with pytest.raises(dist.DistributedError, match=r"rank 1 failed: KeyError: 'boom on rank 1'"):
        dist.launch(_fail_on_rank1, nprocs=2, timeout=40)


def _die_on_rank0():
    import os

    import ddl.distributed as dist

    if dist.get_rank() == 0:
        os._exit(9)
    dist.barrier()


@pytest.mark.timeout(60)
def test_a_dead_rank_is_named():
    with pytest.raises(dist.DistributedError, match="rank 0 exited with code 9"):
        dist.launch(_die_on_rank0, nprocs=2, timeout=40)


def test_bad_arguments():
    with pytest.raises(TypeError):
        dist.launch("not callable", 2)
    with pytest.raises(ValueError):
        dist.launch(_sum_ranks, 0)


def _token():
    import os

    return os.environ.get("DDL_STORE_TOKEN")


@pytest.mark.timeout(60)
def test_the_ranks_store_gets_a_random_token_unless_one_is_exported(monkeypatch):
    import os

    monkeypatch.delenv("DDL_STORE_TOKEN", raising=False)
    token = dist.launch(_token, nprocs=2, timeout=50)
    assert token and len(token) == 64 and "DDL_STORE_TOKEN" not in os.environ
    assert dist.launch(_token, nprocs=2, timeout=50) != token   # per job
    monkeypatch.setenv("DDL_STORE_TOKEN", "mine")
    assert dist.launch(_token, nprocs=2, timeout=50) == "mine"
