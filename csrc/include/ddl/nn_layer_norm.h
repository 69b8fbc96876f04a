/* nn_layer_norm.h: per-row normalization kernels (LayerNorm, RMSNorm; GroupNorm and
 * InstanceNorm run on them through a reshape) on contiguous float32 or float64 buffers,
 * forward and backward.
 *
 * Each of the M rows of N elements is normalized on its own, with the statistics accumulated
 * in double:
 *     layer:  mean = mean(x),  rstd = 1 / sqrt(var(x) + eps)   (biased variance)
 *             out  = (x - mean) * rstd * weight + bias
 *     rms:    rstd = 1 / sqrt(mean(x^2) + eps)                  (mean not used, written as 0)
 *             out  = x * rstd * weight + bias
 * weight and bias are (N,) or NULL (an element-wise affine over the row). Conventions as
 * nn_loss.h: outputs first, backward accumulates (+=) into gradients the caller zeroes, a NULL
 * gradient is skipped, DDL_E_VALUE on bad sizes with nothing written.
 *
 * Example: LayerNorm over the last dim of (B, T, C) in float32
 *     float mean[B*T], rstd[B*T];
 *     st = ddl_layer_norm_forward_f32(out, mean, rstd, x, w, b, B*T, C, 1e-5, DDL_ROW_NORM_LAYER);
 *     st = ddl_layer_norm_backward_f32(dx, dw, db, dout, x, w, mean, rstd, B*T, C,
 *                                      DDL_ROW_NORM_LAYER);
 */
#ifndef DDL_NN_LAYER_NORM_H
#define DDL_NN_LAYER_NORM_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DDL_ROW_NORM_LAYER = 0, /* subtract the mean, divide by the standard deviation */
    DDL_ROW_NORM_RMS = 1,   /* divide by the root mean square */
    DDL_NUM_ROW_NORMS
} ddl_row_norm_kind;

ddl_status ddl_layer_norm_forward_f32(float *out,          // (M, N)
                                      float *mean,         // (M,) or NULL
                                      float *rstd,         // (M,) or NULL
                                      const float *inp,    // (M, N)
                                      const float *weight, // (N,) or NULL
                                      const float *bias,   // (N,) or NULL
                                      int64_t M, int64_t N, double eps, ddl_row_norm_kind kind);
/* dinp += rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)) with dxh = dout * weight and
 * xh the normalized row (rms: no mean(dxh) term); dweight += sum_rows dout * xh;
 * dbias += sum_rows dout. mean and rstd are the forward's. */
ddl_status ddl_layer_norm_backward_f32(float *dinp,         // (M, N) or NULL
                                       float *dweight,      // (N,) or NULL
                                       float *dbias,        // (N,) or NULL
                                       const float *dout,   // (M, N)
                                       const float *inp,    // (M, N)
                                       const float *weight, // (N,) or NULL
                                       const float *mean,   // (M,)
                                       const float *rstd,   // (M,)
                                       int64_t M, int64_t N, ddl_row_norm_kind kind);

/* The same in float64. */
ddl_status ddl_layer_norm_forward_f64(double *out, double *mean, double *rstd, const double *inp,
                                      const double *weight, const double *bias, int64_t M,
                                      int64_t N, double eps, ddl_row_norm_kind kind);
ddl_status ddl_layer_norm_backward_f64(double *dinp, double *dweight, double *dbias,
                                       const double *dout, const double *inp, const double *weight,
                                       const double *mean, const double *rstd, int64_t M, int64_t N,
                                       ddl_row_norm_kind kind);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_LAYER_NORM_H */
