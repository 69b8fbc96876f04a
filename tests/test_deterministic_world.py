"""The deterministic mode on 1, 2 and 4 ranks: bitwise-identical parameters after 50 steps
(MLP, CNN with batch norm and dropout, LSTM), elastic resume 2 -> 4 and 2 -> 1 ranks, and the
default mode's run-to-run repeatability at 2 ranks."""
import os

import numpy as np
import pytest
from _deterministic_runs import STEPS, build, dataset, run

import ddl
import ddl.distributed as dist
import ddl.nn.functional as F
from ddl.distributed.deterministic import parameter_digest
from ddl.nn.parallel import DistributedDataParallel

KINDS = ("mlp", "cnn", "lstm")


@pytest.fixture(scope="module")
def reference():
    """Digests of uninterrupted one-process runs (no process group), in the pytest process."""
    ddl.set_num_threads(1)
    return {k: run(k) for k in KINDS}


def test_one_process_run_to_run(reference):
    for k in KINDS:
        assert run(k) == reference[k]


def test_steps_change_the_model(reference):
    """The digests are of trained models: fewer steps give another one."""
    assert run("mlp", stop=STEPS - 1) != reference["mlp"]


@pytest.mark.ddl_world(1, timeout=120)
def test_world_1(reference, rank, world_size):
    ddl.set_num_threads(1)  # the thread count is part of the conditions (docs/determinism.md)
    for k in KINDS:
        assert run(k, world_size, rank) == reference[k], k


@pytest.mark.ddl_world(2, timeout=180)
def test_world_2(reference, rank, world_size):
    ddl.set_num_threads(1)
    for k in KINDS:
        assert run(k, world_size, rank) == reference[k], k


@pytest.mark.ddl_world(4, timeout=240)
def test_world_4(reference, rank, world_size):
    ddl.set_num_threads(1)
    for k in KINDS:
        assert run(k, world_size, rank) == reference[k], k


@pytest.fixture(scope="module")
def compact_reference():
    ddl.set_num_threads(1)
    return {k: run(k, compact=True) for k in ("mlp", "cnn")}


@pytest.mark.ddl_world(4, timeout=240)
def test_compact_wire_world_4_and_2(compact_reference, reference, rank, world_size):
    """compact=True (two 32-bit lanes per int64 word): also the same bits at 4 and 2 ranks as
    in one process (a coarser quantum, so not the bits of the full-precision mode)."""
    ddl.set_num_threads(1)
    pair = dist.new_group([0, 1])
    for k in ("mlp", "cnn"):
        assert run(k, world_size, rank, compact=True) == compact_reference[k], k
        if rank < 2:
            assert run(k, 2, rank, group=pair, compact=True) == compact_reference[k], k
        dist.barrier()
    assert compact_reference["mlp"] != reference["mlp"]


@pytest.mark.ddl_world(4, timeout=240)
def test_elastic_resume_2_to_4_and_to_1(reference, rank, world_size, tmp_path):
    """Save at step 20 on 2 ranks (ranks 0-1 of a subgroup), resume on all 4 and, separately,
    on 1 process: both end at step 50 where the uninterrupted 1-process run ends."""
    ddl.set_num_threads(1)
    ckpt = str(tmp_path / "cnn-step20.ddl")
    pair = dist.new_group([0, 1])
    if rank < 2:
        run("cnn", 2, rank, group=pair, stop=20, save=ckpt if rank == 0 else None)
    dist.barrier()
    assert run("cnn", 4, rank, resume=ckpt) == reference["cnn"]
    if rank == 3:  # the same checkpoint continued by one process alone
        assert run("cnn", 1, 0, resume=ckpt) == reference["cnn"]
    dist.barrier()


def _default_ddp_digest(kind, buffers=True):
    model, opt = build(kind)
    net = DistributedDataParallel(model)
    data = dataset(kind)
    sampler = ddl.data.DistributedSampler(data, shuffle=True, seed=3)
    loader = ddl.data.DataLoader(data, batch_size=8, sampler=sampler)
    model.train()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    return parameter_digest(model, buffers), parameter_digest(model, buffers=False)


@pytest.mark.ddl_world(2, timeout=180)
def test_default_mode_run_to_run_at_2_ranks(rank):
    """The default mode (bucketed overlapped all-reduce) is bitwise repeatable at a fixed world
    size: two runs, identical digests (buffers included); both ranks agree on the parameters
    (not on batch-norm running statistics, which the default mode keeps per rank)."""
    ddl.set_num_threads(1)
    for k in ("mlp", "cnn"):
        first, second = _default_ddp_digest(k), _default_ddp_digest(k)
        assert first == second, k
        both = np.frombuffer(bytes.fromhex(first[1]), dtype=np.uint8).astype(np.int64)
        everyone = np.zeros((2, both.size), dtype=np.int64)
        dist.all_gather_into_tensor(everyone, both)
        assert (everyone[0] == everyone[1]).all(), k


def _trainer_digest(world, rank, tmp):
    model, opt = build("cnn")
    data = dataset("cnn")
    trainer = ddl.Trainer(model, opt, ddl.nn.CrossEntropyLoss(), data, data, batch_size=16,
                          epochs=2, deterministic=True, micro_batch_size=4, progress=False,
                          checkpoint_dir=str(tmp), num_workers=0)
    history = trainer.fit()
    return parameter_digest(model), history


@pytest.fixture(scope="module")
def trainer_reference(tmp_path_factory):
    ddl.set_num_threads(1)
    return _trainer_digest(1, 0, tmp_path_factory.mktemp("trainer1"))


@pytest.mark.ddl_world(2, timeout=180)
def test_trainer_deterministic_option_at_2_ranks(trainer_reference, rank, tmp_path):
    """Trainer(deterministic=True): 2 ranks end with the 1-process run's bits, and the same
    (exactly reduced) training loss."""
    ddl.set_num_threads(1)
    digest, history = _trainer_digest(2, rank, tmp_path / "ranks")
    ref_digest, ref_history = trainer_reference
    assert digest == ref_digest
    assert [h["train_loss"] for h in history] == pytest.approx(
        [h["train_loss"] for h in ref_history], rel=1e-6)
    assert history[-1]["eval_accuracy"] == ref_history[-1]["eval_accuracy"]


@pytest.mark.timeout(240)
def test_the_same_hashes_over_gloo(tmp_path):
    """On one host the tests above run on the shared-memory transport (auto's choice); this
    runs them again forced onto Gloo, whose reduction order differs: every hash must still
    equal the one-process run's."""
    import subprocess
    import sys

    env = {**os.environ, "DDL_COMM_TRANSPORT": "gloo"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-k", "not over_gloo", __file__], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=220, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-1000:]
