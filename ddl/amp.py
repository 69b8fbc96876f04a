"""bf16 autocast, after torch.autocast("cpu", dtype=torch.bfloat16).

    with ddl.autocast("cpu", dtype=ddl.bfloat16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()          # each layer's backward runs in the mode its forward ran in

Inside the block the matrix products of Linear, conv2d and the recurrent layers (cells and
fused sequences) round both operands to bf16 and accumulate in float32 on the CPU's AMX tiles,
or with AVX512-BF16 (VDPBF16PS) where there is no AMX (ddl's own kernels,
csrc/core/gemm_bf16*.c: the linked OpenBLAS has no sbgemm). Unlike PyTorch, every tensor
stays float32 -- outputs, activations, gradients, parameters and optimizer state -- so only the products lose precision (to bf16's 8-bit mantissa), nothing is cast back and
forth, and no op list decides what runs in which dtype. The setting is process-wide, where
PyTorch's is per thread. Without either (the CPU or the kernel lacks them) the block computes
in float32 and says so once with a warning. Products too small to gain (docs/nn.md has the
rule for each path) stay in float32 sgemm.
"""
import functools
import warnings

from . import _C, _dtype


class _Bfloat16:
    """ddl.bfloat16: a dtype name for autocast (ddl has no bf16 tensors)."""

    name = "bfloat16"

    def __repr__(self):
        return "ddl.bfloat16"


bfloat16 = getattr(_dtype, "bfloat16", None) or _Bfloat16()
_warned = False


def _is_bf16(dtype):
    return dtype is None or getattr(dtype, "name", None) == "bfloat16" or \
        str(dtype).split(".")[-1] == "bfloat16"


def is_autocast_available():
    """Whether bf16 products run here (AMX-BF16 or AVX512-BF16 on this CPU and kernel)."""
    return _C.autocast_bf16_supported()


def is_autocast_enabled():
    return _C.get_autocast_bf16()


class autocast:
    """Context manager (and decorator) turning bf16 autocast on for its block; nests, and
    restores the previous setting on exit. device_type must be "cpu", dtype bfloat16."""

    def __init__(self, device_type="cpu", dtype=None, enabled=True, cache_enabled=None):
        if device_type != "cpu":
            raise ValueError(f"autocast: ddl runs on the CPU only, got device_type="
                             f"{device_type!r}")
        if not _is_bf16(dtype):
            raise ValueError(f"autocast: only bfloat16 is supported on the CPU, got {dtype!r}")
        self.device_type, self.fast_dtype, self.enabled = device_type, bfloat16, bool(enabled)
        self._prev = []

    def __enter__(self):
        global _warned
        if self.enabled and not _warned and not _C.autocast_bf16_supported():
            _warned = True
            warnings.warn("ddl.autocast: this CPU (or kernel) has neither AMX-BF16 nor "
                          "AVX512-BF16; the products run in float32", UserWarning, stacklevel=2)
        self._prev.append(_C.get_autocast_bf16())
        _C.set_autocast_bf16(self.enabled)
        return self

    def __exit__(self, *exc):
        _C.set_autocast_bf16(self._prev.pop())
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self.enabled):
                return fn(*args, **kwargs)

        return wrapped
