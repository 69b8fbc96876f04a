/* nn_rnn.c: one-step RNN/LSTM/GRU cells (PyTorch layouts) over a batch via sgemm, fwd+bwd. */
#include "ddl/nn_rnn.h"

#include "core/blas.h"
#include "core/internal.h"

#include "kernels/common.h"

#include "core/vmath.h"
#include <limits.h>
#include <math.h>
#include <stdlib.h>
/* The gate nonlinearities of one batch row, vectorized (vmath.h's float32 sigmoid/tanh) and
 * compiled for AVX-512, AVX2 and baseline x86-64; the CPU picks one at load. */
#define XKERNEL                                                                                    \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),                   \
                   optimize("no-trapping-math")))

XKERNEL static void lstm_row(float *restrict q, const float *restrict bsum,
                             const float *restrict cp, float *restrict hn, float *restrict cn,
                             int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        float i = vm_sigmoid_f32(q[j] + bsum[j]);
        float f = vm_sigmoid_f32(q[H + j] + bsum[H + j]);
        float g = vm_tanh_f32(q[2 * H + j] + bsum[2 * H + j]);
        float o = vm_sigmoid_f32(q[3 * H + j] + bsum[3 * H + j]);
        float cc = f * cp[j] + i * g;
        float tc = vm_tanh_f32(cc);
        q[j] = i;
        q[H + j] = f;
        q[2 * H + j] = g;
        q[3 * H + j] = o;
        q[4 * H + j] = tc;
        cn[j] = cc;
        hn[j] = o * tc;
    }
}

/* ---- helpers -------------------------------------------------------------------------------- */

/* C (M, N) = op(A) @ op(B) + beta * C, row-major, op(A) (M, K) and op(B) (K, N), transposed
 * when ta/tb. beta is 0 or 1; with beta 0, C is not read. Empty dims never reach OpenBLAS (its
 * argument checker prints on a zero leading dimension). `naive`: plain loops summing in
 * double, the reference for tests. */
static void gemm(int naive, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (naive || K == 0) {
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < N; j++) {
                double s = 0.0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                         (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
                C[i * ldc + j] = beta != 0.0f ? (float)(s + C[i * ldc + j]) : (float)s;
            }
        }
        return;
    }
    ddl_gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* db (n,) += column sums of m (rows, n) with row stride ld, summed in double by blocks of
 * columns so the rows are read in order. */
static void colsum_acc(float *db, const float *m, int64_t rows, int64_t n, int64_t ld) {
    enum { BLK = 64 };
    double acc[BLK];
    for (int64_t j0 = 0; j0 < n; j0 += BLK) {
        int64_t nb = n - j0 < BLK ? n - j0 : BLK;
        for (int64_t j = 0; j < nb; j++) acc[j] = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const float *row = m + r * ld + j0;
            for (int64_t j = 0; j < nb; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < nb; j++) db[j0 + j] += (float)acc[j];
    }
}

static inline float bias_at(const float *b, int64_t k) { return b ? b[k] : 0.0f; }

/* Sizes: B, Din >= 0, H >= 1, and the gemm dims (B, Din, W*H) fit a blasint, where W is the
 * widest per-row buffer (cache or scratch) in units of H. */
static ddl_status check_sizes(const char *who, int64_t B, int64_t Din, int64_t H, int64_t W) {
    if (B < 0 || Din < 0 || H < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: need batch B >= 0, input size Din >= 0 and hidden size H >= 1, got B=%lld, "
                 "Din=%lld, H=%lld",
                 who, (long long)B, (long long)Din, (long long)H);
    if (B > INT_MAX || Din > INT_MAX || H > INT_MAX / W)
        DDL_FAIL(DDL_E_VALUE, "%s: B=%lld, Din=%lld or %lld*H (H=%lld) exceeds BLAS's limit %d",
                 who, (long long)B, (long long)Din, (long long)W, (long long)H, INT_MAX);
    if (B > 0 && (W * H > INT64_MAX / B || Din > INT64_MAX / B))
        DDL_FAIL(DDL_E_VALUE, "%s: sizes B=%lld, Din=%lld, H=%lld overflow", who, (long long)B,
                 (long long)Din, (long long)H);
    return DDL_OK;
}

/* What every cell call checks: the sizes (W as in check_sizes) and the buffers it reads, x, h
 * and the two weight matrices (G gates). */
static ddl_status check_cell(const char *who, const float *x, const float *h, const float *w_ih,
                             const float *w_hh, int64_t B, int64_t Din, int64_t H, int64_t G,
                             int64_t W) {
    DDL_TRY(check_sizes(who, B, Din, H, W));
    DDL_TRY(check_buf(who, "x", x, B * Din));
    DDL_TRY(check_buf(who, "h", h, B * H));
    DDL_TRY(check_buf(who, "w_ih", w_ih, G * H * Din));
    return check_buf(who, "w_hh", w_hh, G * H * H);
}

static ddl_status check_nonlinearity(const char *who, ddl_rnn_nonlinearity nl) {
    if (nl != DDL_RNN_TANH && nl != DDL_RNN_RELU)
        DDL_FAIL(DDL_E_VALUE, "%s: unknown nonlinearity %d (0 tanh, 1 relu)", who, (int)nl);
    return DDL_OK;
}

/* check_cell for the plain RNN cell, and its nonlinearity. */
static ddl_status check_rnn_cell(const char *who, const float *x, const float *h, const float *w_ih,
                                 const float *w_hh, int64_t B, int64_t Din, int64_t H,
                                 ddl_rnn_nonlinearity nl) {
    DDL_TRY(check_cell(who, x, h, w_ih, w_hh, B, Din, H, 1, 1));
    return check_nonlinearity(who, nl);
}

/* Floats for a (B, W*H) buffer, -1 when the sizes are negative or overflow. */
static int64_t buffer_floats(int64_t B, int64_t H, int64_t W) {
    if (B < 0 || H < 0 || H > INT64_MAX / W) return -1;
    if (B > 0 && W * H > INT64_MAX / B) return -1;
    return B * W * H;
}

/* The backward's weight-side products for one gate block layout: with dA (B, G*H) of row
 * stride ld_a (and dB for the hidden side, row stride ld_b; the same as dA for RNN/LSTM):
 *     dx += dA @ W_ih,  dh += dB @ W_hh,  dW_ih += dA^T @ x,  dW_hh += dB^T @ h,
 *     db_ih += colsum(dA),  db_hh += colsum(dB). */
static void weight_side_backward(int naive, float *dx, float *dh, float *dw_ih, float *dw_hh,
                                 float *db_ih, float *db_hh, const float *dA, int64_t ld_a,
                                 const float *dB, int64_t ld_b, const float *x, const float *h,
                                 const float *w_ih, const float *w_hh, int64_t B, int64_t Din,
                                 int64_t GH, int64_t H) {
    if (dx) gemm(naive, 0, 0, B, Din, GH, dA, ld_a, w_ih, Din, 1.0f, dx, Din);
    if (dh) gemm(naive, 0, 0, B, H, GH, dB, ld_b, w_hh, H, 1.0f, dh, H);
    if (dw_ih) gemm(naive, 1, 0, GH, Din, B, dA, ld_a, x, Din, 1.0f, dw_ih, Din);
    if (dw_hh) gemm(naive, 1, 0, GH, H, B, dB, ld_b, h, H, 1.0f, dw_hh, H);
    if (db_ih) colsum_acc(db_ih, dA, B, GH, ld_a);
    if (db_hh) colsum_acc(db_hh, dB, B, GH, ld_b);
}

/* ---- RNN cell ------------------------------------------------------------------------------- */

int64_t ddl_rnn_cell_cache_floats(int64_t B, int64_t H) { return buffer_floats(B, H, 1); }
int64_t ddl_rnn_cell_scratch_floats(int64_t B, int64_t H) { return buffer_floats(B, H, 1); }

static ddl_status rnn_forward(int naive, float *h_new, float *cache, const float *x, const float *h,
                              const float *w_ih, const float *w_hh, const float *b_ih,
                              const float *b_hh, int64_t B, int64_t Din, int64_t H,
                              ddl_rnn_nonlinearity nl) {
    const char *who = naive ? "rnn_cell_forward_naive" : "rnn_cell_forward";
    DDL_TRY(check_rnn_cell(who, x, h, w_ih, w_hh, B, Din, H, nl));
    DDL_TRY(check_buf(who, "h_new", h_new, B * H));
    DDL_TRY(check_buf(who, "cache", cache, B * H));
    // cache (B, H) = x @ W_ih^T + h @ W_hh^T, then the activation in place
    gemm(naive, 0, 1, B, H, Din, x, Din, w_ih, Din, 0.0f, cache, H);
    gemm(naive, 0, 1, B, H, H, h, H, w_hh, H, 1.0f, cache, H);
    for (int64_t b = 0; b < B; b++) {
        float *a = cache + b * H; // (H,)
        float *y = h_new + b * H; // (H,)
        for (int64_t j = 0; j < H; j++) {
            float v = a[j] + bias_at(b_ih, j) + bias_at(b_hh, j);
            v = nl == DDL_RNN_TANH ? tanhf(v) : (v > 0.0f ? v : 0.0f);
            a[j] = v;
            y[j] = v;
        }
    }
    return DDL_OK;
}

static ddl_status rnn_backward(int naive, float *dx, float *dh, float *dw_ih, float *dw_hh,
                               float *db_ih, float *db_hh, float *scratch, const float *dh_new,
                               const float *cache, const float *x, const float *h,
                               const float *w_ih, const float *w_hh, int64_t B, int64_t Din,
                               int64_t H, ddl_rnn_nonlinearity nl) {
    const char *who = naive ? "rnn_cell_backward_naive" : "rnn_cell_backward";
    DDL_TRY(check_rnn_cell(who, x, h, w_ih, w_hh, B, Din, H, nl));
    DDL_TRY(check_buf(who, "cache", cache, B * H));
    DDL_TRY(check_buf(who, "scratch", scratch, B * H));
    if (dh_new == NULL) return DDL_OK; /* zero incoming gradient: nothing to add */
    // scratch (B, H): gradient of the pre-activation
    for (int64_t i = 0; i < B * H; i++) {
        float y = cache[i];
        scratch[i] = dh_new[i] * (nl == DDL_RNN_TANH ? 1.0f - y * y : (y > 0.0f ? 1.0f : 0.0f));
    }
    weight_side_backward(naive, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, H, scratch, H, x, h,
                         w_ih, w_hh, B, Din, H, H);
    return DDL_OK;
}

ddl_status ddl_rnn_cell_forward(float *h_new, float *cache, const float *x, const float *h,
                                const float *w_ih, const float *w_hh, const float *b_ih,
                                const float *b_hh, int64_t B, int64_t Din, int64_t H,
                                ddl_rnn_nonlinearity nonlinearity) {
    return rnn_forward(0, h_new, cache, x, h, w_ih, w_hh, b_ih, b_hh, B, Din, H, nonlinearity);
}

ddl_status ddl_rnn_cell_backward(float *dx, float *dh, float *dw_ih, float *dw_hh, float *db_ih,
                                 float *db_hh, float *scratch, const float *dh_new,
                                 const float *cache, const float *x, const float *h,
                                 const float *w_ih, const float *w_hh, int64_t B, int64_t Din,
                                 int64_t H, ddl_rnn_nonlinearity nonlinearity) {
    return rnn_backward(0, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, dh_new, cache, x, h, w_ih,
                        w_hh, B, Din, H, nonlinearity);
}

ddl_status ddl_rnn_cell_forward_naive(float *h_new, float *cache, const float *x, const float *h,
                                      const float *w_ih, const float *w_hh, const float *b_ih,
                                      const float *b_hh, int64_t B, int64_t Din, int64_t H,
                                      ddl_rnn_nonlinearity nonlinearity) {
    return rnn_forward(1, h_new, cache, x, h, w_ih, w_hh, b_ih, b_hh, B, Din, H, nonlinearity);
}

ddl_status ddl_rnn_cell_backward_naive(float *dx, float *dh, float *dw_ih, float *dw_hh,
                                       float *db_ih, float *db_hh, float *scratch,
                                       const float *dh_new, const float *cache, const float *x,
                                       const float *h, const float *w_ih, const float *w_hh,
                                       int64_t B, int64_t Din, int64_t H,
                                       ddl_rnn_nonlinearity nonlinearity) {
    return rnn_backward(1, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, dh_new, cache, x, h, w_ih,
                        w_hh, B, Din, H, nonlinearity);
}

/* ---- LSTM cell ------------------------------------------------------------------------------ */

int64_t ddl_lstm_cell_cache_floats(int64_t B, int64_t H) { return buffer_floats(B, H, 5); }
int64_t ddl_lstm_cell_scratch_floats(int64_t B, int64_t H) { return buffer_floats(B, H, 4); }

static ddl_status lstm_forward(int naive, float *h_new, float *c_new, float *cache, const float *x,
                               const float *h, const float *c, const float *w_ih, const float *w_hh,
                               const float *b_ih, const float *b_hh, int64_t B, int64_t Din,
                               int64_t H) {
    const char *who = naive ? "lstm_cell_forward_naive" : "lstm_cell_forward";
    DDL_TRY(check_cell(who, x, h, w_ih, w_hh, B, Din, H, 4, 5));
    DDL_TRY(check_buf(who, "c", c, B * H));
    DDL_TRY(check_buf(who, "h_new", h_new, B * H));
    DDL_TRY(check_buf(who, "c_new", c_new, B * H));
    DDL_TRY(check_buf(who, "cache", cache, B * 5 * H));
    const int64_t G = 4 * H, W = 5 * H;
    // cache[:, :4H] (B, 4H) = x @ W_ih^T + h @ W_hh^T (row stride 5H)
    gemm(naive, 0, 1, B, G, Din, x, Din, w_ih, Din, 0.0f, cache, W);
    gemm(naive, 0, 1, B, G, H, h, H, w_hh, H, 1.0f, cache, W);
    float *bsum = naive ? NULL : malloc(sizeof(float) * (size_t)G);
    if (bsum) { /* the fast path; without memory for the bias sum, the plain loop below */
        for (int64_t k = 0; k < G; k++) bsum[k] = bias_at(b_ih, k) + bias_at(b_hh, k);
        for (int64_t b = 0; b < B; b++)
            lstm_row(cache + b * W, bsum, c + b * H, h_new + b * H, c_new + b * H, H);
        free(bsum);
        return DDL_OK;
    }
    for (int64_t b = 0; b < B; b++) {
        float *q = cache + b * W;    // (5H,) [i f g o tanh(c')]
        const float *cp = c + b * H; // (H,)
        float *hn = h_new + b * H;   // (H,)
        float *cn = c_new + b * H;   // (H,)
        for (int64_t j = 0; j < H; j++) {
            float ai = q[j] + bias_at(b_ih, j) + bias_at(b_hh, j);
            float af = q[H + j] + bias_at(b_ih, H + j) + bias_at(b_hh, H + j);
            float ag = q[2 * H + j] + bias_at(b_ih, 2 * H + j) + bias_at(b_hh, 2 * H + j);
            float ao = q[3 * H + j] + bias_at(b_ih, 3 * H + j) + bias_at(b_hh, 3 * H + j);
            float i = sigmoidf_(ai), f = sigmoidf_(af), g = tanhf(ag), o = sigmoidf_(ao);
            float cc = f * cp[j] + i * g;
            float tc = tanhf(cc);
            q[j] = i;
            q[H + j] = f;
            q[2 * H + j] = g;
            q[3 * H + j] = o;
            q[4 * H + j] = tc;
            cn[j] = cc;
            hn[j] = o * tc;
        }
    }
    return DDL_OK;
}

static ddl_status lstm_backward(int naive, float *dx, float *dh, float *dc, float *dw_ih,
                                float *dw_hh, float *db_ih, float *db_hh, float *scratch,
                                const float *dh_new, const float *dc_new, const float *cache,
                                const float *x, const float *h, const float *c, const float *w_ih,
                                const float *w_hh, int64_t B, int64_t Din, int64_t H) {
    const char *who = naive ? "lstm_cell_backward_naive" : "lstm_cell_backward";
    DDL_TRY(check_cell(who, x, h, w_ih, w_hh, B, Din, H, 4, 5));
    DDL_TRY(check_buf(who, "c", c, B * H));
    DDL_TRY(check_buf(who, "cache", cache, B * 5 * H));
    DDL_TRY(check_buf(who, "scratch", scratch, B * 4 * H));
    if (dh_new == NULL && dc_new == NULL) return DDL_OK;
    const int64_t G = 4 * H, W = 5 * H;
    // scratch (B, 4H): gradients of the gate pre-activations [i f g o]
    for (int64_t b = 0; b < B; b++) {
        const float *q = cache + b * W; // (5H,)
        const float *cp = c + b * H;    // (H,)
        float *s = scratch + b * G;     // (4H,)
        for (int64_t j = 0; j < H; j++) {
            float i = q[j], f = q[H + j], g = q[2 * H + j], o = q[3 * H + j], tc = q[4 * H + j];
            float dhn = dh_new ? dh_new[b * H + j] : 0.0f;
            float dcn = dc_new ? dc_new[b * H + j] : 0.0f;
            float dct = dcn + dhn * o * (1.0f - tc * tc); /* total gradient of c' */
            s[j] = dct * g * i * (1.0f - i);
            s[H + j] = dct * cp[j] * f * (1.0f - f);
            s[2 * H + j] = dct * i * (1.0f - g * g);
            s[3 * H + j] = dhn * tc * o * (1.0f - o);
            if (dc) dc[b * H + j] += dct * f;
        }
    }
    weight_side_backward(naive, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, G, scratch, G, x, h,
                         w_ih, w_hh, B, Din, G, H);
    return DDL_OK;
}

ddl_status ddl_lstm_cell_forward(float *h_new, float *c_new, float *cache, const float *x,
                                 const float *h, const float *c, const float *w_ih,
                                 const float *w_hh, const float *b_ih, const float *b_hh, int64_t B,
                                 int64_t Din, int64_t H) {
    return lstm_forward(0, h_new, c_new, cache, x, h, c, w_ih, w_hh, b_ih, b_hh, B, Din, H);
}

ddl_status ddl_lstm_cell_backward(float *dx, float *dh, float *dc, float *dw_ih, float *dw_hh,
                                  float *db_ih, float *db_hh, float *scratch, const float *dh_new,
                                  const float *dc_new, const float *cache, const float *x,
                                  const float *h, const float *c, const float *w_ih,
                                  const float *w_hh, int64_t B, int64_t Din, int64_t H) {
    return lstm_backward(0, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, scratch, dh_new, dc_new, cache,
                         x, h, c, w_ih, w_hh, B, Din, H);
}

ddl_status ddl_lstm_cell_forward_naive(float *h_new, float *c_new, float *cache, const float *x,
                                       const float *h, const float *c, const float *w_ih,
                                       const float *w_hh, const float *b_ih, const float *b_hh,
                                       int64_t B, int64_t Din, int64_t H) {
    return lstm_forward(1, h_new, c_new, cache, x, h, c, w_ih, w_hh, b_ih, b_hh, B, Din, H);
}

ddl_status ddl_lstm_cell_backward_naive(float *dx, float *dh, float *dc, float *dw_ih, float *dw_hh,
                                        float *db_ih, float *db_hh, float *scratch,
                                        const float *dh_new, const float *dc_new,
                                        const float *cache, const float *x, const float *h,
                                        const float *c, const float *w_ih, const float *w_hh,
                                        int64_t B, int64_t Din, int64_t H) {
    return lstm_backward(1, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, scratch, dh_new, dc_new, cache,
                         x, h, c, w_ih, w_hh, B, Din, H);
}

/* ---- GRU cell ------------------------------------------------------------------------------- */

int64_t ddl_gru_cell_cache_floats(int64_t B, int64_t H) { return buffer_floats(B, H, 6); }
int64_t ddl_gru_cell_scratch_floats(int64_t B, int64_t H) { return buffer_floats(B, H, 6); }

static ddl_status gru_forward(int naive, float *h_new, float *cache, const float *x, const float *h,
                              const float *w_ih, const float *w_hh, const float *b_ih,
                              const float *b_hh, int64_t B, int64_t Din, int64_t H) {
    const char *who = naive ? "gru_cell_forward_naive" : "gru_cell_forward";
    DDL_TRY(check_cell(who, x, h, w_ih, w_hh, B, Din, H, 3, 6));
    DDL_TRY(check_buf(who, "h_new", h_new, B * H));
    DDL_TRY(check_buf(who, "cache", cache, B * 6 * H));
    const int64_t G = 3 * H, W = 6 * H;
    // cache[:, :3H] (B, 3H) = x @ W_ih^T;  cache[:, 3H:] (B, 3H) = h @ W_hh^T (row stride 6H)
    gemm(naive, 0, 1, B, G, Din, x, Din, w_ih, Din, 0.0f, cache, W);
    gemm(naive, 0, 1, B, G, H, h, H, w_hh, H, 0.0f, cache + G, W);
    for (int64_t b = 0; b < B; b++) {
        float *q = cache + b * W;    // (6H,) -> [r z n . . hn]
        const float *hp = h + b * H; // (H,)
        float *hn = h_new + b * H;   // (H,)
        for (int64_t j = 0; j < H; j++) {
            float r = sigmoidf_(q[j] + bias_at(b_ih, j) + q[G + j] + bias_at(b_hh, j));
            float z =
                sigmoidf_(q[H + j] + bias_at(b_ih, H + j) + q[G + H + j] + bias_at(b_hh, H + j));
            float hh = q[G + 2 * H + j] + bias_at(b_hh, 2 * H + j);
            float n = tanhf(q[2 * H + j] + bias_at(b_ih, 2 * H + j) + r * hh);
            q[j] = r;
            q[H + j] = z;
            q[2 * H + j] = n;
            q[G + 2 * H + j] = hh;
            hn[j] = (1.0f - z) * n + z * hp[j];
        }
    }
    return DDL_OK;
}

static ddl_status gru_backward(int naive, float *dx, float *dh, float *dw_ih, float *dw_hh,
                               float *db_ih, float *db_hh, float *scratch, const float *dh_new,
                               const float *cache, const float *x, const float *h,
                               const float *w_ih, const float *w_hh, int64_t B, int64_t Din,
                               int64_t H) {
    const char *who = naive ? "gru_cell_backward_naive" : "gru_cell_backward";
    DDL_TRY(check_cell(who, x, h, w_ih, w_hh, B, Din, H, 3, 6));
    DDL_TRY(check_buf(who, "cache", cache, B * 6 * H));
    DDL_TRY(check_buf(who, "scratch", scratch, B * 6 * H));
    if (dh_new == NULL) return DDL_OK;
    const int64_t G = 3 * H, W = 6 * H;
    // scratch[:, :3H] (B, 3H): d(input-side pre-activations) [r z n]
    // scratch[:, 3H:] (B, 3H): d(hidden-side pre-activations) [r z hn]   (row stride 6H)
    for (int64_t b = 0; b < B; b++) {
        const float *q = cache + b * W; // (6H,)
        const float *hp = h + b * H;    // (H,)
        float *s = scratch + b * W;     // (6H,)
        for (int64_t j = 0; j < H; j++) {
            float r = q[j], z = q[H + j], n = q[2 * H + j], hh = q[G + 2 * H + j];
            float d = dh_new[b * H + j];
            float dan = d * (1.0f - z) * (1.0f - n * n); /* through n = tanh(an) */
            float daz = d * (hp[j] - n) * z * (1.0f - z);
            float dar = dan * hh * r * (1.0f - r);
            s[j] = dar;
            s[H + j] = daz;
            s[2 * H + j] = dan;
            s[G + j] = dar;
            s[G + H + j] = daz;
            s[G + 2 * H + j] = dan * r;
            if (dh) dh[b * H + j] += d * z;
        }
    }
    weight_side_backward(naive, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, W, scratch + G, W, x,
                         h, w_ih, w_hh, B, Din, G, H);
    return DDL_OK;
}

ddl_status ddl_gru_cell_forward(float *h_new, float *cache, const float *x, const float *h,
                                const float *w_ih, const float *w_hh, const float *b_ih,
                                const float *b_hh, int64_t B, int64_t Din, int64_t H) {
    return gru_forward(0, h_new, cache, x, h, w_ih, w_hh, b_ih, b_hh, B, Din, H);
}

ddl_status ddl_gru_cell_backward(float *dx, float *dh, float *dw_ih, float *dw_hh, float *db_ih,
                                 float *db_hh, float *scratch, const float *dh_new,
                                 const float *cache, const float *x, const float *h,
                                 const float *w_ih, const float *w_hh, int64_t B, int64_t Din,
                                 int64_t H) {
    return gru_backward(0, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, dh_new, cache, x, h, w_ih,
                        w_hh, B, Din, H);
}

ddl_status ddl_gru_cell_forward_naive(float *h_new, float *cache, const float *x, const float *h,
                                      const float *w_ih, const float *w_hh, const float *b_ih,
                                      const float *b_hh, int64_t B, int64_t Din, int64_t H) {
    return gru_forward(1, h_new, cache, x, h, w_ih, w_hh, b_ih, b_hh, B, Din, H);
}

ddl_status ddl_gru_cell_backward_naive(float *dx, float *dh, float *dw_ih, float *dw_hh,
                                       float *db_ih, float *db_hh, float *scratch,
                                       const float *dh_new, const float *cache, const float *x,
                                       const float *h, const float *w_ih, const float *w_hh,
                                       int64_t B, int64_t Din, int64_t H) {
    return gru_backward(1, dx, dh, dw_ih, dw_hh, db_ih, db_hh, scratch, dh_new, cache, x, h, w_ih,
                        w_hh, B, Din, H);
}
