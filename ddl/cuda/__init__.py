"""ddl.cuda: the answers a GPU-aware script asks for, on a CPU-only library.

is_available() is False and device_count() 0, so `"cuda" if ddl.cuda.is_available() else
"cpu"` picks the CPU. Under DDL_CUDA_AS_CPU=N (see ddl/_device.py) device_count() is N and
set_device / current_device / synchronize work on the simulated devices (which are the CPU),
so GPU-written scripts run unchanged; is_available() is then True.
"""
from .._device import check, cuda_as_cpu, device, no_gpu_error

_current = 0


def is_available():
    return cuda_as_cpu() > 0


def device_count():
    return cuda_as_cpu()


def is_initialized():
    return cuda_as_cpu() > 0


def init():
    if not cuda_as_cpu():
        raise no_gpu_error("ddl.cuda.init()")


def _need(what):
    if not cuda_as_cpu():
        raise no_gpu_error(what)


def set_device(dev):
    """A no-op on the simulated devices (DDL_CUDA_AS_CPU); an error otherwise."""
    global _current
    d = check(dev if not isinstance(dev, int) else device("cuda", dev), "ddl.cuda.set_device")
    if d.type == "cuda":
        _current = d.index or 0


def current_device():
    _need("ddl.cuda.current_device()")
    return _current


def get_device_name(dev=None):
    _need("ddl.cuda.get_device_name()")
    return "cpu (DDL_CUDA_AS_CPU)"


def synchronize(dev=None):
    """Nothing runs asynchronously in ddl: a no-op (an error only when naming a real GPU)."""
    if dev is not None:
        check(dev if not isinstance(dev, int) else device("cuda", dev), "ddl.cuda.synchronize")


def empty_cache():
    """No device memory to free: a no-op."""


def manual_seed(seed):
    """Seeds nothing (no GPU generator); accepted as PyTorch accepts it without a GPU."""


manual_seed_all = manual_seed


def is_bf16_supported(including_emulation=True):
    return False


def memory_allocated(dev=None):
    _need("ddl.cuda.memory_allocated()")
    return 0


max_memory_allocated = memory_allocated


__all__ = ["current_device", "device_count", "empty_cache", "get_device_name", "init",
           "is_available", "is_bf16_supported", "is_initialized", "manual_seed",
           "manual_seed_all", "max_memory_allocated", "memory_allocated", "set_device",
           "synchronize"]
