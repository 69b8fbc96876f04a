/* nn_norm.h: float32 raw-pointer kernels for batch normalization over an (N, C, S) layout.
 *
 * S is the flattened spatial size: H*W for BatchNorm2d on (N, C, H, W), L for BatchNorm1d on
 * (N, C, L), and 1 for BatchNorm1d on (N, C). Buffers are contiguous; conventions as in
 * nn_conv.h (outputs first, backward accumulates (+=) and the caller zeroes, a NULL gradient
 * means "not needed", DDL_E_VALUE with a message on bad sizes, nothing written on error).
 * Statistics are accumulated in double, as PyTorch does on CPU.
 *
 * Training (matches torch.nn.functional.batch_norm(training=True)):
 *   mean = mean of x over (N, S);  var = biased variance over (N, S)
 *   out  = (x - mean) / sqrt(var + eps) * weight + bias
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (M = N*S)
 * Eval: the same with mean = running_mean, var = running_var, running stats untouched.
 */
#ifndef DDL_NN_NORM_H
#define DDL_NN_NORM_H

#include "core.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Batch norm forward.
 *   out           (N, C, S)
 *   save_mean     (C,) or NULL   the mean used (batch mean; running_mean in eval)
 *   save_invstd   (C,) or NULL   1/sqrt(var + eps) with the variance used; backward needs both
 *   running_mean  (C,) or NULL   updated in place when training; read in eval
 *   running_var   (C,) or NULL   (both NULL, or both not: track_running_stats=False is NULL)
 *   inp           (N, C, S)
 *   weight        (C,) or NULL   (affine=False: weight 1, bias 0)
 *   bias          (C,) or NULL
 * training != 0 uses batch statistics and needs N*S > 1 (PyTorch's "expected more than 1 value
 * per channel when training"); training == 0 needs the running stats. eps >= 0. */
ddl_status ddl_batchnorm_forward(float *out, float *save_mean, float *save_invstd,
                                 float *running_mean, float *running_var, const float *inp,
                                 const float *weight, const float *bias, int64_t N, int64_t C,
                                 int64_t S, int training, double momentum, double eps);
/* Batch norm backward: accumulates into dinp, dweight, dbias (each may be NULL).
 * With xhat = (x - save_mean) * save_invstd, per channel:
 *   dbias   += sum(dout);  dweight += sum(dout * xhat)
 *   training: dinp += weight * invstd * (dout - mean(dout) - xhat * mean(dout * xhat))
 *   eval:     dinp += weight * invstd * dout  (the statistics are constants)
 *   dinp, dout, inp  (N, C, S)      inp may be NULL when only dbias, or (eval) dinp, is wanted
 *   dweight, dbias   (C,)
 *   weight           (C,) or NULL  (the forward's; NULL means 1)
 *   save_mean, save_invstd  (C,)   from forward (not needed when only dbias is wanted) */
ddl_status ddl_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, const float *save_mean,
                                  const float *save_invstd, int64_t N, int64_t C, int64_t S,
                                  int training);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_NORM_H */
