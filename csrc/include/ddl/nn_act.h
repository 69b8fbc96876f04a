/* nn_act.h: activation kernels (relu, leaky_relu, gelu, tanh, sigmoid), embedding and dropout.
 *
 * Raw contiguous float32 buffers, owned by the caller; conventions as in nn_loss.h: outputs
 * first, then inputs, then sizes, then options; backward ACCUMULATES (+=) into gradients (the
 * caller zeroes them) and a NULL gradient pointer means "not needed"; every function returns a
 * ddl_status and validates before writing anything. Elementwise kernels take N = numel.
 * relu, tanh and sigmoid forwards are the core's unary ops (ddl_unary); only their backwards
 * are here, computed from the saved forward output.
 */
#ifndef DDL_NN_ACT_H
#define DDL_NN_ACT_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- relu ----------------------------------------------------------------------------------- */

/* dinp += dout where out > 0 (PyTorch: no gradient at 0). `out` is the forward output (the
 * input works too: same sign test). */
ddl_status ddl_relu_backward(float *dinp,       // (N,)
                             const float *dout, // (N,)
                             const float *out,  // (N,)
                             int64_t N);

/* ---- leaky_relu ----------------------------------------------------------------------------- */

/* out = inp > 0 ? inp : negative_slope * inp. `out` may equal `inp`. */
ddl_status ddl_leaky_relu_forward(float *out,       // (N,)
                                  const float *inp, // (N,)
                                  int64_t N, float negative_slope);
/* dinp += dout * (inp > 0 ? 1 : negative_slope). */
ddl_status ddl_leaky_relu_backward(float *dinp,       // (N,)
                                   const float *dout, // (N,)
                                   const float *inp,  // (N,) forward input
                                   int64_t N, float negative_slope);

/* ---- gelu ----------------------------------------------------------------------------------- */

typedef enum {
    DDL_GELU_NONE = 0, /* exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))) */
    DDL_GELU_TANH = 1, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
} ddl_gelu_approximate;

/* `out` may equal `inp`. */
ddl_status ddl_gelu_forward(float *out,       // (N,)
                            const float *inp, // (N,)
                            int64_t N, ddl_gelu_approximate approximate);
/* dinp += dout * gelu'(inp). */
ddl_status ddl_gelu_backward(float *dinp,       // (N,)
                             const float *dout, // (N,)
                             const float *inp,  // (N,) forward input
                             int64_t N, ddl_gelu_approximate approximate);

/* The same GELU in float64 (forward, and backward accumulating into dinp). */
ddl_status ddl_gelu_forward_f64(double *out,       // (N,)
                                const double *inp, // (N,)
                                int64_t N, ddl_gelu_approximate approximate);
ddl_status ddl_gelu_backward_f64(double *dinp,       // (N,)
                                 const double *dout, // (N,)
                                 const double *inp,  // (N,)
                                 int64_t N, ddl_gelu_approximate approximate);

/* ---- tanh, sigmoid (from the saved output) -------------------------------------------------- */

/* dinp += dout * (1 - out^2) */
ddl_status ddl_tanh_backward(float *dinp,       // (N,)
                             const float *dout, // (N,)
                             const float *out,  // (N,) tanh forward output
                             int64_t N);
/* dinp += dout * out * (1 - out) */
ddl_status ddl_sigmoid_backward(float *dinp,       // (N,)
                                const float *dout, // (N,)
                                const float *out,  // (N,) sigmoid forward output
                                int64_t N);

/* ---- embedding ------------------------------------------------------------------------------ */

/* out[n] = weight[indices[n]]. An index outside [0, V) is DDL_E_INDEX:
 * "embedding: index 12 at position 3 is out of range for 10 embeddings" (the first one). */
ddl_status ddl_embedding_forward(float *out,             // (N, D)
                                 const float *weight,    // (V, D)
                                 const int64_t *indices, // (N,)
                                 int64_t N, int64_t V, int64_t D);
/* dweight[indices[n]] += dout[n] (scatter-add; repeated indices add up), except for rows whose
 * index is padding_idx when padding_idx >= 0 (padding_idx < 0: none). padding_idx must be < V. */
ddl_status ddl_embedding_backward(float *dweight,         // (V, D)
                                  const float *dout,      // (N, D)
                                  const int64_t *indices, // (N,)
                                  int64_t N, int64_t V, int64_t D, int64_t padding_idx);

/* The same in float64. */
ddl_status ddl_embedding_forward_f64(double *out,            // (N, D)
                                     const double *weight,   // (V, D)
                                     const int64_t *indices, // (N,)
                                     int64_t N, int64_t V, int64_t D);
ddl_status ddl_embedding_backward_f64(double *dweight,        // (V, D)
                                      const double *dout,     // (N, D)
                                      const int64_t *indices, // (N,)
                                      int64_t N, int64_t V, int64_t D, int64_t padding_idx);

/* ---- dropout with a caller-made keep mask --------------------------------------------------- */

/* out = mask ? inp / (1 - p) : 0, mask nonzero = keep (the caller draws it with probability
 * 1 - p). p in [0, 1]; p == 1 gives all zeros, as PyTorch. `out` may equal `inp`. */
ddl_status ddl_dropout_forward(float *out,          // (N,)
                               const float *inp,    // (N,)
                               const uint8_t *mask, // (N,)
                               int64_t N, float p);
/* dinp += mask ? dout / (1 - p) : 0 */
ddl_status ddl_dropout_backward(float *dinp,         // (N,)
                                const float *dout,   // (N,)
                                const uint8_t *mask, // (N,)
                                int64_t N, float p);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_ACT_H */
