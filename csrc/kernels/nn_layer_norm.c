/* nn_layer_norm.c: per-row LayerNorm / RMSNorm kernels in float32 and float64, fwd+bwd. */
#include "ddl/nn_layer_norm.h"

#include "core/internal.h"

#include "kernels/common.h"

#include <math.h>

static ddl_status check_sizes(const char *who, int64_t M, int64_t N, ddl_row_norm_kind kind) {
    if (M < 0 || N < 0)
        DDL_FAIL(DDL_E_VALUE, "%s: sizes must be >= 0, got M=%lld, N=%lld", who, (ll)M, (ll)N);
    if (N > 0 && M > MAX_ELEMS / N)
        DDL_FAIL(DDL_E_VALUE, "%s: size %lld x %lld overflows", who, (ll)M, (ll)N);
    if ((unsigned)kind >= DDL_NUM_ROW_NORMS)
        DDL_FAIL(DDL_E_VALUE, "%s: unknown kind %d (0 layer, 1 rms)", who, (int)kind);
    return DDL_OK;
}

#define DEFINE_LAYER_NORM(T, SFX)                                                                  \
    ddl_status ddl_layer_norm_forward_##SFX(T *out, T *mean, T *rstd, const T *inp,                \
                                            const T *weight, const T *bias, int64_t M, int64_t N,  \
                                            double eps, ddl_row_norm_kind kind) {                  \
        const char *who = "layer_norm_forward";                                                    \
        DDL_TRY(check_sizes(who, M, N, kind));                                                     \
        DDL_TRY(check_buf(who, "out", out, M *N));                                                 \
        DDL_TRY(check_buf(who, "inp", inp, M *N));                                                 \
        if (!(eps >= 0)) DDL_FAIL(DDL_E_VALUE, "%s: eps must be >= 0, got %g", who, eps);          \
        const int rms = kind == DDL_ROW_NORM_RMS;                                                  \
        for (int64_t r = 0; r < M; r++) {                                                          \
            const T *x = inp + r * N; /* (N,) */                                                   \
            T *y = out + r * N;       /* (N,) */                                                   \
            double mu = 0.0, ss = 0.0;                                                             \
            if (!rms) {                                                                            \
                for (int64_t i = 0; i < N; i++) mu += x[i];                                        \
                mu = N ? mu / (double)N : 0.0;                                                     \
            }                                                                                      \
            for (int64_t i = 0; i < N; i++) {                                                      \
                double d = (double)x[i] - mu;                                                      \
                ss += d * d;                                                                       \
            }                                                                                      \
            double rs = 1.0 / sqrt((N ? ss / (double)N : 0.0) + eps);                              \
            if (mean) mean[r] = (T)mu;                                                             \
            if (rstd) rstd[r] = (T)rs;                                                             \
            for (int64_t i = 0; i < N; i++) {                                                      \
                T v = (T)(((double)x[i] - mu) * rs);                                               \
                if (weight) v = v * weight[i];                                                     \
                if (bias) v = v + bias[i];                                                         \
                y[i] = v;                                                                          \
            }                                                                                      \
        }                                                                                          \
        return DDL_OK;                                                                             \
    }                                                                                              \
                                                                                                   \
    ddl_status ddl_layer_norm_backward_##SFX(                                                      \
        T *dinp, T *dweight, T *dbias, const T *dout, const T *inp, const T *weight,               \
        const T *mean, const T *rstd, int64_t M, int64_t N, ddl_row_norm_kind kind) {              \
        const char *who = "layer_norm_backward";                                                   \
        DDL_TRY(check_sizes(who, M, N, kind));                                                     \
        if (dinp == NULL && dweight == NULL && dbias == NULL) return DDL_OK;                       \
        DDL_TRY(check_buf(who, "dout", dout, M *N));                                               \
        DDL_TRY(check_buf(who, "inp", inp, M *N));                                                 \
        DDL_TRY(check_buf(who, "mean", mean, M));                                                  \
        DDL_TRY(check_buf(who, "rstd", rstd, M));                                                  \
        const int rms = kind == DDL_ROW_NORM_RMS;                                                  \
        for (int64_t r = 0; r < M; r++) {                                                          \
            const T *x = inp + r * N, *dy = dout + r * N; /* (N,) */                               \
            double mu = rms ? 0.0 : (double)mean[r], rs = rstd[r];                                 \
            double sum_dxh = 0.0, sum_dxh_xh = 0.0;                                                \
            for (int64_t i = 0; i < N; i++) {                                                      \
                double xh = ((double)x[i] - mu) * rs;                                              \
                double dxh = weight ? (double)dy[i] * weight[i] : (double)dy[i];                   \
                sum_dxh += dxh;                                                                    \
                sum_dxh_xh += dxh * xh;                                                            \
                if (dweight) dweight[i] += (T)(dy[i] * xh);                                        \
                if (dbias) dbias[i] += dy[i];                                                      \
            }                                                                                      \
            if (dinp == NULL) continue;                                                            \
            T *dx = dinp + r * N; /* (N,) */                                                       \
            double m1 = rms ? 0.0 : sum_dxh / (double)N, m2 = sum_dxh_xh / (double)N;              \
            for (int64_t i = 0; i < N; i++) {                                                      \
                double xh = ((double)x[i] - mu) * rs;                                              \
                double dxh = weight ? (double)dy[i] * weight[i] : (double)dy[i];                   \
                dx[i] += (T)PLANT(rs * (dxh - m1 - xh * m2));                                      \
            }                                                                                      \
        }                                                                                          \
        return DDL_OK;                                                                             \
    }

DEFINE_LAYER_NORM(float, f32)
DEFINE_LAYER_NORM(double, f64)
