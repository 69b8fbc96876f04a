/* nn_conv.h: raw-pointer kernels for conv2d, 2-D pooling (float32, and float64 `_f64` twins)
 * and linear (float32) (NCHW, contiguous).
 *
 * These are the kernels under the autograd layer: every buffer is a contiguous float32 (or
 * int64 for pooling indices) array whose shape is given in the comment next to it, and sizes
 * are passed explicitly. Conventions (docs: shared/style.md):
 *   - outputs first, then inputs, then sizes; gradients are named d<name>;
 *   - forward writes (overwrites) its outputs;
 *   - backward ACCUMULATES (+=) into the gradients; the caller zeroes them first;
 *   - a NULL gradient pointer means "not needed" and its work is skipped;
 *   - conv2d allocates one workspace per call for its batched im2col (several samples per
 *     sgemm, the batch split over ddl_set_num_threads threads); without memory for it, it
 *     runs one sample at a time in the caller's col_scratch; the other kernels never allocate;
 *   - every function returns DDL_OK or DDL_E_VALUE (bad sizes, NULL required buffers; also
 *     DDL_E_INDEX for bad max-pool indices) with a message naming the shapes
 *     (ddl_last_error()); all checks run before any write, so nothing changes on error.
 * Sizes must be positive (batch N >= 1 included) and each at most 2^31 - 1; padding >= 0.
 * Output sizes follow PyTorch (floor mode): OH = (H + 2*pad_h - dil_h*(KH-1) - 1)/stride_h + 1.
 *
 * The `_naive` functions are simple loops without BLAS, kept as test references for the fast
 * kernels; they take the same arguments (minus scratch) and accumulate in double.
 *
 * Example (forward + backward of a 3x3, padding 1 conv):
 *     int64_t OH, OW, ns;
 *     ddl_conv2d_out_size(&OH, &OW, H, W, 3, 3, 1, 1, 1, 1, 1, 1);
 *     ddl_conv2d_scratch_floats(&ns, C, H, W, 3, 3, 1, 1, 1, 1, 1, 1);
 *     float *col = malloc(ns * sizeof(float));       // reused by forward and backward
 *     ddl_conv2d_forward(out, col, inp, w, b, N, C, H, W, O, 3, 3, 1, 1, 1, 1, 1, 1);
 *     // zero dinp, dw, db, then:
 *     ddl_conv2d_backward(dinp, dw, db, col, dout, inp, w, N, C, H, W, O, 3, 3, 1, 1, 1, 1, 1, 1);
 */
#ifndef DDL_NN_CONV_H
#define DDL_NN_CONV_H

#include "core.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- conv2d (groups = 1) ----------------------------------------------------------------- */

/* Output spatial size of a conv2d; DDL_E_VALUE when a size is not positive, the padding is
 * negative, or the (dilated) kernel is larger than the padded input. */
ddl_status ddl_conv2d_out_size(int64_t *OH, int64_t *OW, int64_t H, int64_t W, int64_t KH,
                               int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w, int64_t dil_h, int64_t dil_w);

/* Floats of `col_scratch` that conv2d forward and backward need: C*KH*KW*OH*OW (one sample's
 * im2col matrix), or 0 for a pointwise conv (1x1 kernel, stride 1, no padding), which runs
 * sgemm on the input directly; col_scratch may then be NULL. */
ddl_status ddl_conv2d_scratch_floats(int64_t *nfloats, int64_t C, int64_t H, int64_t W, int64_t KH,
                                     int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, int64_t dil_h, int64_t dil_w);

/* out = conv2d(inp, weight) + bias, by batched im2col and one sgemm per chunk of samples.
 *   out          (N, O, OH, OW)
 *   col_scratch  (C*KH*KW, OH*OW)   ddl_conv2d_scratch_floats() floats; contents are junk after
 *   inp          (N, C, H, W)
 *   weight       (O, C, KH, KW)
 *   bias         (O,) or NULL */
ddl_status ddl_conv2d_forward(float *out, float *col_scratch, const float *inp, const float *weight,
                              const float *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                              int64_t O, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                              int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w);
/* Accumulates the gradients of conv2d (dinp by sgemm + col2im, dweight by sgemm with beta 1).
 *   dinp         (N, C, H, W) or NULL
 *   dweight      (O, C, KH, KW) or NULL
 *   dbias        (O,) or NULL
 *   col_scratch  as in forward (may be NULL when only dbias is wanted)
 *   dout         (N, O, OH, OW)
 *   inp          (N, C, H, W)     needed for dweight, else may be NULL
 *   weight       (O, C, KH, KW)   needed for dinp, else may be NULL */
ddl_status ddl_conv2d_backward(float *dinp, float *dweight, float *dbias, float *col_scratch,
                               const float *dout, const float *inp, const float *weight, int64_t N,
                               int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                               int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                               int64_t dil_h, int64_t dil_w);

/* float64 conv2d: the same shapes and rules, per-sample im2col + dgemm on the calling thread;
 * the im2col scratch is allocated inside (DDL_E_NOMEM when it cannot be). backward
 * accumulates like the float32 one. */
ddl_status ddl_conv2d_forward_f64(double *out, const double *inp, const double *weight,
                                  const double *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                                  int64_t O, int64_t KH, int64_t KW, int64_t stride_h,
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                  int64_t dil_w);
ddl_status ddl_conv2d_backward_f64(double *dinp, double *dweight, double *dbias, const double *dout,
                                   const double *inp, const double *weight, int64_t N, int64_t C,
                                   int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                                   int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                   int64_t dil_h, int64_t dil_w);

/* Test references: direct loops, no BLAS, no scratch. Same shapes and rules as above. */
ddl_status ddl_conv2d_forward_naive(float *out, const float *inp, const float *weight,
                                    const float *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                                    int64_t O, int64_t KH, int64_t KW, int64_t stride_h,
                                    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                    int64_t dil_w);
ddl_status ddl_conv2d_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *weight, int64_t N, int64_t C,
                                     int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                                     int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, int64_t dil_h, int64_t dil_w);

/* ---- pooling ----------------------------------------------------------------------------- */
/* Kernel, stride and padding as PyTorch's max_pool2d/avg_pool2d with dilation 1 and
 * ceil_mode=False. Padding may be at most half the kernel (PyTorch's rule). */

/* Output spatial size of max_pool2d/avg_pool2d with these parameters. */
ddl_status ddl_pool2d_out_size(int64_t *OH, int64_t *OW, int64_t H, int64_t W, int64_t KH,
                               int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w);

/* out = max over each window (padding never wins); NaN propagates as in PyTorch.
 *   out      (N, C, OH, OW)
 *   indices  (N, C, OH, OW)  int64, flat index ih*W + iw of each max inside its (H, W) plane
 *                            (what PyTorch's return_indices gives); saved for backward
 *   inp      (N, C, H, W) */
ddl_status ddl_max_pool2d_forward(float *out, int64_t *indices, const float *inp, int64_t N,
                                  int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w);
/* dinp[n, c, indices[...]] += dout[...]. Indices are bounds-checked first (DDL_E_INDEX).
 *   dinp     (N, C, H, W)
 *   dout     (N, C, OH, OW)
 *   indices  (N, C, OH, OW)  from forward */
ddl_status ddl_max_pool2d_backward(float *dinp, const float *dout, const int64_t *indices,
                                   int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                                   int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                   int64_t pad_w);

/* out = mean over each window, padding counted as zeros (count_include_pad=True).
 *   out  (N, C, OH, OW)
 *   inp  (N, C, H, W) */
ddl_status ddl_avg_pool2d_forward(float *out, const float *inp, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int64_t KH, int64_t KW, int64_t stride_h,
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w);
/*   dinp (N, C, H, W), dout (N, C, OH, OW) */
ddl_status ddl_avg_pool2d_backward(float *dinp, const float *dout, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t KH, int64_t KW, int64_t stride_h,
                                   int64_t stride_w, int64_t pad_h, int64_t pad_w);

/* Adaptive average pooling to (OH, OW): output row i averages input rows
 * [floor(i*H/OH), ceil((i+1)*H/OH)), likewise for columns (PyTorch's bins; OH > H allowed).
 *   out  (N, C, OH, OW)
 *   inp  (N, C, H, W) */
ddl_status ddl_adaptive_avg_pool2d_forward(float *out, const float *inp, int64_t N, int64_t C,
                                           int64_t H, int64_t W, int64_t OH, int64_t OW);
/*   dinp (N, C, H, W), dout (N, C, OH, OW) */
ddl_status ddl_adaptive_avg_pool2d_backward(float *dinp, const float *dout, int64_t N, int64_t C,
                                            int64_t H, int64_t W, int64_t OH, int64_t OW);

/* float64 pooling: the same shapes and rules as the float32 kernels above, on one thread. */
ddl_status ddl_max_pool2d_forward_f64(double *out, int64_t *indices, const double *inp, int64_t N,
                                      int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                      int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w);
ddl_status ddl_max_pool2d_backward_f64(double *dinp, const double *dout, const int64_t *indices,
                                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                                       int64_t KW, int64_t stride_h, int64_t stride_w,
                                       int64_t pad_h, int64_t pad_w);
ddl_status ddl_avg_pool2d_forward_f64(double *out, const double *inp, int64_t N, int64_t C,
                                      int64_t H, int64_t W, int64_t KH, int64_t KW,
                                      int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w);
ddl_status ddl_avg_pool2d_backward_f64(double *dinp, const double *dout, int64_t N, int64_t C,
                                       int64_t H, int64_t W, int64_t KH, int64_t KW,
                                       int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                       int64_t pad_w);
ddl_status ddl_adaptive_avg_pool2d_forward_f64(double *out, const double *inp, int64_t N, int64_t C,
                                               int64_t H, int64_t W, int64_t OH, int64_t OW);
ddl_status ddl_adaptive_avg_pool2d_backward_f64(double *dinp, const double *dout, int64_t N,
                                                int64_t C, int64_t H, int64_t W, int64_t OH,
                                                int64_t OW);

/* ---- linear ------------------------------------------------------------------------------ */

/* out = inp @ weight^T + bias (PyTorch's nn.Linear layout), one sgemm.
 *   out     (B, OUT)
 *   inp     (B, IN)
 *   weight  (OUT, IN)
 *   bias    (OUT,) or NULL */
ddl_status ddl_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int64_t B, int64_t IN, int64_t OUT);
/* Accumulates: dinp += dout @ weight, dweight += dout^T @ inp (sgemm, beta 1),
 * dbias += dout summed over B.
 *   dinp     (B, IN) or NULL
 *   dweight  (OUT, IN) or NULL
 *   dbias    (OUT,) or NULL
 *   dout     (B, OUT)
 *   inp      (B, IN)      needed for dweight, else may be NULL
 *   weight   (OUT, IN)    needed for dinp, else may be NULL */
ddl_status ddl_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int64_t B, int64_t IN,
                               int64_t OUT);

/* Test references: loops, no BLAS. */
ddl_status ddl_linear_forward_naive(float *out, const float *inp, const float *weight,
                                    const float *bias, int64_t B, int64_t IN, int64_t OUT);
ddl_status ddl_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *weight, int64_t B, int64_t IN,
                                     int64_t OUT);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_CONV_H */
