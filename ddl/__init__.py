"""ddl: distributed deep learning on CPUs.

A C core (tensors and their ops, autograd, layers and losses, optimizers, data loading, and
collectives over Gloo) under a thin CPython extension, with PyTorch's names:

    import ddl
    x = ddl.randn(64, 784)
    w = ddl.randn(784, 10).requires_grad_()
    loss = (x @ w).relu().sum()
    loss.backward()                     # w.grad

ddl.nn (modules, functional), ddl.optim, ddl.data and ddl.distributed (process groups,
collectives, DistributedDataParallel in ddl.nn.parallel) follow torch's layout.
"""


def _preload_openblas():
    # ddl._C links libscipy_openblas.so from the scipy-openblas32 wheel, found through its
    # RUNPATH (next to an installed ddl, or where the build found it). Where that fails, load
    # the library by full path first, wherever pip put the wheel. find_spec locates the wheel
    # without running its __init__ (importlib.metadata: ~20 ms of `import ddl`).
    import ctypes
    import importlib.util
    import os

    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        return
    path = os.path.join(spec.submodule_search_locations[0], "lib", "libscipy_openblas.so")
    if os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def _load_c():
    # OpenBLAS starts its thread pool when it loads, one thread per core, unless
    # OPENBLAS_NUM_THREADS says otherwise; ddl runs one BLAS thread by default (see
    # _initial_threads), so it loads OpenBLAS with one and ddl.set_num_threads(n) starts more
    # when asked. The variable is set only while _C loads: child processes and libraries
    # loaded later see the environment as it was.
    import os

    unset = "OPENBLAS_NUM_THREADS" not in os.environ
    if unset:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        try:
            from . import _C
        except ImportError as e:
            if "libscipy_openblas" not in str(e):
                raise
            _preload_openblas()
            from . import _C
    finally:
        if unset:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
    return _C


_C = _load_c()
# The subpackages (nn, optim, data, datasets, ...) load on first use (module __getattr__
# below): a plain tensor program never pays for them. `import ddl.nn` and `from ddl import nn`
# work as before.
from ._device import device
from ._dtype import bfloat16, dtype, float16, float32, float64, int8, int16, int32, int64, uint8
from ._dtype import bool_ as bool  # torch.bool
from ._functions import *  # the torch-style functions (their __all__)
from ._functions import __all__ as _fn_all
from ._random import Generator, default_generator
from ._tensor import Tensor
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled


def save(obj, f, *args, **kwargs):
    """ddl.save(obj, path_or_fileobj): ddl.serialization.save, loaded on first use."""
    from .serialization import save as _save

    return _save(obj, f, *args, **kwargs)


def load(f, map_location=None, weights_only=True, **kwargs):
    """ddl.load(path_or_fileobj, map_location=None, weights_only=True): ddl.serialization.load,
    loaded on first use."""
    from .serialization import load as _load

    return _load(f, map_location=map_location, weights_only=weights_only, **kwargs)


_LAZY_SUBPACKAGES = ("nn", "optim", "data", "datasets", "serialization", "amp", "distributed",
                     "ml", "features", "sparse", "utils", "vision", "multiprocessing",
                     "accelerator", "backends", "cuda")

half = float16  # PyTorch's aliases (ddl/_dtype.py)
short = int16


def __getattr__(name):
    if name == "__version__":
        globals()["__version__"] = v = _version()
        return v
    # the Trainer pulls in ddl.distributed: load it on first use
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    if name == "autocast":  # ddl.amp
        from . import amp

        return getattr(amp, name)
    if name in _LAZY_SUBPACKAGES:
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'ddl' has no attribute {name!r}")

def _version():
    """The installed distribution's version (pyproject.toml's, through the package metadata);
    computed on first use of ddl.__version__, since importlib.metadata costs ~10 ms of import."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ddl")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


float = float32  # torch.float
double = float64
long = int64  # torch.long

set_num_threads = _C.set_num_threads
get_num_threads = _C.get_num_threads


def _initial_threads():
    # One BLAS thread unless the environment asks for more: OpenBLAS's worker threads spin
    # while they wait, and with more runnable threads than cores (several ranks, or anything
    # else running) every matrix product then waits for a descheduled spinner -- measured 50x
    # slower on a loaded 2-core machine. Data-parallel ranks are the parallelism here;
    # ddl.set_num_threads(n) (or DDL_NUM_THREADS / OMP_NUM_THREADS) opts in to more.
    import os

    for var in ("DDL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return 1


_C.set_num_threads(_initial_threads())

__all__ = ["Tensor", "dtype", "float32", "float64", "int64", "bool", "float", "double", "long",
           "set_num_threads", "get_num_threads", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "blas_info", "gloo_version", "save",
           "load", "device", "Generator", "default_generator", "cuda", "accelerator",
           "backends", "int32", "int16", "int8", "uint8", "float16", "bfloat16", "half",
           "short"] + list(_fn_all)


def blas_info():
    """{'corename': the OpenBLAS kernel running here, 'config': its build configuration}."""
    return _C.blas_info()


def gloo_version():
    """The Gloo version ddl was built against."""
    return _C.gloo_version()


# torch.int is int32; bound last: the code above uses the builtin int
globals()["int"] = int32
