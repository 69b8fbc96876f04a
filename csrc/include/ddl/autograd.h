/* autograd.h: define-by-run autograd: grad mode, backward, leaf hooks, and the differentiable
 * ops (ddl_ag_*), core ops and layer ops alike. */
#ifndef DDL_AUTOGRAD_H
#define DDL_AUTOGRAD_H

#include "core.h"
#include "nn_act.h"
#include "nn_attention.h"
#include "nn_layer_norm.h"
#include "nn_loss.h"
#include "nn_rnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- autograd (define by run) ------------------------------------------------------------
 * The differentiable ops are the ddl_ag_* functions (csrc/autograd/grad_*.c): each runs the
 * plain op above and, when grad mode is on and an input requires grad, records a graph node on
 * the output. The plain ops never record: backward passes and optimizers use them. */

/* Grad mode is per thread, on by default. */
void ddl_set_grad_enabled(int enabled);
int ddl_is_grad_enabled(void);
/* Mark a leaf as requiring grad (float dtypes only; non-leaves: DDL_E_VALUE). */
ddl_status ddl_tensor_set_requires_grad(ddl_tensor *t, int requires_grad);
/* A new header over t's storage, cut from the graph. */
ddl_status ddl_tensor_detach(ddl_tensor **out, const ddl_tensor *t);
/* Run backward from `root`: `grad` is d(something)/d(root), NULL meaning ones for a
 * one-element root. Gradients accumulate into each reachable leaf's ->grad. Unless
 * `retain_graph`, the saved tensors are freed and a second backward is an error. */
ddl_status ddl_backward(ddl_tensor *root, const ddl_tensor *grad, int retain_graph);
/* Call fn(leaf, ctx) during backward as soon as leaf's gradient for this pass is final (all
 * contributions accumulated into leaf->grad), as early as the graph allows. fn NULL removes
 * the hook. An error from fn stops the backward pass and is returned by ddl_backward.
 * release(ctx), when not NULL, runs when the hook is replaced or the tensor is freed.
 * Errors: DDL_E_NOMEM. */
typedef ddl_status (*ddl_grad_hook_fn)(ddl_tensor *leaf, void *ctx);
ddl_status ddl_tensor_set_hook(ddl_tensor *t, ddl_grad_hook_fn fn, void *ctx,
                               void (*release)(void *ctx));
/* The hook set on t (NULL when none); its ctx goes to *ctx when ctx is not NULL. */
ddl_grad_hook_fn ddl_tensor_get_hook(const ddl_tensor *t, void **ctx);
/* The leaves (requiring grad) that backward from root would reach, with repeats: writes at
 * most cap to out and returns the total (-1 when out of memory). */
int64_t ddl_graph_leaves(const ddl_tensor *root, const ddl_tensor **out, int64_t cap);
/* Name of the node that made t ("MulBackward", ...), or NULL for leaves. */
const char *ddl_tensor_grad_fn_name(const ddl_tensor *t);

ddl_status ddl_ag_binary(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a,
                         const ddl_tensor *b);
ddl_status ddl_ag_binary_scalar(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a, double s,
                                int scalar_is_float, int reverse);
ddl_status ddl_ag_unary(ddl_tensor **out, ddl_unary_op op, const ddl_tensor *a);
ddl_status ddl_ag_reduce(ddl_tensor **out, ddl_reduce_op op, const ddl_tensor *a, int ndims,
                         const int *dims, int keepdim, int64_t correction);
ddl_status ddl_ag_matmul(ddl_tensor **out, const ddl_tensor *a, const ddl_tensor *b);
/* How ddl_ag_reshape gets t to a new shape. */
typedef enum {
    DDL_SHAPE_VIEW = 0,    /* a view of t's memory, or DDL_E_VALUE when the strides forbid it */
    DDL_SHAPE_RESHAPE = 1, /* a view when the strides allow it, else a copy */
    DDL_SHAPE_EXPAND = 2,  /* broadcast size-1 dims (stride 0); backward sums them back */
    DDL_NUM_SHAPE_OPS
} ddl_shape_op;

/* t as (ndim, shape) by `op` */
ddl_status ddl_ag_reshape(ddl_tensor **out, ddl_shape_op op, const ddl_tensor *t, int ndim,
                          const int64_t *shape);
ddl_status ddl_ag_permute(ddl_tensor **out, const ddl_tensor *t, const int *dims);
ddl_status ddl_ag_to(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt);
ddl_status ddl_ag_slice(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t start, int64_t stop,
                        int64_t step);
ddl_status ddl_ag_select(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t index);
ddl_status ddl_ag_cat(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim);
/* t itself when contiguous (unless force_copy), else a recorded copy */
ddl_status ddl_ag_contiguous(ddl_tensor **out, const ddl_tensor *t, int force_copy);
ddl_status ddl_ag_clamp(ddl_tensor **out, const ddl_tensor *a, int has_lo, double lo, int has_hi,
                        double hi);
ddl_status ddl_ag_where(ddl_tensor **out, const ddl_tensor *cond, const ddl_tensor *a,
                        const ddl_tensor *b);
ddl_status ddl_ag_stack(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim);
/* ddl_take with a gradient for src (float32 / float64): grad_index.c */
ddl_status ddl_ag_take(ddl_tensor **out, const ddl_tensor *src, const ddl_tensor *index);

/* ---- differentiable layer ops (float32) --------------------------------------------- */

/* The modes of the layer ops below that serve several layers; every value is exported to
 * Python as ddl._C.<name without DDL_>. An out-of-range value is DDL_E_VALUE. */
typedef enum {
    DDL_POOL_MAX = 0,
    DDL_POOL_AVG = 1,          /* count_include_pad */
    DDL_POOL_ADAPTIVE_AVG = 2, /* k is the output size; stride and pad unused */
    DDL_NUM_POOL_KINDS
} ddl_pool_kind;

typedef enum {
    DDL_CLASS_LOSS_CROSS_ENTROPY = 0, /* from logits, with label smoothing */
    DDL_CLASS_LOSS_NLL = 1,           /* from log-probabilities */
    DDL_NUM_CLASS_LOSSES
} ddl_class_loss_kind;

typedef enum {
    DDL_PAIR_LOSS_BCE_WITH_LOGITS = 0,
    DDL_PAIR_LOSS_MSE = 1,
    DDL_PAIR_LOSS_L1 = 2,
    DDL_NUM_PAIR_LOSSES
} ddl_pair_loss_kind;

typedef enum {
    DDL_ACT_LEAKY_RELU = 0, /* slope for x < 0 */
    DDL_ACT_GELU = 1,       /* exact or tanh (ddl_gelu_approximate) */
    DDL_NUM_ACTS
} ddl_act_kind;

typedef enum {
    DDL_CELL_RNN = 0, /* h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act by nonlinearity */
    DDL_CELL_LSTM = 1,
    DDL_CELL_GRU = 2,
    DDL_NUM_CELL_KINDS
} ddl_cell_kind;

/* y (..., OUT) = x (..., IN) @ w^T (OUT, IN) + b (OUT,) ; b may be NULL */
ddl_status ddl_ag_linear(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *w,
                         const ddl_tensor *b);
/* x (N, C, H, W), w (O, C, KH, KW), b (O,) or NULL -> (N, O, OH, OW); groups = 1 */
ddl_status ddl_ag_conv2d(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *w,
                         const ddl_tensor *b, const int64_t stride[2], const int64_t pad[2],
                         const int64_t dil[2]);
/* x (N, C, H, W) -> (N, C, OH, OW) */
ddl_status ddl_ag_pool2d(ddl_tensor **out, ddl_pool_kind kind, const ddl_tensor *x,
                         const int64_t k[2], const int64_t stride[2], const int64_t pad[2]);
/* x (N, C, ...); running stats (C,) updated in place when training (either may be NULL) */
ddl_status ddl_ag_batch_norm(ddl_tensor **out, const ddl_tensor *x, ddl_tensor *running_mean,
                             ddl_tensor *running_var, const ddl_tensor *weight,
                             const ddl_tensor *bias, int training, double momentum, double eps);
/* over the last dim; log != 0 for log_softmax */
ddl_status ddl_ag_softmax(ddl_tensor **out, const ddl_tensor *x, int log);
/* x (N, C), target int64 (N,); label_smoothing only for cross entropy */
ddl_status ddl_ag_class_loss(ddl_tensor **out, ddl_class_loss_kind kind, const ddl_tensor *x,
                             const ddl_tensor *target, ddl_reduction reduction,
                             int64_t ignore_index, double label_smoothing);
/* x and y of one shape; pos_weight (C,) or NULL, only for BCE with logits */
ddl_status ddl_ag_pair_loss(ddl_tensor **out, ddl_pair_loss_kind kind, const ddl_tensor *x,
                            const ddl_tensor *y, const ddl_tensor *pos_weight,
                            ddl_reduction reduction);
/* slope for leaky relu, approximate for gelu (the other is ignored) */
ddl_status ddl_ag_activation(ddl_tensor **out, ddl_act_kind kind, const ddl_tensor *x, double slope,
                             ddl_gelu_approximate approximate);
/* idx int64 (...), w (V, D) -> (..., D); padding_idx < 0 for none */
ddl_status ddl_ag_embedding(ddl_tensor **out, const ddl_tensor *idx, const ddl_tensor *w,
                            int64_t padding_idx);
/* training-mode dropout with a mask from the seeded Philox stream */
ddl_status ddl_ag_dropout(ddl_tensor **out, const ddl_tensor *x, double p);
/* One step of a recurrent cell over the batch: x (B, I), h (B, H); c (B, H) for LSTM only,
 * whose output is (B, 2H) = [h', c']; nonlinearity for DDL_CELL_RNN only. Biases may be
 * NULL. */
ddl_status ddl_ag_rnn_cell(ddl_tensor **out, ddl_cell_kind kind, const ddl_tensor *x,
                           const ddl_tensor *h, const ddl_tensor *c, const ddl_tensor *w_ih,
                           const ddl_tensor *w_hh, const ddl_tensor *b_ih, const ddl_tensor *b_hh,
                           ddl_rnn_nonlinearity nonlinearity);
/* A whole sequence of one recurrent layer in one direction, fused (ddl_rnn_seq_forward):
 * x (T, B, I); h (B, H) and c (B, H, LSTM only) may be NULL (zeros); reverse != 0 runs
 * t = T-1 .. 0. Output (T + S, B, H): rows [0, T) the outputs y_t, row T the final h, and for
 * LSTM (S = 2) row T + 1 the final c. */
ddl_status ddl_ag_rnn_seq(ddl_tensor **out, ddl_cell_kind kind, const ddl_tensor *x,
                          const ddl_tensor *h, const ddl_tensor *c, const ddl_tensor *w_ih,
                          const ddl_tensor *w_hh, const ddl_tensor *b_ih, const ddl_tensor *b_hh,
                          ddl_rnn_nonlinearity nonlinearity, int reverse);

/* ---- differentiable layer ops in float32 and float64 (issue 16) ---------------------------- */

/* Normalize each row of the last N elements of x (numel(x) = M * N), then the element-wise
 * affine weight (N,) and bias (N,), either NULL (LayerNorm, RMSNorm; see nn_layer_norm.h).
 * x, weight and bias share one float dtype. */
/* Scaled dot-product attention (nn_attention.h): q (B, H, L, D), k (B, H, S, D),
 * v (B, H, S, E) -> (B, H, L, E); mask an additive float mask broadcasting to (B, H, L, S)
 * (no gradient) or NULL; naive != 0 runs the materializing float32 twin (tests, benchmarks). */
ddl_status ddl_ag_sdpa(ddl_tensor **out, const ddl_tensor *q, const ddl_tensor *k,
                       const ddl_tensor *v, const ddl_tensor *mask, double scale, int causal,
                       int naive);
/* GELU of a float64 x (float32: ddl_ag_activation). */
ddl_status ddl_ag_gelu64(ddl_tensor **out, const ddl_tensor *x, ddl_gelu_approximate approximate);
/* Embedding with a float64 weight (float32: ddl_ag_embedding). */
ddl_status ddl_ag_embedding64(ddl_tensor **out, const ddl_tensor *idx, const ddl_tensor *w,
                              int64_t padding_idx);
ddl_status ddl_ag_layer_norm(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *weight,
                             const ddl_tensor *bias, int64_t N, double eps, ddl_row_norm_kind kind);

#ifdef __cplusplus
}
#endif
#endif /* DDL_AUTOGRAD_H */
