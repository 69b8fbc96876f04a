"""Devices on a CPU-only library: ddl.device, Tensor.to / Module.to, device= on factories,
ddl.cuda / ddl.accelerator / ddl.backends, and the DDL_CUDA_AS_CPU opt-in mode."""
import os
import subprocess
import sys

import pytest

import ddl
from ddl import _device


@pytest.fixture
def no_cuda_mode(monkeypatch):
    monkeypatch.delenv("DDL_CUDA_AS_CPU", raising=False)


@pytest.fixture
def cuda_mode(monkeypatch):
    monkeypatch.setenv("DDL_CUDA_AS_CPU", "2")
    monkeypatch.setattr(_device, "_warned", True)  # the warning itself is tested in a subprocess


def test_device_parsing():
    assert str(ddl.device("cpu")) == "cpu"
    assert ddl.device("cpu:0").index == 0
    d = ddl.device("cuda", 1)
    assert (d.type, d.index) == ("cuda", 1) and str(d) == "cuda:1"
    assert ddl.device(3) == ddl.device("cuda:3")
    assert ddl.device("cpu") == "cpu" and ddl.device(ddl.device("cpu")) == ddl.device("cpu")
    assert repr(ddl.device("cpu")) == "device(type='cpu')"
    with pytest.raises(ValueError, match="invalid device type"):
        ddl.device("tpu")
    with pytest.raises(ValueError, match="invalid device string"):
        ddl.device("cpu:x")


def test_tensor_to_forms(no_cuda_mode):
    x = ddl.randn(2, 3, requires_grad=True, device="cpu")
    assert x.requires_grad and x.device == ddl.device("cpu") and not x.is_cuda
    assert x.to("cpu") is x and x.cpu() is x and x.to(ddl.device("cpu:0")) is x
    assert x.to("cpu", ddl.float64).dtype is ddl.float64
    assert x.to(ddl.float64, non_blocking=True).dtype is ddl.float64
    assert x.to(ddl.zeros(1, dtype=ddl.float64)).dtype is ddl.float64
    assert x.to(dtype=ddl.float64, device="cpu").dtype is ddl.float64
    c = x.detach().to("cpu", copy=True)
    c.zero_()
    assert x.abs().sum().item() > 0  # copy=True copied


@pytest.mark.parametrize("dev", ["cuda", "cuda:0", 0, "mps"])
def test_gpu_requests_name_the_way_out(no_cuda_mode, dev):
    x = ddl.zeros(2)
    with pytest.raises(RuntimeError, match="DDL_CUDA_AS_CPU"):
        x.to(dev)
    with pytest.raises(RuntimeError, match="device='cpu'"):
        ddl.zeros(2, device=dev)
    with pytest.raises(RuntimeError, match="no GPU support"):
        ddl.nn.Linear(2, 2).to(dev)
    with pytest.raises(RuntimeError, match="DDL_CUDA_AS_CPU"):
        x.cuda()


def test_factories_take_device_and_requires_grad(no_cuda_mode):
    for f in (lambda **k: ddl.zeros(2, 3, **k), lambda **k: ddl.ones((2,), **k),
              lambda **k: ddl.empty(2, **k), lambda **k: ddl.full((2,), 1.5, **k),
              lambda **k: ddl.rand(2, **k), lambda **k: ddl.randn(2, **k),
              lambda **k: ddl.arange(0.0, 3.0, **k), lambda **k: ddl.linspace(0, 1, 5, **k),
              lambda **k: ddl.eye(3, **k), lambda **k: ddl.zeros_like(ddl.zeros(2), **k),
              lambda **k: ddl.tensor([1.0, 2.0], **k)):
        t = f(device="cpu", requires_grad=True)
        assert t.requires_grad and t.device.type == "cpu"
    assert ddl.randint(0, 5, (3,), device=ddl.device("cpu")).dtype is ddl.int64
    assert ddl.zeros(2, pin_memory=False).shape == (2,)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ddl.zeros(2, bogus=1)


def test_cuda_accelerator_backends_answer_cpu(no_cuda_mode):
    assert ddl.cuda.is_available() is False and ddl.cuda.device_count() == 0
    assert ddl.accelerator.is_available() is False
    assert ddl.accelerator.current_accelerator().type == "cpu"
    assert ddl.backends.mps.is_available() is False and not ddl.backends.cudnn.is_available()
    ddl.backends.cudnn.benchmark = True  # scripts set these; accepted, no effect
    ddl.cuda.manual_seed_all(0)
    with pytest.raises(RuntimeError, match="DDL_CUDA_AS_CPU"):
        ddl.cuda.set_device(0)
    device = ddl.device("cuda" if ddl.cuda.is_available() else "cpu")
    assert ddl.ones(2).to(device).device.type == "cpu"


def test_module_to_and_cpu(no_cuda_mode):
    m = ddl.nn.Linear(3, 2)
    assert m.to(ddl.device("cpu")) is m and m.cpu() is m
    m.to("cpu", ddl.float64)
    assert m.weight.dtype is ddl.float64
    m.to(ddl.float32)
    assert m.weight.dtype is ddl.float32


def test_cuda_as_cpu_mode(cuda_mode):
    assert ddl.cuda.is_available() and ddl.cuda.device_count() == 2
    ddl.cuda.set_device(1)
    assert ddl.cuda.current_device() == 1
    x = ddl.zeros(2, device="cuda:1").to(0).cuda()
    assert x.device.type == "cpu"  # the alias: tensors stay on the CPU
    m = ddl.nn.Linear(2, 2).to(1).cuda()
    assert m(ddl.ones(1, 2, device="cuda")).shape == (1, 2)
    with pytest.raises(RuntimeError, match="does not exist"):
        ddl.zeros(1, device="cuda:2")
    assert ddl.accelerator.current_accelerator().type == "cuda"


def test_cuda_as_cpu_warns_once():
    code = ("import warnings, ddl\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    ddl.zeros(1, device='cuda'); ddl.ones(1).to(0); ddl.nn.Linear(1, 1).cuda()\n"
            "print(sum('DDL_CUDA_AS_CPU' in str(x.message) for x in w))\n")
    env = dict(os.environ, DDL_CUDA_AS_CPU="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_bad_mode_value(monkeypatch):
    monkeypatch.setenv("DDL_CUDA_AS_CPU", "yes")
    with pytest.raises(ValueError, match="number of simulated GPUs"):
        ddl.cuda.device_count()


def test_generator_reproducible():
    g = ddl.Generator().manual_seed(7)
    a = ddl.randn(5, generator=g)
    ddl.randn(3)  # the global stream does not disturb g
    b = ddl.randn(5, generator=g)
    g.manual_seed(7)
    assert ddl.randn(5, generator=g).tolist() == a.tolist()
    assert ddl.randn(5, generator=g).tolist() == b.tolist()
    assert g.initial_seed() == 7
