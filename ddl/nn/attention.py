"""scaled_dot_product_attention and MultiheadAttention, with PyTorch's arguments and names.

The attention itself is one fused C kernel (csrc/kernels/nn_attention.c: blocked online
softmax over BLAS tiles, float32 and float64) that never holds the whole (L, S) score matrix.
Two cases take the explicit path (scores, softmax, matmul from the core ops): dropout on the
attention weights, and MultiheadAttention's need_weights=True, which returns those weights.
"""
import math

from .. import _C
from .. import _functions as T
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["MultiheadAttention", "scaled_dot_product_attention"]


def _as_additive(mask, dtype, name, true_means_keep):
    """A float mask in dtype: bool masks become 0 / -inf (true_means_keep: sdpa's convention,
    True takes part; else MultiheadAttention's, True is masked out)."""
    if mask is None:
        return None
    if mask.dtype.name == "bool":
        zero = _C.full((), 0.0, _C.FLOAT64 if dtype.name == "float64" else _C.FLOAT32)
        if true_means_keep:
            return T.where(mask, zero, float("-inf"))
        return T.where(mask, float("-inf"), zero)
    if not mask.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a bool or float mask, got {mask.dtype.name}")
    if mask.dtype is not dtype:
        raise TypeError(f"{name}: the mask is {mask.dtype.name} but the query is {dtype.name}")
    return mask


def _explicit_attention(q, k, v, mask, causal, scale, dropout_p):
    """softmax(q k^T scale + mask) (dropout) v from the core ops: (out, weights)."""
    s = (q @ k.transpose(-2, -1)) * scale
    L, S = q.shape[-2], k.shape[-2]
    if causal:
        import numpy as np

        tri = np.where(np.tril(np.ones((L, S), dtype=bool)), 0.0, -np.inf)
        s = s + T.tensor(tri.astype(q.dtype.numpy))
    if mask is not None:
        s = s + mask
    w = F.softmax(s, -1)
    if dropout_p > 0:
        w = F.dropout(w, dropout_p, True)
    return w @ v, w


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """softmax(query key^T * scale + mask) value over (..., L, D) / (..., S, D) / (..., S, E)
    inputs (3-d or 4-d). attn_mask: bool (True takes part) or additive float, broadcasting to
    (..., L, S); is_causal: hide key j from query i > j... as PyTorch (top-left aligned);
    scale defaults to 1 / sqrt(D). dropout_p > 0 drops attention weights (explicit path)."""
    if enable_gqa:
        raise ValueError("scaled_dot_product_attention: enable_gqa is not supported")
    if attn_mask is not None and is_causal:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal, "
                         "not both")
    if query.ndim not in (3, 4) or key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(f"scaled_dot_product_attention: expected 3-d or 4-d query, key and "
                         f"value of one rank, got shapes {tuple(query.shape)}, "
                         f"{tuple(key.shape)}, {tuple(value.shape)}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    mask = _as_additive(attn_mask, query.dtype, "scaled_dot_product_attention", True)
    if dropout_p > 0:
        return _explicit_attention(query, key, value, mask, is_causal, scale, dropout_p)[0]
    three = query.ndim == 3
    if three:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if mask is not None and mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = _C.sdpa(query, key, value, mask, scale, bool(is_causal), False)
    return out.squeeze(1) if three else out


def _sdpa_naive(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """The materializing float32 twin of the fused kernel (tests and benchmarks)."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    mask = _as_additive(attn_mask, query.dtype, "sdpa", True)
    return _C.sdpa(query, key, value, mask, scale, bool(is_causal), True)


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention: parameters in_proj_weight (3E, E) and in_proj_bias (3E,)
    (or q_proj_weight / k_proj_weight / v_proj_weight when kdim or vdim differ from
    embed_dim), out_proj.weight / out_proj.bias: a PyTorch state_dict loads one to one.
    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights or None)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, dtype=None):
        super().__init__()
        if add_bias_kv or add_zero_attn:
            raise ValueError("MultiheadAttention: add_bias_kv and add_zero_attn are not "
                             "supported")
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.batch_first, self.head_dim = batch_first, embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(T.empty(3 * embed_dim, embed_dim, dtype=dtype))
            self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        else:
            self.q_proj_weight = Parameter(T.empty(embed_dim, embed_dim, dtype=dtype))
            self.k_proj_weight = Parameter(T.empty(embed_dim, self.kdim, dtype=dtype))
            self.v_proj_weight = Parameter(T.empty(embed_dim, self.vdim, dtype=dtype))
            self.in_proj_weight = None
        self.in_proj_bias = Parameter(T.zeros(3 * embed_dim, dtype=dtype)) if bias else None
        from .layers import Linear

        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _projections(self, query, key, value):
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:E], w[E:2 * E], w[2 * E:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        if self._qkv_same_embed_dim and query is key and key is value:
            qkv = F.linear(query, w, b)  # self-attention: one matmul for q, k and v
            return qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        unbatched = query.ndim == 2
        if query.ndim not in (2, 3):
            raise ValueError(f"MultiheadAttention: expected a 2-d or 3-d query, got shape "
                             f"{tuple(query.shape)}")
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (query.transpose(0, 1), key.transpose(0, 1),
                                 value.transpose(0, 1))
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention(embed_dim={self.embed_dim}): query of "
                             f"{query.shape[-1]} features")
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal is a hint that attn_mask is the "
                             "causal mask; pass attn_mask too")
        N, L, S, H, hd = query.shape[0], query.shape[1], key.shape[1], self.num_heads, \
            self.head_dim
        q, k, v = self._projections(query, key, value)
        q = q.reshape(N, L, H, hd).transpose(1, 2)
        k = k.reshape(N, S, H, hd).transpose(1, 2)
        v = v.reshape(N, S, H, hd).transpose(1, 2)
        mask = self._merged_mask(attn_mask, key_padding_mask, q.dtype, N, L, S)
        p = self.dropout if self.training else 0.0
        if need_weights or p > 0:
            out, w = _explicit_attention(q, k, v, mask, False, 1.0 / math.sqrt(hd), p)
        else:
            out, w = _C.sdpa(q, k, v, mask, 1.0 / math.sqrt(hd), False, False), None
        out = out.transpose(1, 2).reshape(N, L, self.embed_dim)
        out = self.out_proj(out)
        if not unbatched and not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0)
        if not need_weights:
            return out, None
        if average_attn_weights:
            w = w.mean(1)
        return out, (w.squeeze(0) if unbatched else w)

    def _merged_mask(self, attn_mask, key_padding_mask, dtype, N, L, S):
        """attn_mask ((L, S) or (N * H, L, S)) and key_padding_mask ((N, S)), True = masked
        out, as one additive mask broadcasting to (N, H, L, S)."""
        mask = _as_additive(attn_mask, dtype, "MultiheadAttention attn_mask", False)
        if mask is not None:
            if mask.ndim == 3:
                if tuple(mask.shape) != (N * self.num_heads, L, S):
                    raise ValueError(f"MultiheadAttention: 3-d attn_mask must be "
                                     f"{(N * self.num_heads, L, S)}, got {tuple(mask.shape)}")
                mask = mask.reshape(N, self.num_heads, L, S)
            elif tuple(mask.shape) != (L, S):
                raise ValueError(f"MultiheadAttention: 2-d attn_mask must be {(L, S)}, got "
                                 f"{tuple(mask.shape)}")
        kpm = _as_additive(key_padding_mask, dtype, "MultiheadAttention key_padding_mask", False)
        if kpm is not None:
            if tuple(kpm.shape) != (N, S):
                raise ValueError(f"MultiheadAttention: key_padding_mask must be {(N, S)}, got "
                                 f"{tuple(kpm.shape)}")
            kpm = kpm.reshape(N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        return mask

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
