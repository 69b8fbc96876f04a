/* grad_nn.h: the differentiable layer ops (float32), recorded by autograd like ddl_ag_*. */
#ifndef DDL_GRAD_NN_H
#define DDL_GRAD_NN_H

#include "ddl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y (..., OUT) = x (..., IN) @ w^T (OUT, IN) + b (OUT,) ; b may be NULL */
ddl_status ddl_ag_linear(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *w,
                         const ddl_tensor *b);
/* x (N, C, H, W), w (O, C, KH, KW), b (O,) or NULL -> (N, O, OH, OW); groups = 1 */
ddl_status ddl_ag_conv2d(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *w,
                         const ddl_tensor *b, const int64_t stride[2], const int64_t pad[2],
                         const int64_t dil[2]);
/* kind 'm' max, 'a' average (count_include_pad), 'A' adaptive average (k = output size) */
ddl_status ddl_ag_pool2d(ddl_tensor **out, char kind, const ddl_tensor *x, const int64_t k[2],
                         const int64_t stride[2], const int64_t pad[2]);
/* x (N, C, ...); running stats (C,) updated in place when training (either may be NULL) */
ddl_status ddl_ag_batch_norm(ddl_tensor **out, const ddl_tensor *x, ddl_tensor *running_mean,
                             ddl_tensor *running_var, const ddl_tensor *weight,
                             const ddl_tensor *bias, int training, double momentum, double eps);
/* over the last dim; log != 0 for log_softmax */
ddl_status ddl_ag_softmax(ddl_tensor **out, const ddl_tensor *x, int log);
/* kind 'c' cross entropy from logits, 'n' nll from log-probs: x (N, C), target int64 (N,);
 * reduction 0 none, 1 mean, 2 sum (PyTorch's codes) */
ddl_status ddl_ag_class_loss(ddl_tensor **out, char kind, const ddl_tensor *x,
                             const ddl_tensor *target, int reduction, int64_t ignore_index,
                             double label_smoothing);
/* kind 'b' BCE with logits (pos_weight (C,) or NULL), 's' MSE, 'l' L1; x and y same shape */
ddl_status ddl_ag_pair_loss(ddl_tensor **out, char kind, const ddl_tensor *x,
                            const ddl_tensor *y, const ddl_tensor *pos_weight, int reduction);
/* kind 'l' leaky relu (slope), 'g' gelu (approximate: 0 exact, 1 tanh) */
ddl_status ddl_ag_activation(ddl_tensor **out, char kind, const ddl_tensor *x, double slope,
                             int approximate);
/* idx int64 (...), w (V, D) -> (..., D); padding_idx < 0 for none */
ddl_status ddl_ag_embedding(ddl_tensor **out, const ddl_tensor *idx, const ddl_tensor *w,
                            int64_t padding_idx);
/* training-mode dropout with a mask from the seeded Philox stream */
ddl_status ddl_ag_dropout(ddl_tensor **out, const ddl_tensor *x, double p);
/* One step of a recurrent cell over the batch. kind 'r' (nonlinearity 0 tanh, 1 relu), 'l'
 * LSTM (c required; the output is (B, 2H) = [h', c']), 'g' GRU. Biases may be NULL. */
ddl_status ddl_ag_rnn_cell(ddl_tensor **out, char kind, const ddl_tensor *x, const ddl_tensor *h,
                           const ddl_tensor *c, const ddl_tensor *w_ih, const ddl_tensor *w_hh,
                           const ddl_tensor *b_ih, const ddl_tensor *b_hh, int nonlinearity);

#ifdef __cplusplus
}
#endif
#endif
