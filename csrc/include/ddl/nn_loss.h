/* nn_loss.h: softmax, log_softmax and loss kernels (cross entropy, nll, BCE with logits, MSE, L1)
 * on contiguous float32 buffers, forward and backward.
 *
 * Conventions (shared with nn_act.h and nn_rnn.h)
 * -----------------------------------------------
 * - Raw pointers to contiguous row-major buffers; the caller owns every buffer. Outputs first,
 *   then inputs, then sizes, then options. Shape comments name the buffer's shape.
 * - Backward ACCUMULATES (+=) into gradient buffers: the caller zeroes them. A NULL gradient
 *   pointer means "not needed" and is skipped.
 * - Outputs must not alias inputs unless a function says it may.
 * - Every function returns DDL_OK or a negative ddl_status with a message (ddl_last_error()):
 *   DDL_E_VALUE for bad sizes/options/NULL buffers, DDL_E_INDEX for out-of-range targets.
 *   Validation happens before anything is written, so a failed call leaves outputs untouched.
 * - Sums (softmax normalisers, reductions) are accumulated in double.
 *
 * Reductions follow PyTorch: NONE gives one loss per sample (`losses`), SUM their sum, MEAN their
 * mean; for cross_entropy/nll_loss MEAN divides by the number of non-ignored targets (NaN when
 * every target is ignored, as PyTorch). Loss forwards take two outputs:
 *     loss   (1,)  the reduced value: required for SUM/MEAN, not written for NONE
 *     losses (B,)  per-sample (unreduced) values: required for NONE, optional (NULL) otherwise;
 *                  0 at ignored positions
 * and loss backwards take `dloss`, the gradient of the forward's output: (B,) for NONE, (1,) for
 * SUM/MEAN.
 *
 * Example: mean cross entropy and its gradient
 *     float loss, lse[B], dloss = 1.0f;                 // dlogits zeroed by the caller
 *     st = ddl_cross_entropy_forward(&loss, NULL, lse, logits, targets, B, C,
 *                                    DDL_REDUCTION_MEAN, -100, 0.1f);
 *     if (!st) st = ddl_cross_entropy_backward(dlogits, &dloss, logits, lse, targets, B, C,
 *                                             DDL_REDUCTION_MEAN, -100, 0.1f);
 */
#ifndef DDL_NN_LOSS_H
#define DDL_NN_LOSS_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's numbering (torch._reduction): none 0, mean 1, sum 2. */
typedef enum {
    DDL_REDUCTION_NONE = 0,
    DDL_REDUCTION_MEAN = 1,
    DDL_REDUCTION_SUM = 2,
} ddl_reduction;

/* ---- softmax / log_softmax over the last dim of (B, C) -------------------------------------- */

/* out = softmax(inp) per row, max-subtracted. `out` may equal `inp` (in place). A row of all
 * -inf or with a NaN gives NaN, as PyTorch. */
ddl_status ddl_softmax_forward(float *out,       // (B, C)
                               const float *inp, // (B, C)
                               int64_t B, int64_t C);
/* dinp += out * (dout - sum_c(dout * out)), from the forward's output. */
ddl_status ddl_softmax_backward(float *dinp,       // (B, C)
                                const float *dout, // (B, C)
                                const float *out,  // (B, C) softmax forward output
                                int64_t B, int64_t C);

/* out = inp - logsumexp(inp) per row. `out` may equal `inp`. */
ddl_status ddl_log_softmax_forward(float *out,       // (B, C)
                                   const float *inp, // (B, C)
                                   int64_t B, int64_t C);
/* dinp += dout - exp(out) * sum_c(dout), from the forward's output. */
ddl_status ddl_log_softmax_backward(float *dinp,       // (B, C)
                                    const float *dout, // (B, C)
                                    const float *out,  // (B, C) log_softmax forward output
                                    int64_t B, int64_t C);

/* ---- cross entropy from logits, class-index targets ----------------------------------------- */

/* Per sample i with target t = targets[i] != ignore_index (PyTorch's formula):
 *     loss_i = (1 - eps) * (-log_softmax(x_i)[t]) + eps * mean_c(-log_softmax(x_i)[c])
 * with eps = label_smoothing in [0, 1]. Ignored samples give 0 and do not count for MEAN.
 * `lse` (B,) or NULL: each row's log-sum-exp, a cache for the backward (written for every row,
 * ignored or not). A target outside [0, C) that is not ignore_index is DDL_E_INDEX:
 * "cross_entropy: target 12 at position 3 is out of range for 10 classes" (the first one). */
ddl_status ddl_cross_entropy_forward(float *loss,            // (1,) or NULL
                                     float *losses,          // (B,) or NULL
                                     float *lse,             // (B,) or NULL
                                     const float *logits,    // (B, C)
                                     const int64_t *targets, // (B,)
                                     int64_t B, int64_t C, ddl_reduction reduction,
                                     int64_t ignore_index, float label_smoothing);
/* dlogits[i] += g_i * (softmax(x_i) - eps/C - (1 - eps) * onehot(t_i)) for non-ignored i, where
 * g_i = dloss[i] (NONE), dloss[0] (SUM) or dloss[0] / n_non_ignored (MEAN). `lse` is the
 * forward's cache, or NULL to recompute it. Same options as the forward. */
ddl_status ddl_cross_entropy_backward(float *dlogits,         // (B, C)
                                      const float *dloss,     // (B,) NONE, else (1,)
                                      const float *logits,    // (B, C)
                                      const float *lse,       // (B,) or NULL
                                      const int64_t *targets, // (B,)
                                      int64_t B, int64_t C, ddl_reduction reduction,
                                      int64_t ignore_index, float label_smoothing);

/* ---- negative log likelihood on log-probabilities ------------------------------------------- */

/* loss_i = -logp[i, targets[i]]; ignore_index and MEAN as cross_entropy (no smoothing). Error
 * text: "nll_loss: target 12 at position 3 is out of range for 10 classes". */
ddl_status ddl_nll_loss_forward(float *loss,            // (1,) or NULL
                                float *losses,          // (B,) or NULL
                                const float *logp,      // (B, C)
                                const int64_t *targets, // (B,)
                                int64_t B, int64_t C, ddl_reduction reduction,
                                int64_t ignore_index);
/* dlogp[i, t_i] -= g_i (g_i as in ddl_cross_entropy_backward). */
ddl_status ddl_nll_loss_backward(float *dlogp,           // (B, C)
                                 const float *dloss,     // (B,) NONE, else (1,)
                                 const int64_t *targets, // (B,)
                                 int64_t B, int64_t C, ddl_reduction reduction,
                                 int64_t ignore_index);

/* ---- binary cross entropy with logits ------------------------------------------------------ */

/* Elementwise over (N, C), with w = 1 + (pos_weight[c] - 1) * y (w = 1 without pos_weight):
 *     loss = (1 - y) * x + w * softplus(-x),   softplus(-x) = log1p(exp(-|x|)) + max(-x, 0)
 * which is max(x, 0) - x*y + log1p(exp(-|x|)) when w = 1: stable for any x. MEAN divides by
 * N*C. Without pos_weight the row split does not matter (pass N = numel, C = 1). `losses` is
 * (N, C) here. */
ddl_status ddl_binary_cross_entropy_with_logits_forward(float *loss,             // (1,) or NULL
                                                        float *losses,           // (N, C) or NULL
                                                        const float *inp,        // (N, C) logits
                                                        const float *target,     // (N, C)
                                                        const float *pos_weight, // (C,) or NULL
                                                        int64_t N, int64_t C,
                                                        ddl_reduction reduction);
/* dinp += g * ((1 - y) - w * sigmoid(-x)), (= sigmoid(x) - y when w = 1);
 * dtarget += g * (-x + (pos_weight - 1) * softplus(-x)). `dloss` is (N, C) for NONE. */
ddl_status ddl_binary_cross_entropy_with_logits_backward(float *dinp,             // (N, C) or NULL
                                                         float *dtarget,          // (N, C) or NULL
                                                         const float *dloss,      // see above
                                                         const float *inp,        // (N, C)
                                                         const float *target,     // (N, C)
                                                         const float *pos_weight, // (C,) or NULL
                                                         int64_t N, int64_t C,
                                                         ddl_reduction reduction);

/* ---- regression losses (elementwise over N values) ----------------------------------------- */

/* loss = (x - y)^2; `losses` is (N,). MEAN divides by N (NaN for N = 0, as PyTorch). */
ddl_status ddl_mse_loss_forward(float *loss,         // (1,) or NULL
                                float *losses,       // (N,) or NULL
                                const float *inp,    // (N,)
                                const float *target, // (N,)
                                int64_t N, ddl_reduction reduction);
/* dinp += 2 g (x - y); dtarget += -2 g (x - y). */
ddl_status ddl_mse_loss_backward(float *dinp,         // (N,) or NULL
                                 float *dtarget,      // (N,) or NULL
                                 const float *dloss,  // (N,) NONE, else (1,)
                                 const float *inp,    // (N,)
                                 const float *target, // (N,)
                                 int64_t N, ddl_reduction reduction);

/* loss = |x - y|. */
ddl_status ddl_l1_loss_forward(float *loss,         // (1,) or NULL
                               float *losses,       // (N,) or NULL
                               const float *inp,    // (N,)
                               const float *target, // (N,)
                               int64_t N, ddl_reduction reduction);
/* dinp += g sign(x - y) (0 where x == y, as PyTorch); dtarget += -g sign(x - y). */
ddl_status ddl_l1_loss_backward(float *dinp,         // (N,) or NULL
                                float *dtarget,      // (N,) or NULL
                                const float *dloss,  // (N,) NONE, else (1,)
                                const float *inp,    // (N,)
                                const float *target, // (N,)
                                int64_t N, ddl_reduction reduction);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_LOSS_H */
