"""ddl.accelerator: PyTorch's device-generic questions, answered for a CPU-only library.

is_available() is False and current_accelerator() answers the CPU device, so
`torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"`
(the quickstart's line) picks the CPU either way. Under DDL_CUDA_AS_CPU=N the simulated cuda
devices are the accelerator.
"""
from .._device import CPU, cuda_as_cpu, device


def is_available():
    return cuda_as_cpu() > 0


def current_accelerator(check_available=False):
    return device("cuda") if cuda_as_cpu() else CPU


def device_count():
    return cuda_as_cpu()


def current_device_index():
    return 0


def set_device_index(index):
    from .. import cuda

    if cuda_as_cpu():
        cuda.set_device(index)


def synchronize(dev=None):
    """Nothing runs asynchronously: a no-op."""


__all__ = ["current_accelerator", "current_device_index", "device_count", "is_available",
           "set_device_index", "synchronize"]
