"""ddl.device and the CPU-as-CUDA opt-in mode (DDL_CUDA_AS_CPU): ddl runs on CPUs only.

A `ddl.device("cpu")` is what every tensor lives on. A GPU device ("cuda", "cuda:1", an int
index) can be named, as PyTorch allows, but using it (a factory's `device=`, `Tensor.to`,
`Module.to`) raises a RuntimeError naming the way out -- unless DDL_CUDA_AS_CPU=N is set: then
cuda devices are aliases of the CPU, `ddl.cuda.device_count()` is N, and GPU-written scripts
(PyTorch's DDP tutorials) run unchanged on CPU clusters. The mode warns once when first used.
"""
import os
import warnings

_GPU_TYPES = ("cuda", "mps", "xpu", "hip", "xla", "meta", "mtia", "hpu", "npu", "privateuseone")
_ENV = "DDL_CUDA_AS_CPU"
_warned = False


def cuda_as_cpu():
    """N > 0 when DDL_CUDA_AS_CPU=N is set (cuda devices alias the CPU), else 0."""
    v = os.environ.get(_ENV, "").strip()
    if not v or v == "0":
        return 0
    if not v.isdigit():
        raise ValueError(f"{_ENV}={v!r}: expected a number of simulated GPUs (e.g. 1 or 4)")
    return int(v)


def _warn_once():
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"{_ENV} is set: cuda devices are aliases of the CPU (ddl has no GPU "
                      "support); tensors stay on the CPU", UserWarning, stacklevel=4)


class NoGPUError(RuntimeError, ValueError):
    """A GPU was asked for (a RuntimeError, as PyTorch's; also a ValueError, since an argument
    names a device that is not there)."""


def no_gpu_error(what):
    return NoGPUError(
        f"{what}: ddl runs on CPUs only and has no GPU support. Use device='cpu' (or "
        "ddl.device('cpu')), or set DDL_CUDA_AS_CPU=N to run a GPU-written script unchanged "
        "with cuda devices as aliases of the CPU")


class device:
    """A device: ddl.device("cpu"), ddl.device("cpu:0"), ddl.device("cuda", 1), ddl.device(0).

    `type` is "cpu" or a GPU type, `index` an int or None. Naming a GPU is allowed (scripts
    build `ddl.device("cuda" if ddl.cuda.is_available() else "cpu")`); using one is an error
    outside the DDL_CUDA_AS_CPU mode.
    """

    __slots__ = ("index", "type")

    def __init__(self, type, index=None):
        if isinstance(type, device):
            if index is not None:
                raise ValueError("device(device, index): the index comes from the device")
            self.type, self.index = type.type, type.index
            return
        if isinstance(type, int) and not isinstance(type, bool):
            if type < 0:
                raise ValueError(f"device index must be >= 0, got {type}")
            self.type, self.index = "cuda", type
            return
        if not isinstance(type, str):
            raise TypeError(f"device(): expected a string or an int, got {type.__class__.__name__}")
        name, _, idx = type.partition(":")
        if idx:
            if index is not None:
                raise ValueError(f"device({type!r}, {index}): the index is given twice")
            if not idx.isdigit():
                raise ValueError(f"invalid device string {type!r}")
            index = int(idx)
        if name != "cpu" and name not in _GPU_TYPES:
            raise ValueError(f"invalid device type {name!r}: expected 'cpu' (or 'cuda')")
        if index is not None and (not isinstance(index, int) or index < 0):
            raise ValueError(f"device index must be an int >= 0, got {index!r}")
        self.type, self.index = name, index

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except (TypeError, ValueError):
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self):
        return hash((self.type, self.index))

    def __reduce__(self):
        return (device, (self.type, self.index))

    def __enter__(self):  # `with ddl.device("cpu"):` is accepted (everything is on the CPU)
        check(self, "with device")
        return self

    def __exit__(self, *exc):
        return False


CPU = device("cpu")


def is_device_like(x):
    return isinstance(x, device) or (isinstance(x, int) and not isinstance(x, bool)) or (
        isinstance(x, str) and x.partition(":")[0] in ("cpu", *_GPU_TYPES))


def check(d, what="device"):
    """Validate that `d` (a device, string, int or None) can be used here; returns the device.

    CPU devices pass; a cuda device passes only in the DDL_CUDA_AS_CPU mode (warning once) and
    with an index below N; anything else raises a RuntimeError naming the way out.
    """
    if d is None:
        return CPU
    dv = d if isinstance(d, device) else device(d)
    if dv.type == "cpu":
        if dv.index not in (None, 0):
            raise RuntimeError(f"{what}: there is one CPU device (cpu or cpu:0), got {dv}")
        return dv
    n = cuda_as_cpu()
    if dv.type == "cuda" and n:
        if dv.index is not None and dv.index >= n:
            raise RuntimeError(f"{what}: {dv} does not exist: {_ENV}={n} simulates devices "
                               f"0..{n - 1}")
        _warn_once()
        return dv
    raise no_gpu_error(f"{what} {str(dv)!r}")
