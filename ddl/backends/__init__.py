"""ddl.backends: the backend flags scripts commonly read or set (cudnn, mps, cuda.matmul, ...).

ddl has none of these backends: is_available() answers False, and the flags are plain
attributes a script may set (`ddl.backends.cudnn.benchmark = True`) with no effect.
"""
import types


def _false(*_args, **_kwargs):
    return False


cudnn = types.SimpleNamespace(enabled=False, benchmark=False, deterministic=False,
                              allow_tf32=False, is_available=_false, version=lambda: None)
mps = types.SimpleNamespace(is_available=_false, is_built=_false)
_matmul = types.SimpleNamespace(allow_tf32=False, allow_fp16_reduced_precision_reduction=False)
cuda = types.SimpleNamespace(is_built=_false, matmul=_matmul)
mkldnn = types.SimpleNamespace(enabled=False, is_available=_false)
mkl = types.SimpleNamespace(is_available=_false)
openmp = types.SimpleNamespace(is_available=_false)

__all__ = ["cuda", "cudnn", "mkl", "mkldnn", "mps", "openmp"]
