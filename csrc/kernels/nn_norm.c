/* nn_norm.c: float32 batch normalization (forward, backward) over an (N, C, S) layout, its
 * channels split over ddl's threads. */
#include "ddl/nn_norm.h"

#include "core/internal.h"

#include "kernels/common.h"

#include <math.h>

/* Channels handled together. The rows (n, c0..c0+CB-1, :) of a block are one contiguous run of
 * memory, so walking n outer and the block's channels inner streams through the tensor for
 * any S, including S = 1 (BatchNorm1d on (N, C)), where channel-outer order would touch a new
 * cache line per element. Per-channel accumulators for a block live on the stack. */
#define CB 64

/* sum((x - mean)^2) */
static inline double row_sqdev(const float *x, int64_t S, double mean) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0.0;
    int64_t s = 0;
    for (; s + 8 <= S; s += 8)
        for (int j = 0; j < 8; j++) {
            double d = x[s + j] - mean;
            a[j] += d * d;
        }
    for (; s < S; s++) t += (x[s] - mean) * (x[s] - mean);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + t;
}

/* sum(dy * (x - mean)) */
static inline double row_dot_dev(const float *dy, const float *x, int64_t S, double mean) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0.0;
    int64_t s = 0;
    for (; s + 8 <= S; s += 8)
        for (int j = 0; j < 8; j++) a[j] += dy[s + j] * (x[s + j] - mean);
    for (; s < S; s++) t += dy[s] * (x[s] - mean);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + t;
}

/* y = (x - m) * a + b over a row. Subtracting the mean first (rather than folding it into b,
 * as PyTorch does) keeps the result accurate when |mean| >> std. */
static inline void row_affine(float *y, const float *x, int64_t S, float m, float a, float b) {
    for (int64_t s = 0; s < S; s++) y[s] = (x[s] - m) * a + b;
}

/* Sizes of an (N, C, S) input; `batch_stats`: the call computes (or differentiates) batch
 * statistics, which need more than one value per channel. */
static ddl_status bn_sizes(const char *who, int64_t N, int64_t C, int64_t S, int batch_stats) {
    if (N < 1 || C < 1 || S < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (N, C, S) = (%lld, %lld, %lld) must have "
                 "positive sizes",
                 who, (ll)N, (ll)C, (ll)S);
    int64_t t;
    if (!prod4(&t, N, C, S, 1))
        DDL_FAIL(DDL_E_VALUE, "%s: input (%lld, %lld, %lld) is too large", who, (ll)N, (ll)C,
                 (ll)S);
    if (batch_stats && N * S < 2)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: expected more than 1 value per channel when training, got input "
                 "(N, C, S) = (%lld, %lld, %lld)",
                 who, (ll)N, (ll)C, (ll)S);
    return DDL_OK;
}

/* One call's arguments, shared by the threads that split its channels. */
typedef struct {
    float *out, *save_mean, *save_invstd, *running_mean, *running_var, *dinp, *dweight, *dbias;
    const float *inp, *weight, *bias, *dout, *csave_mean, *csave_invstd;
    int64_t N, C, S;
    int training, need_dy, need_dev;
    double momentum, eps;
} bn_args;

/* Threads for an (N, C, S) batch norm: one per 2^16 values, at most one per channel. */
static int bn_threads(int64_t N, int64_t C, int64_t S) {
    int64_t t = N * C * S >> 16;
    if (t > C) t = C;
    return t < 1 ? 1 : (int)(t > 64 ? 64 : t);
}

/* The forward over channels [lo, hi): each channel's statistics and outputs depend on that
 * channel alone, so any split gives the same bits. */
static void bn_forward_range(const bn_args *A, int64_t lo, int64_t hi) {
    float *out = A->out, *save_mean = A->save_mean, *save_invstd = A->save_invstd;
    float *running_mean = A->running_mean, *running_var = A->running_var;
    const float *inp = A->inp, *weight = A->weight, *bias = A->bias;
    const int64_t N = A->N, C = A->C, S = A->S, M = N * S; /* M: values per channel */
    const int training = A->training;
    const double momentum = A->momentum, eps = A->eps;
    double mean[CB], invstd[CB];
    float fmean[CB], scale[CB], shift[CB];
    for (int64_t c0 = lo; c0 < hi; c0 += CB) {
        const int64_t nb = hi - c0 < CB ? hi - c0 : CB;
        if (training) {
            double acc[CB];
            for (int64_t j = 0; j < nb; j++) acc[j] = 0.0;
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + (n * C + c0) * S; // (nb, S)
                if (S == 1) /* (N, C): vectorize across channels instead */
                    for (int64_t j = 0; j < nb; j++) acc[j] += x[j];
                else
                    for (int64_t j = 0; j < nb; j++) acc[j] += sum_f32(x + j * S, S);
            }
            for (int64_t j = 0; j < nb; j++) mean[j] = acc[j] / (double)M, acc[j] = 0.0;
            /* Two passes (mean, then centered squares): no cancellation when |mean| >> std. */
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + (n * C + c0) * S; // (nb, S)
                if (S == 1)
                    for (int64_t j = 0; j < nb; j++) acc[j] += (x[j] - mean[j]) * (x[j] - mean[j]);
                else
                    for (int64_t j = 0; j < nb; j++) acc[j] += row_sqdev(x + j * S, S, mean[j]);
            }
            for (int64_t j = 0; j < nb; j++) {
                const int64_t c = c0 + j;
                invstd[j] = 1.0 / sqrt(acc[j] / (double)M + eps);
                if (running_mean) {
                    running_mean[c] =
                        (float)(momentum * mean[j] + (1.0 - momentum) * running_mean[c]);
                    running_var[c] = (float)(momentum * (acc[j] / (double)(M - 1)) +
                                             (1.0 - momentum) * running_var[c]);
                }
            }
        } else {
            for (int64_t j = 0; j < nb; j++) {
                mean[j] = running_mean[c0 + j];
                invstd[j] = 1.0 / sqrt((double)running_var[c0 + j] + eps);
            }
        }
        for (int64_t j = 0; j < nb; j++) {
            const int64_t c = c0 + j;
            if (save_mean) save_mean[c] = (float)mean[j];
            if (save_invstd) save_invstd[c] = (float)invstd[j];
            fmean[j] = (float)mean[j];
            scale[j] = (float)(invstd[j] * (weight ? weight[c] : 1.0));
            shift[j] = bias ? bias[c] : 0.0f;
        }
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + (n * C + c0) * S; // (nb, S)
            float *y = out + (n * C + c0) * S;       // (nb, S)
            if (S == 1) {
                for (int64_t j = 0; j < nb; j++) y[j] = (x[j] - fmean[j]) * scale[j] + shift[j];
                continue;
            }
            for (int64_t j = 0; j < nb; j++)
                row_affine(y + j * S, x + j * S, S, fmean[j], scale[j], shift[j]);
        }
    }
}

static void bn_forward_worker(void *p, int tid, int nt) {
    const bn_args *A = p;
    bn_forward_range(A, A->C * tid / nt, A->C * (tid + 1) / nt);
}

ddl_status ddl_batchnorm_forward(float *out, float *save_mean, float *save_invstd,
                                 float *running_mean, float *running_var, const float *inp,
                                 const float *weight, const float *bias, int64_t N, int64_t C,
                                 int64_t S, int training, double momentum, double eps) {
    // out (N, C, S), save_mean (C,), save_invstd (C,), running_mean (C,), running_var (C,),
    // inp (N, C, S), weight (C,), bias (C,)
    DDL_TRY(bn_sizes("batch_norm", N, C, S, training));
    if (!out || !inp) DDL_FAIL(DDL_E_VALUE, "batch_norm: out and inp must not be NULL");
    if (!running_mean != !running_var)
        DDL_FAIL(DDL_E_VALUE,
                 "batch_norm: running_mean and running_var must both be given or both NULL");
    if (!training && !running_mean)
        DDL_FAIL(DDL_E_VALUE, "batch_norm: eval mode needs running_mean and running_var");
    if (!(eps >= 0.0) || isinf(eps))
        DDL_FAIL(DDL_E_VALUE, "batch_norm: eps must be finite and >= 0, got %g", eps);
    if (!isfinite(momentum))
        DDL_FAIL(DDL_E_VALUE, "batch_norm: momentum must be finite, got %g", momentum);
    bn_args A = {.out = out,
                 .save_mean = save_mean,
                 .save_invstd = save_invstd,
                 .running_mean = running_mean,
                 .running_var = running_var,
                 .inp = inp,
                 .weight = weight,
                 .bias = bias,
                 .N = N,
                 .C = C,
                 .S = S,
                 .training = training,
                 .momentum = momentum,
                 .eps = eps};
    ddl_parallel_run(bn_threads(N, C, S), bn_forward_worker, &A);
    return DDL_OK;
}

/* The backward over channels [lo, hi) (each channel's sums are its own, as in forward). */
static void bn_backward_range(const bn_args *A, int64_t lo, int64_t hi) {
    float *dinp = A->dinp, *dweight = A->dweight, *dbias = A->dbias;
    const float *dout = A->dout, *inp = A->inp, *weight = A->weight;
    const float *save_mean = A->csave_mean, *save_invstd = A->csave_invstd;
    const int64_t N = A->N, C = A->C, S = A->S, M = N * S;
    const int training = A->training, need_dy = A->need_dy, need_dev = A->need_dev;
    double sdy[CB], sdev[CB];
    float ka[CB], kx[CB], kb[CB];
    for (int64_t c0 = lo; c0 < hi; c0 += CB) {
        const int64_t nb = hi - c0 < CB ? hi - c0 : CB;
        for (int64_t j = 0; j < nb; j++) sdy[j] = 0.0, sdev[j] = 0.0;
        if (need_dy || need_dev)
            for (int64_t n = 0; n < N; n++) {
                const float *dy = dout + (n * C + c0) * S; // (nb, S)
                const float *x = need_dev ? inp + (n * C + c0) * S : NULL;
                if (S == 1) { /* (N, C): vectorize across channels instead */
                    if (need_dy)
                        for (int64_t j = 0; j < nb; j++) sdy[j] += dy[j];
                    if (need_dev)
                        for (int64_t j = 0; j < nb; j++)
                            sdev[j] += dy[j] * (x[j] - (double)save_mean[c0 + j]);
                    continue;
                }
                for (int64_t j = 0; j < nb; j++) {
                    if (need_dy) sdy[j] += sum_f32(dy + j * S, S);
                    if (need_dev)
                        sdev[j] += row_dot_dev(dy + j * S, x + j * S, S, save_mean[c0 + j]);
                }
            }
        for (int64_t j = 0; j < nb; j++) {
            const int64_t c = c0 + j;
            if (dbias) dbias[c] += (float)sdy[j];
            if (dweight) dweight[c] += (float)(sdev[j] * save_invstd[c]);
        }
        if (!dinp) continue;
        /* dinp += ka * dy + kx * (x - mean) + kb, the standard formula with its per-channel
         * constants folded: k = w * invstd; ka = k; kx = -k * invstd^2 * sdev / M;
         * kb = -k * sdy / M. In eval only ka is non-zero. */
        for (int64_t j = 0; j < nb; j++) {
            const int64_t c = c0 + j;
            double is = save_invstd[c], k = is * (weight ? weight[c] : 1.0);
            ka[j] = (float)k;
            kx[j] = training ? (float)(-k * is * is * sdev[j] / (double)M) : 0.0f;
            kb[j] = training ? (float)(-k * sdy[j] / (double)M) : 0.0f;
        }
        for (int64_t n = 0; n < N; n++) {
            const float *dy = dout + (n * C + c0) * S; // (nb, S)
            float *dx = dinp + (n * C + c0) * S;       // (nb, S)
            if (training && S == 1) {
                const float *x = inp + n * C + c0; // (nb,)
                for (int64_t j = 0; j < nb; j++)
                    dx[j] += ka[j] * dy[j] + kx[j] * (x[j] - save_mean[c0 + j]) + kb[j];
            } else if (training) {
                const float *x = inp + (n * C + c0) * S; // (nb, S)
                for (int64_t j = 0; j < nb; j++) {
                    const float a = ka[j], xx = kx[j], b = kb[j], m = save_mean[c0 + j];
                    const float *dyr = dy + j * S, *xr = x + j * S;
                    float *dxr = dx + j * S;
                    for (int64_t s = 0; s < S; s++) dxr[s] += a * dyr[s] + xx * (xr[s] - m) + b;
                }
            } else {
                for (int64_t j = 0; j < nb; j++) {
                    const float a = ka[j];
                    const float *dyr = dy + j * S;
                    float *dxr = dx + j * S;
                    for (int64_t s = 0; s < S; s++) dxr[s] += a * dyr[s];
                }
            }
        }
    }
}

static void bn_backward_worker(void *p, int tid, int nt) {
    const bn_args *A = p;
    bn_backward_range(A, A->C * tid / nt, A->C * (tid + 1) / nt);
}

ddl_status ddl_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, const float *save_mean,
                                  const float *save_invstd, int64_t N, int64_t C, int64_t S,
                                  int training) {
    // dinp (N, C, S), dweight (C,), dbias (C,), dout (N, C, S), inp (N, C, S), weight (C,),
    // save_mean (C,), save_invstd (C,)
    DDL_TRY(bn_sizes("batch_norm_backward", N, C, S, training && dinp));
    if (!dout) DDL_FAIL(DDL_E_VALUE, "batch_norm_backward: dout must not be NULL");
    const int need_dy = dbias || (training && dinp);    /* sum(dout) */
    const int need_dev = dweight || (training && dinp); /* sum(dout * (x - mean)) */
    if (need_dev && !inp) DDL_FAIL(DDL_E_VALUE, "batch_norm_backward: inp must not be NULL");
    if ((need_dev || dinp) && (!save_mean || !save_invstd))
        DDL_FAIL(DDL_E_VALUE, "batch_norm_backward: save_mean and save_invstd must not be NULL");
    bn_args A = {.dinp = dinp,
                 .dweight = dweight,
                 .dbias = dbias,
                 .dout = dout,
                 .inp = inp,
                 .weight = weight,
                 .csave_mean = save_mean,
                 .csave_invstd = save_invstd,
                 .N = N,
                 .C = C,
                 .S = S,
                 .training = training,
                 .need_dy = need_dy,
                 .need_dev = need_dev};
    ddl_parallel_run(bn_threads(N, C, S), bn_backward_worker, &A);
    return DDL_OK;
}
