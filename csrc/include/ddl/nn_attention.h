/* nn_attention.h: scaled dot-product attention kernels on contiguous float32 / float64
 * buffers, forward and backward: a fused (flash-style) kernel that never holds more than one
 * block of scores, and a naive twin that materializes the whole (L, S) score matrix (tests and
 * benchmarks compare them).
 *
 * For each batch b and head h (row-major (B, H, ...) buffers):
 *     scores = scale * q k^T + mask + causal      (L, S)
 *     p      = softmax(scores) over S
 *     out    = p v                                (L, E)
 * `mask` is additive (float, the data dtype; -inf hides a key), read through element strides
 * mstride = (b, h, l, s) so a broadcast mask ((L, S), (B, 1, 1, S), ...) costs nothing; NULL
 * for none. causal hides key j from query i when j > i (PyTorch's is_causal, top-left
 * aligned). A query whose keys are all hidden gets out = 0 (PyTorch's math backend) and
 * lse = -inf. lse (B, H, L) = log sum exp(scores) per query, the cache the backward needs.
 *
 * Backward (from out, lse and dout; accumulates into dq, dk, dv, each NULL when not needed):
 *     dp = dout v^T;  ds = p * (dp - rowsum(dout * out));  dq += scale ds k;  dk += scale ds^T q;
 *     dv += p^T dout.
 * The mask gets no gradient. Conventions as nn_loss.h (outputs first, DDL_E_VALUE on bad
 * sizes, nothing written on error); scratch is allocated once per call (DDL_E_NOMEM).
 *
 * Layouts: each buffer's feature dim is unit-stride; its (batch, head, row) element strides
 * are given in dims (ddl_sdpa_strides, all zero = contiguous (B, H, rows, features)), so a
 * (B, L, H, D) buffer (a projection's output viewed per head, MultiheadAttention's case) is
 * read and written in place, with no head-split copy. The (b, h) pairs are split over ddl's
 * threads (ddl_parallel_run, single-threaded sgemm inside); each (b, h) is computed by one
 * thread in a fixed order, so results do not depend on the thread count.
 */
#ifndef DDL_NN_ATTENTION_H
#define DDL_NN_ATTENTION_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element strides of one buffer over (batch, head, row); all zero means contiguous. */
typedef struct {
    int64_t b, h, r;
} ddl_sdpa_strides;

/* The sizes of one attention call. */
typedef struct {
    int64_t B, H, L, S, D, E; /* batch, heads, queries, keys, q/k features, v features */
    double scale;             /* usually 1 / sqrt(D) */
    int causal;
    int64_t mstride[4]; /* mask element strides over (B, H, L, S); unused without a mask */
    /* layouts of q, k, v, out, dout and of the gradients dq, dk, dv (zero: contiguous) */
    ddl_sdpa_strides q, k, v, out, dout, dq, dk, dv;
} ddl_sdpa_dims;

ddl_status ddl_sdpa_forward_f32(float *out,        // (B, H, L, E)
                                float *lse,        // (B, H, L)
                                const float *q,    // (B, H, L, D)
                                const float *k,    // (B, H, S, D)
                                const float *v,    // (B, H, S, E)
                                const float *mask, // strided (B, H, L, S) or NULL
                                const ddl_sdpa_dims *dims);
ddl_status ddl_sdpa_backward_f32(float *dq,         // (B, H, L, D) or NULL
                                 float *dk,         // (B, H, S, D) or NULL
                                 float *dv,         // (B, H, S, E) or NULL
                                 const float *dout, // (B, H, L, E)
                                 const float *out,  // (B, H, L, E)
                                 const float *lse,  // (B, H, L)
                                 const float *q, const float *k, const float *v, const float *mask,
                                 const ddl_sdpa_dims *dims);
ddl_status ddl_sdpa_forward_f64(double *out, double *lse, const double *q, const double *k,
                                const double *v, const double *mask, const ddl_sdpa_dims *dims);
ddl_status ddl_sdpa_backward_f64(double *dq, double *dk, double *dv, const double *dout,
                                 const double *out, const double *lse, const double *q,
                                 const double *k, const double *v, const double *mask,
                                 const ddl_sdpa_dims *dims);

/* The naive twins: the same results from the whole (L, S) matrix per (b, h), plain loops
 * summing in double (forward only needs `out` and `lse`; backward the same arguments). */
ddl_status ddl_sdpa_forward_naive_f32(float *out, float *lse, const float *q, const float *k,
                                      const float *v, const float *mask, const ddl_sdpa_dims *dims);
ddl_status ddl_sdpa_backward_naive_f32(float *dq, float *dk, float *dv, const float *dout,
                                       const float *out, const float *lse, const float *q,
                                       const float *k, const float *v, const float *mask,
                                       const ddl_sdpa_dims *dims);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_ATTENTION_H */
