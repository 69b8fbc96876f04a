"""The compatibility suite: scripts written for PyTorch (tests/compat/), run unmodified with
`torch` -> ddl and `torchvision` -> ddl.vision (tests/compat/shim on PYTHONPATH). Each must
train (its loss falls) and, where PyTorch is installed, match PyTorch's losses step by step
from the same initial weights to 1e-5 relative."""
import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ddl.vision import datasets

HERE = os.path.dirname(os.path.abspath(__file__))
COMPAT = os.path.join(HERE, "compat")
ROOT = os.path.dirname(HERE)


def _have_fashion_mnist():
    try:
        datasets.FashionMNIST(os.path.join(ROOT, "data"), train=False)
    except RuntimeError:
        return False
    return True


needs_data = pytest.mark.skipif(
    not _have_fashion_mnist(),
    reason="Fashion-MNIST is not installed (Debian: apt-get install dataset-fashion-mnist)")
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="PyTorch is not installed (CI installs torch==2.13.0)")


def run(script, framework, tmp_path, **env):
    """Run tests/compat/<script> with ddl (the shim) or PyTorch; returns its report."""
    shim = os.path.join(COMPAT, "shim")
    if framework == "torch":
        have_tv = importlib.util.find_spec("torchvision") is not None
        shim = "" if have_tv else os.path.join(COMPAT, "ref_shim")
    work = tmp_path / framework
    work.mkdir(exist_ok=True)
    out = work / "report.json"
    path = os.pathsep.join(p for p in (shim, COMPAT, ROOT) if p)
    e = dict(os.environ, PYTHONPATH=path, COMPAT_OUT=str(out), OMP_NUM_THREADS="1",
             **{k: str(v) for k, v in env.items()})
    r = subprocess.run([sys.executable, os.path.join(COMPAT, script)], cwd=work, env=e,
                       capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, f"{script} under {framework} failed:\n{r.stdout}\n{r.stderr}"
    return out, r


def _report(out):
    with open(out) as f:
        return json.load(f)


def _falls(losses):
    k = max(1, len(losses) // 4)
    return np.mean(losses[-k:]) < np.mean(losses[:k])


@needs_data
def test_quickstart_trains(tmp_path):
    out, r = run("quickstart.py", "ddl", tmp_path, COMPAT_STEPS=20)
    rep = _report(out)
    assert _falls(rep["losses"]) and rep["accuracy"] > 0.3
    assert "Using cpu device" in r.stdout and "Predicted:" in r.stdout


@needs_data
@needs_torch
def test_quickstart_matches_pytorch(tmp_path):
    a = _report(run("quickstart.py", "ddl", tmp_path, COMPAT_STEPS=20)[0])
    b = _report(run("quickstart.py", "torch", tmp_path, COMPAT_STEPS=20)[0])
    assert np.allclose(a["losses"], b["losses"], rtol=1e-5, atol=0)
    assert np.isclose(a["test_loss"], b["test_loss"], rtol=1e-5)


@needs_data
def test_mnist_cnn_trains_with_dropout_and_workers(tmp_path):
    out, _ = run("mnist_cnn.py", "ddl", tmp_path, COMPAT_STEPS=12, COMPAT_WORKERS=2)
    assert _falls(_report(out)["losses"])
    assert (tmp_path / "ddl" / "mnist_cnn.pt").exists()


@needs_data
@needs_torch
def test_mnist_cnn_matches_pytorch(tmp_path):
    a = _report(run("mnist_cnn.py", "ddl", tmp_path, COMPAT_STEPS=8, COMPAT_DROPOUT=0)[0])
    b = _report(run("mnist_cnn.py", "torch", tmp_path, COMPAT_STEPS=8, COMPAT_DROPOUT=0)[0])
    assert _falls(a["losses"])
    assert np.allclose(a["losses"], b["losses"], rtol=1e-5, atol=0)
    assert np.isclose(a["test_loss"], b["test_loss"], rtol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_tutorial_gpu_script_under_cuda_as_cpu(tmp_path):
    out, r = run("ddp_tutorial.py", "ddl", tmp_path, DDL_CUDA_AS_CPU=2,
                 COMPAT_PORT=_free_port(), COMPAT_STEPS=20)
    r0, r1 = _report(f"{out}.0"), _report(f"{out}.1")
    assert _falls(r0["losses"]) and _falls(r1["losses"])
    assert np.allclose(r0["weights"], r1["weights"], rtol=1e-6)  # replicas stayed in sync
    assert "Finished running basic DDP example on rank 1." in r.stdout
    assert r.stderr.count("DDL_CUDA_AS_CPU is set") == 2  # once per process


def test_ddp_tutorial_without_the_mode_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv("DDL_CUDA_AS_CPU", raising=False)
    shim = os.path.join(COMPAT, "shim")
    code = ("import torch, torch.distributed as dist\n"
            "dist.init_process_group('nccl', init_method='tcp://127.0.0.1:1', rank=0, "
            "world_size=1)\n")
    e = dict(os.environ, PYTHONPATH=os.pathsep.join((shim, ROOT)))
    r = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode != 0 and "DDL_CUDA_AS_CPU" in r.stderr


def _compat_common():
    spec = importlib.util.spec_from_file_location("compat_common", os.path.join(COMPAT, "common.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def corpus(tmp_path):
    """A small Markov-chain text (each word has three possible successors): learnable."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    _compat_common().write_markov_corpus(folder)
    return folder


def test_word_language_model_lstm_trains(tmp_path, corpus):
    out, _ = run("word_language_model.py", "ddl", tmp_path, COMPAT_CORPUS=corpus,
                 COMPAT_STEPS=40)
    rep = _report(out)
    assert _falls(rep["losses"]) and rep["val_loss"] < rep["losses"][0]


@needs_torch
def test_word_language_model_lstm_matches_pytorch(tmp_path, corpus):
    env = {"COMPAT_CORPUS": corpus, "COMPAT_STEPS": 20, "COMPAT_DROPOUT": 0}
    a = _report(run("word_language_model.py", "ddl", tmp_path, **env)[0])
    b = _report(run("word_language_model.py", "torch", tmp_path, **env)[0])
    assert np.allclose(a["losses"], b["losses"], rtol=1e-5, atol=0)
    assert np.isclose(a["val_loss"], b["val_loss"], rtol=1e-5)


def test_word_language_model_transformer_trains(tmp_path, corpus):
    # The example's dropout (0.2 in PositionalEncoding, nn.Transformer's 0.1 in the layers) on.
    out, _ = run("word_language_model.py", "ddl", tmp_path, COMPAT_MODEL="Transformer",
                 COMPAT_CORPUS=corpus, COMPAT_STEPS=40, COMPAT_LR=0.005)
    rep = _report(out)
    assert _falls(rep["losses"]) and rep["val_loss"] < rep["losses"][0]


@needs_torch
def test_word_language_model_transformer_matches_pytorch(tmp_path, corpus):
    env = {"COMPAT_MODEL": "Transformer", "COMPAT_CORPUS": corpus, "COMPAT_STEPS": 20,
           "COMPAT_DROPOUT": 0}
    a = _report(run("word_language_model.py", "ddl", tmp_path, **env)[0])
    b = _report(run("word_language_model.py", "torch", tmp_path, **env)[0])
    assert len(a["losses"]) == 20 and a["losses"][-1] < a["losses"][0]
    assert np.allclose(a["losses"], b["losses"], rtol=1e-5, atol=0)
    assert np.isclose(a["val_loss"], b["val_loss"], rtol=1e-5)


def test_ddp_tutorial_series_multigpu_under_cuda_as_cpu(tmp_path):
    e = {"DDL_CUDA_AS_CPU": 2, "COMPAT_PORT": _free_port()}
    shim = os.path.join(COMPAT, "shim")
    work = tmp_path / "series"
    work.mkdir()
    out = work / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((shim, COMPAT, ROOT)),
               COMPAT_OUT=str(out), **{k: str(v) for k, v in e.items()})
    r = subprocess.run([sys.executable, os.path.join(COMPAT, "ddp_series_multigpu.py"), "2",
                        "1", "--batch_size", "64"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[GPU1] Epoch 1 | Batchsize: 64 | Steps: 16" in r.stdout
    assert (work / "checkpoint.pt").exists() and len(_report(out)["losses"]) == 2
