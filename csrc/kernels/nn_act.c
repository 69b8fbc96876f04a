/* nn_act.c: relu/leaky_relu/gelu/tanh/sigmoid kernels, embedding and mask dropout, fwd+bwd. */
#include "ddl/nn_act.h"

#include "core/internal.h"

#include "kernels/common.h"

#include <math.h>
#include <string.h>

static ddl_status check_n(const char *who, int64_t N) {
    if (N < 0) DDL_FAIL(DDL_E_VALUE, "%s: size must be >= 0, got %lld", who, (long long)N);
    return DDL_OK;
}

/* The checks every elementwise backward makes; *skip when the gradient is not needed. */
static ddl_status check_unary_backward(const char *who, const float *dinp, const float *dout,
                                       const float *saved, const char *saved_name, int64_t N) {
    DDL_TRY(check_n(who, N));
    if (dinp == NULL) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, N));
    return check_buf(who, saved_name, saved, N);
}

/* ---- relu ----------------------------------------------------------------------------------- */

ddl_status ddl_relu_backward(float *dinp, const float *dout, const float *out, int64_t N) {
    DDL_TRY(check_unary_backward("relu_backward", dinp, dout, out, "out", N));
    if (dinp == NULL) return DDL_OK;
    for (int64_t i = 0; i < N; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
    return DDL_OK;
}

/* ---- leaky_relu ----------------------------------------------------------------------------- */

ddl_status ddl_leaky_relu_forward(float *out, const float *inp, int64_t N, float negative_slope) {
    const char *who = "leaky_relu_forward";
    DDL_TRY(check_n(who, N));
    DDL_TRY(check_buf(who, "out", out, N));
    DDL_TRY(check_buf(who, "inp", inp, N));
    for (int64_t i = 0; i < N; i++) out[i] = inp[i] > 0.0f ? inp[i] : inp[i] * negative_slope;
    return DDL_OK;
}

ddl_status ddl_leaky_relu_backward(float *dinp, const float *dout, const float *inp, int64_t N,
                                   float negative_slope) {
    DDL_TRY(check_unary_backward("leaky_relu_backward", dinp, dout, inp, "inp", N));
    if (dinp == NULL) return DDL_OK;
    for (int64_t i = 0; i < N; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : dout[i] * negative_slope;
    return DDL_OK;
}

/* ---- gelu ----------------------------------------------------------------------------------- */

#define GELU_SQRT1_2 0.70710678118654752440f     /* 1/sqrt(2) */
#define GELU_INV_SQRT2PI 0.39894228040143267794f /* 1/sqrt(2 pi) */
#define GELU_SQRT_2_PI 0.79788456080286535588f   /* sqrt(2/pi) */
#define GELU_COEF 0.044715f

static ddl_status check_approx(const char *who, ddl_gelu_approximate a) {
    if (a != DDL_GELU_NONE && a != DDL_GELU_TANH)
        DDL_FAIL(DDL_E_VALUE, "%s: unknown approximate %d (0 none, 1 tanh)", who, (int)a);
    return DDL_OK;
}

/* Both forms are written without 1 + erf / 1 + tanh, which cancel for negative x:
 * Phi(x) = erfc(-x / sqrt 2) / 2, and 0.5 (1 + tanh(u)) = sigmoid(2u) (sigmoidf_ in
 * kernels/common.h). */

ddl_status ddl_gelu_forward(float *out, const float *inp, int64_t N,
                            ddl_gelu_approximate approximate) {
    const char *who = "gelu_forward";
    DDL_TRY(check_n(who, N));
    DDL_TRY(check_approx(who, approximate));
    DDL_TRY(check_buf(who, "out", out, N));
    DDL_TRY(check_buf(who, "inp", inp, N));
    if (approximate == DDL_GELU_TANH) {
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = x * sigmoidf_(2.0f * GELU_SQRT_2_PI * (x + GELU_COEF * x * x * x));
        }
    } else {
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = x * (0.5f * erfcf(-x * GELU_SQRT1_2));
        }
    }
    return DDL_OK;
}

ddl_status ddl_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t N,
                             ddl_gelu_approximate approximate) {
    const char *who = "gelu_backward";
    DDL_TRY(check_approx(who, approximate));
    DDL_TRY(check_unary_backward(who, dinp, dout, inp, "inp", N));
    if (dinp == NULL) return DDL_OK;
    if (approximate == DDL_GELU_TANH) {
        /* d/dx x s(2u) = s + 2 x s (1 - s) u',  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2) */
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i], x2 = x * x;
            float s = sigmoidf_(2.0f * GELU_SQRT_2_PI * (x + GELU_COEF * x2 * x));
            float du = GELU_SQRT_2_PI * (1.0f + 3.0f * GELU_COEF * x2);
            dinp[i] += dout[i] * (s + 2.0f * x * s * (1.0f - s) * du);
        }
    } else {
        /* d/dx x Phi(x) = Phi(x) + x phi(x) */
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float cdf = 0.5f * erfcf(-x * GELU_SQRT1_2);
            float pdf = GELU_INV_SQRT2PI * expf(-0.5f * x * x);
            dinp[i] += dout[i] * (cdf + x * pdf);
        }
    }
    return DDL_OK;
}

/* float64 GELU: the same formulas in double (erfc, a stable logistic). */
static inline double sigmoid_d(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

ddl_status ddl_gelu_forward_f64(double *out, const double *inp, int64_t N,
                                ddl_gelu_approximate approximate) {
    const char *who = "gelu_forward_f64";
    DDL_TRY(check_n(who, N));
    DDL_TRY(check_approx(who, approximate));
    DDL_TRY(check_buf(who, "out", out, N));
    DDL_TRY(check_buf(who, "inp", inp, N));
    const double c = 0.79788456080286535588, k = 0.044715;
    for (int64_t i = 0; i < N; i++) {
        double x = inp[i];
        out[i] = approximate == DDL_GELU_TANH ? x * sigmoid_d(2.0 * c * (x + k * x * x * x))
                                              : x * (0.5 * erfc(-x * 0.70710678118654752440));
    }
    return DDL_OK;
}

ddl_status ddl_gelu_backward_f64(double *dinp, const double *dout, const double *inp, int64_t N,
                                 ddl_gelu_approximate approximate) {
    const char *who = "gelu_backward_f64";
    DDL_TRY(check_n(who, N));
    DDL_TRY(check_approx(who, approximate));
    if (dinp == NULL) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, N));
    DDL_TRY(check_buf(who, "inp", inp, N));
    const double c = 0.79788456080286535588, k = 0.044715;
    for (int64_t i = 0; i < N; i++) {
        double x = inp[i], d;
        if (approximate == DDL_GELU_TANH) {
            double s = sigmoid_d(2.0 * c * (x + k * x * x * x));
            d = s + 2.0 * x * s * (1.0 - s) * c * (1.0 + 3.0 * k * x * x);
        } else {
            d = 0.5 * erfc(-x * 0.70710678118654752440) +
                x * 0.39894228040143267794 * exp(-0.5 * x * x);
        }
        dinp[i] += dout[i] * d;
    }
    return DDL_OK;
}

/* ---- tanh, sigmoid -------------------------------------------------------------------------- */

ddl_status ddl_tanh_backward(float *dinp, const float *dout, const float *out, int64_t N) {
    DDL_TRY(check_unary_backward("tanh_backward", dinp, dout, out, "out", N));
    if (dinp == NULL) return DDL_OK;
    for (int64_t i = 0; i < N; i++) dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
    return DDL_OK;
}

ddl_status ddl_sigmoid_backward(float *dinp, const float *dout, const float *out, int64_t N) {
    DDL_TRY(check_unary_backward("sigmoid_backward", dinp, dout, out, "out", N));
    if (dinp == NULL) return DDL_OK;
    for (int64_t i = 0; i < N; i++) dinp[i] += dout[i] * out[i] * (1.0f - out[i]);
    return DDL_OK;
}

/* ---- embedding ------------------------------------------------------------------------------ */

static ddl_status check_embedding(const char *who, const int64_t *indices, int64_t N, int64_t V,
                                  int64_t D) {
    if (N < 0 || V < 0 || D < 0)
        DDL_FAIL(DDL_E_VALUE, "%s: sizes must be >= 0, got N=%lld, V=%lld, D=%lld", who,
                 (long long)N, (long long)V, (long long)D);
    if (D > 0 && (N > INT64_MAX / D || V > INT64_MAX / D))
        DDL_FAIL(DDL_E_VALUE, "%s: sizes N=%lld, V=%lld, D=%lld overflow", who, (long long)N,
                 (long long)V, (long long)D);
    DDL_TRY(check_buf(who, "indices", indices, N));
    for (int64_t n = 0; n < N; n++)
        if (indices[n] < 0 || indices[n] >= V)
            DDL_FAIL(DDL_E_INDEX,
                     "embedding: index %lld at position %lld is out of range for %lld embeddings",
                     (long long)indices[n], (long long)n, (long long)V);
    return DDL_OK;
}

ddl_status ddl_embedding_forward(float *out, const float *weight, const int64_t *indices, int64_t N,
                                 int64_t V, int64_t D) {
    const char *who = "embedding_forward";
    DDL_TRY(check_embedding(who, indices, N, V, D));
    DDL_TRY(check_buf(who, "out", out, N * D));
    DDL_TRY(check_buf(who, "weight", weight, N > 0 ? V * D : 0));
    if (D == 0) return DDL_OK;
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * D, weight + indices[n] * D, (size_t)D * sizeof(float));
    return DDL_OK;
}

ddl_status ddl_embedding_backward(float *dweight, const float *dout, const int64_t *indices,
                                  int64_t N, int64_t V, int64_t D, int64_t padding_idx) {
    const char *who = "embedding_backward";
    DDL_TRY(check_embedding(who, indices, N, V, D));
    if (padding_idx >= V)
        DDL_FAIL(DDL_E_VALUE, "%s: padding_idx %lld is out of range for %lld embeddings", who,
                 (long long)padding_idx, (long long)V);
    if (dweight == NULL) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, N * D));
    for (int64_t n = 0; n < N; n++) {
        int64_t v = indices[n];
        if (padding_idx >= 0 && v == padding_idx) continue;
        float *dw = dweight + v * D;    // (D,)
        const float *dy = dout + n * D; // (D,)
        for (int64_t d = 0; d < D; d++) dw[d] += dy[d];
    }
    return DDL_OK;
}

/* float64: the same gather and scatter-add. */
ddl_status ddl_embedding_forward_f64(double *out, const double *weight, const int64_t *indices,
                                     int64_t N, int64_t V, int64_t D) {
    const char *who = "embedding_forward_f64";
    DDL_TRY(check_embedding(who, indices, N, V, D));
    DDL_TRY(check_buf(who, "out", out, N * D));
    DDL_TRY(check_buf(who, "weight", weight, N > 0 ? V * D : 0));
    if (D == 0) return DDL_OK;
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * D, weight + indices[n] * D, (size_t)D * sizeof(double));
    return DDL_OK;
}

ddl_status ddl_embedding_backward_f64(double *dweight, const double *dout, const int64_t *indices,
                                      int64_t N, int64_t V, int64_t D, int64_t padding_idx) {
    const char *who = "embedding_backward_f64";
    DDL_TRY(check_embedding(who, indices, N, V, D));
    if (padding_idx >= V)
        DDL_FAIL(DDL_E_VALUE, "%s: padding_idx %lld is out of range for %lld embeddings", who,
                 (long long)padding_idx, (long long)V);
    if (dweight == NULL) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, N * D));
    for (int64_t n = 0; n < N; n++) {
        int64_t v = indices[n];
        if (padding_idx >= 0 && v == padding_idx) continue;
        double *dw = dweight + v * D;    // (D,)
        const double *dy = dout + n * D; // (D,)
        for (int64_t d = 0; d < D; d++) dw[d] += dy[d];
    }
    return DDL_OK;
}

/* ---- dropout -------------------------------------------------------------------------------- */

static ddl_status check_dropout(const char *who, int64_t N, float p, float *scale) {
    DDL_TRY(check_n(who, N));
    if (!(p >= 0.0f && p <= 1.0f))
        DDL_FAIL(DDL_E_VALUE, "%s: dropout probability must be in [0, 1], got %g", who, (double)p);
    *scale = p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
    return DDL_OK;
}

ddl_status ddl_dropout_forward(float *out, const float *inp, const uint8_t *mask, int64_t N,
                               float p) {
    const char *who = "dropout_forward";
    float scale;
    DDL_TRY(check_dropout(who, N, p, &scale));
    DDL_TRY(check_buf(who, "out", out, N));
    DDL_TRY(check_buf(who, "inp", inp, N));
    DDL_TRY(check_buf(who, "mask", mask, N));
    for (int64_t i = 0; i < N; i++) out[i] = mask[i] ? inp[i] * scale : 0.0f;
    return DDL_OK;
}

ddl_status ddl_dropout_backward(float *dinp, const float *dout, const uint8_t *mask, int64_t N,
                                float p) {
    const char *who = "dropout_backward";
    float scale;
    DDL_TRY(check_dropout(who, N, p, &scale));
    if (dinp == NULL) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, N));
    DDL_TRY(check_buf(who, "mask", mask, N));
    for (int64_t i = 0; i < N; i++) dinp[i] += mask[i] ? dout[i] * scale : 0.0f;
    return DDL_OK;
}
