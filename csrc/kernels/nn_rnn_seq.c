/* nn_rnn_seq.c: fused RNN/LSTM/GRU over a whole sequence (one layer, one direction), fwd+bwd. */
#include "ddl/nn_rnn.h"

#include "core/blas.h"
#include "core/internal.h"

#include "kernels/common.h"

#include "core/vmath.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The per-row gate math, compiled for AVX-512, AVX2 and baseline x86-64 (the CPU picks one at
 * load); vmath.h's float32 sigmoid/tanh vectorise. */
#define XKERNEL                                                                                    \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),                   \
                   optimize("no-trapping-math")))

/* C (M, N) = op(A) @ op(B) + beta * C, row-major; empty products never reach OpenBLAS (its
 * argument checker prints on a zero leading dimension); K == 0 gives beta * C. */
static void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta != 0.0f ? C[i * ldc + j] : 0.0f;
        return;
    }
    ddl_gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* db (n,) += column sums of m (rows, n), summed in double by blocks of columns. */
static void colsum_acc(float *db, const float *m, int64_t rows, int64_t n) {
    enum { BLK = 64 };
    double acc[BLK];
    for (int64_t j0 = 0; j0 < n; j0 += BLK) {
        int64_t nb = n - j0 < BLK ? n - j0 : BLK;
        for (int64_t j = 0; j < nb; j++) acc[j] = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const float *row = m + r * n + j0;
            for (int64_t j = 0; j < nb; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < nb; j++) db[j0 + j] += (float)acc[j];
    }
}

static int64_t gates_of(ddl_rnn_mode m) {
    return m == DDL_RNN_MODE_LSTM ? 4 : m == DDL_RNN_MODE_GRU ? 3 : 1;
}
/* cache floats per (step, row) in units of H: gates, then LSTM [tanh(c), c, h], GRU [hn, h] */
static int64_t width_of(ddl_rnn_mode m) {
    return m == DDL_RNN_MODE_LSTM ? 7 : m == DDL_RNN_MODE_GRU ? 5 : 1;
}

int64_t ddl_rnn_seq_cache_floats(ddl_rnn_mode mode, int64_t T, int64_t B, int64_t H) {
    if ((unsigned)mode > DDL_RNN_MODE_GRU || T < 0 || B < 0 || H < 0) return -1;
    int64_t r;
    if (!prod4(&r, T, B, H, width_of(mode))) return -1;
    return r;
}

/* The cache's regions, each (T, B, .) contiguous. */
typedef struct {
    float *g;  // (T, B, G*H) activated gates (RNN: h itself)
    float *tc; // (T, B, H) LSTM tanh(c_t)
    float *c;  // (T, B, H) LSTM c_t
    float *hh; // (T, B, H) GRU W_hn h_{t-1} + b_hn
    float *h;  // (T, B, H) h_t
} regions;

static regions split(float *cache, ddl_rnn_mode mode, int64_t T, int64_t B, int64_t H) {
    int64_t n = T * B * H, G = gates_of(mode);
    regions r = {cache, NULL, NULL, NULL, cache};
    if (mode == DDL_RNN_MODE_LSTM) {
        r.tc = cache + G * n;
        r.c = r.tc + n;
        r.h = r.c + n;
    } else if (mode == DDL_RNN_MODE_GRU) {
        r.hh = cache + G * n;
        r.h = r.hh + n;
    }
    return r;
}

static ddl_status check_seq(const char *who, const float *cache, const float *x, const float *w_ih,
                            const float *w_hh, int64_t T, int64_t B, int64_t Din, int64_t H,
                            int64_t ldy, ddl_rnn_mode mode, ddl_rnn_nonlinearity nl) {
    if ((unsigned)mode > DDL_RNN_MODE_GRU)
        DDL_FAIL(DDL_E_VALUE, "%s: unknown mode %d (0 rnn, 1 lstm, 2 gru)", who, (int)mode);
    if (mode == DDL_RNN_MODE_RNN && nl != DDL_RNN_TANH && nl != DDL_RNN_RELU)
        DDL_FAIL(DDL_E_VALUE, "%s: unknown nonlinearity %d (0 tanh, 1 relu)", who, (int)nl);
    if (T < 0 || B < 0 || Din < 0 || H < 1 || ldy < H)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: need T, B, Din >= 0, H >= 1 and ldy >= H, got T=%lld B=%lld "
                 "Din=%lld H=%lld ldy=%lld",
                 who, (ll)T, (ll)B, (ll)Din, (ll)H, (ll)ldy);
    int64_t G = gates_of(mode), n;
    if (T * (double)B > MAX_DIM || Din > MAX_DIM || G * H > MAX_DIM || ldy > MAX_DIM ||
        !prod4(&n, T, B, ldy, 1) || !prod4(&n, T, B, Din, 1) || !prod4(&n, T, B, H, width_of(mode)))
        DDL_FAIL(DDL_E_VALUE, "%s: sizes T=%lld B=%lld Din=%lld H=%lld exceed BLAS's int limit",
                 who, (ll)T, (ll)B, (ll)Din, (ll)H);
    DDL_TRY(check_buf(who, "cache", cache, T * B * H));
    DDL_TRY(check_buf(who, "x", x, T * B * Din));
    DDL_TRY(check_buf(who, "w_ih", w_ih, G * H * Din));
    return check_buf(who, "w_hh", w_hh, G * H * H);
}

/* ---- forward rows --------------------------------------------------------------------------- */

XKERNEL static void lstm_fwd_row(float *restrict g, float *restrict tcv, float *restrict cv,
                                 float *restrict hv, float *restrict yv, const float *restrict cp,
                                 const float *restrict bsum, int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        float i = vm_sigmoid_f32(g[j] + bsum[j]);
        float f = vm_sigmoid_f32(g[H + j] + bsum[H + j]);
        float gg = vm_tanh_f32(g[2 * H + j] + bsum[2 * H + j]);
        float o = vm_sigmoid_f32(g[3 * H + j] + bsum[3 * H + j]);
        float cc = f * cp[j] + i * gg;
        float tc = vm_tanh_f32(cc);
        g[j] = i;
        g[H + j] = f;
        g[2 * H + j] = gg;
        g[3 * H + j] = o;
        tcv[j] = tc;
        cv[j] = cc;
        hv[j] = o * tc;
        yv[j] = o * tc;
    }
}

XKERNEL static void gru_fwd_row(float *restrict g, float *restrict hhv, float *restrict hv,
                                float *restrict yv, const float *restrict gh,
                                const float *restrict hp, const float *restrict bi,
                                const float *restrict bh, int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        float r = vm_sigmoid_f32(g[j] + bi[j] + gh[j] + bh[j]);
        float z = vm_sigmoid_f32(g[H + j] + bi[H + j] + gh[H + j] + bh[H + j]);
        float hh = gh[2 * H + j] + bh[2 * H + j];
        float n = vm_tanh_f32(g[2 * H + j] + bi[2 * H + j] + r * hh);
        float hn = (1.0f - z) * n + z * hp[j];
        g[j] = r;
        g[H + j] = z;
        g[2 * H + j] = n;
        hhv[j] = hh;
        hv[j] = hn;
        yv[j] = hn;
    }
}

XKERNEL static void rnn_fwd_row(float *restrict g, float *restrict yv, const float *restrict bsum,
                                int64_t H, int relu) {
    if (relu) {
        for (int64_t j = 0; j < H; j++) {
            float v = g[j] + bsum[j];
            v = v > 0.0f ? v : 0.0f;
            g[j] = v;
            yv[j] = v;
        }
    } else {
        for (int64_t j = 0; j < H; j++) {
            float v = vm_tanh_f32(g[j] + bsum[j]);
            g[j] = v;
            yv[j] = v;
        }
    }
}

ddl_status ddl_rnn_seq_forward(float *y, float *h_n, float *c_n, float *cache, const float *x,
                               const float *h0, const float *c0, const float *w_ih,
                               const float *w_hh, const float *b_ih, const float *b_hh, int64_t T,
                               int64_t B, int64_t Din, int64_t H, int64_t ldy, ddl_rnn_mode mode,
                               ddl_rnn_nonlinearity nl, int reverse) {
    const char *who = "rnn_seq_forward";
    DDL_TRY(check_seq(who, cache, x, w_ih, w_hh, T, B, Din, H, ldy, mode, nl));
    DDL_TRY(check_buf(who, "y", y, T * B * H));
    const int64_t G = gates_of(mode) * H, BH = B * H;
    regions r = split(cache, mode, T, B, H);
    // work: bias sums (2G,), zeros (B, H), GRU hidden projection (B, G)
    int64_t nw = 2 * G + BH + (mode == DDL_RNN_MODE_GRU ? B * G : 0);
    float *work = calloc((size_t)nw, sizeof(float));
    if (!work) DDL_FAIL(DDL_E_NOMEM, "%s: no memory for %lld floats of workspace", who, (ll)nw);
    float *bsum = work, *bh = work + G, *zeros = work + 2 * G, *gh = zeros + BH;
    for (int64_t k = 0; k < G; k++) {
        float a = b_ih ? b_ih[k] : 0.0f, b = b_hh ? b_hh[k] : 0.0f;
        bsum[k] = mode == DDL_RNN_MODE_GRU ? a : a + b; /* GRU: input-side bias only */
        bh[k] = b;
    }
    // gates (T*B, G) = x @ W_ih^T: the input projection of every step in one sgemm
    gemm(0, 1, T * B, G, Din, x, Din, w_ih, Din, 0.0f, r.g, G);
    for (int64_t s = 0; s < T; s++) {
        int64_t t = reverse ? T - 1 - s : s, tp = reverse ? t + 1 : t - 1;
        const float *hp = s == 0 ? (h0 ? h0 : zeros) : r.h + tp * BH; // (B, H)
        float *gt = r.g + t * B * G;                                  // (B, G)
        float *yt = y + t * B * ldy;                                  // (B, ldy)
        if (mode == DDL_RNN_MODE_GRU) {
            gemm(0, 1, B, G, H, hp, H, w_hh, H, 0.0f, gh, G);
            for (int64_t b = 0; b < B; b++)
                gru_fwd_row(gt + b * G, r.hh + t * BH + b * H, r.h + t * BH + b * H, yt + b * ldy,
                            gh + b * G, hp + b * H, bsum, bh, H);
            continue;
        }
        if (s > 0 || h0) gemm(0, 1, B, G, H, hp, H, w_hh, H, 1.0f, gt, G);
        if (mode == DDL_RNN_MODE_LSTM) {
            const float *cp = s == 0 ? (c0 ? c0 : zeros) : r.c + tp * BH;
            for (int64_t b = 0; b < B; b++) {
                int64_t o = t * BH + b * H;
                lstm_fwd_row(gt + b * G, r.tc + o, r.c + o, r.h + o, yt + b * ldy, cp + b * H, bsum,
                             H);
            }
        } else {
            for (int64_t b = 0; b < B; b++)
                rnn_fwd_row(gt + b * G, yt + b * ldy, bsum, H, nl == DDL_RNN_RELU);
        }
    }
    int64_t tl = reverse ? 0 : T - 1; /* the last step run */
    for (int64_t b = 0; b < B && T > 0; b++) {
        if (h_n) memcpy(h_n + b * ldy, r.h + tl * BH + b * H, sizeof(float) * (size_t)H);
        if (c_n && r.c) memcpy(c_n + b * ldy, r.c + tl * BH + b * H, sizeof(float) * (size_t)H);
    }
    if (T == 0) /* no step: the final state is the initial one */
        for (int64_t b = 0; b < B; b++) {
            if (h_n) memcpy(h_n + b * ldy, (h0 ? h0 : zeros) + b * H, sizeof(float) * (size_t)H);
            if (c_n) memcpy(c_n + b * ldy, (c0 ? c0 : zeros) + b * H, sizeof(float) * (size_t)H);
        }
    free(work);
    return DDL_OK;
}

/* ---- backward rows: d = dh_carry + dy; pre-activation gradients into dg (and dgh) ---------- */

XKERNEL static void lstm_bwd_row(float *restrict dg, float *restrict dhc, float *restrict dcc,
                                 const float *restrict g, const float *restrict tcv,
                                 const float *restrict cp, const float *restrict dyv, int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j], tc = tcv[j];
        float d = dhc[j] + (dyv ? dyv[j] : 0.0f);
        float dct = dcc[j] + d * o * (1.0f - tc * tc);
        dg[j] = dct * gg * i * (1.0f - i);
        dg[H + j] = dct * cp[j] * f * (1.0f - f);
        dg[2 * H + j] = dct * i * (1.0f - gg * gg);
        dg[3 * H + j] = d * tc * o * (1.0f - o);
        dcc[j] = dct * f;
    }
}

XKERNEL static void gru_bwd_row(float *restrict dg, float *restrict dgh, float *restrict dhc,
                                const float *restrict g, const float *restrict hhv,
                                const float *restrict hp, const float *restrict dyv, int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        float r = g[j], z = g[H + j], n = g[2 * H + j], hh = hhv[j];
        float d = dhc[j] + (dyv ? dyv[j] : 0.0f);
        float dan = d * (1.0f - z) * (1.0f - n * n);
        float daz = d * (hp[j] - n) * z * (1.0f - z);
        float dar = dan * hh * r * (1.0f - r);
        dg[j] = dar;
        dg[H + j] = daz;
        dg[2 * H + j] = dan;
        dgh[j] = dar;
        dgh[H + j] = daz;
        dgh[2 * H + j] = dan * r;
        dhc[j] = d * z; /* the direct path h' = ... + z*h; W_hh's part is added by sgemm */
    }
}

XKERNEL static void rnn_bwd_row(float *restrict dg, const float *restrict dhc,
                                const float *restrict yv, const float *restrict dyv, int64_t H,
                                int relu) {
    for (int64_t j = 0; j < H; j++) {
        float d = dhc[j] + (dyv ? dyv[j] : 0.0f), v = yv[j];
        dg[j] = d * (relu ? (v > 0.0f ? 1.0f : 0.0f) : 1.0f - v * v);
    }
}

ddl_status ddl_rnn_seq_backward(float *dx, float *dh0, float *dc0, float *dw_ih, float *dw_hh,
                                float *db_ih, float *db_hh, const float *dy, const float *dh_n,
                                const float *dc_n, const float *cache, const float *x,
                                const float *h0, const float *c0, const float *w_ih,
                                const float *w_hh, int64_t T, int64_t B, int64_t Din, int64_t H,
                                int64_t ldy, ddl_rnn_mode mode, ddl_rnn_nonlinearity nl,
                                int reverse) {
    const char *who = "rnn_seq_backward";
    DDL_TRY(check_seq(who, cache, x, w_ih, w_hh, T, B, Din, H, ldy, mode, nl));
    const int64_t G = gates_of(mode) * H, BH = B * H, TB = T * B;
    const int gru = mode == DDL_RNN_MODE_GRU;
    regions r = split((float *)cache, mode, T, B, H);
    // work: dG (T*B, G), GRU dGh (T*B, G), carries dh, dc (B, H), zeros (B, H), h_{t-1} (T*B, H)
    int64_t nw = TB * G * (gru ? 2 : 1) + 3 * BH + TB * H;
    float *work = calloc((size_t)(nw > 0 ? nw : 1), sizeof(float));
    if (!work) DDL_FAIL(DDL_E_NOMEM, "%s: no memory for %lld floats of workspace", who, (ll)nw);
    float *dG = work, *dGh = gru ? dG + TB * G : dG, *dhc = dG + TB * G * (gru ? 2 : 1);
    float *dcc = dhc + BH, *zeros = dcc + BH, *hprev = zeros + BH;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < H; j++) {
            if (dh_n) dhc[b * H + j] = dh_n[b * ldy + j];
            if (dc_n && mode == DDL_RNN_MODE_LSTM) dcc[b * H + j] = dc_n[b * ldy + j];
        }
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t t = reverse ? T - 1 - s : s, tp = reverse ? t + 1 : t - 1;
        const float *hp = s == 0 ? (h0 ? h0 : zeros) : r.h + tp * BH;
        const float *dyt = dy ? dy + t * B * ldy : NULL;
        float *dgt = dG + t * B * G, *dght = dGh + t * B * G;
        for (int64_t b = 0; b < B; b++) {
            int64_t o = t * BH + b * H;
            const float *dyv = dyt ? dyt + b * ldy : NULL;
            if (mode == DDL_RNN_MODE_LSTM) {
                const float *cp = s == 0 ? (c0 ? c0 : zeros) : r.c + tp * BH;
                lstm_bwd_row(dgt + b * G, dhc + b * H, dcc + b * H, r.g + t * B * G + b * G,
                             r.tc + o, cp + b * H, dyv, H);
            } else if (gru) {
                gru_bwd_row(dgt + b * G, dght + b * G, dhc + b * H, r.g + t * B * G + b * G,
                            r.hh + o, hp + b * H, dyv, H);
            } else {
                rnn_bwd_row(dgt + b * G, dhc + b * H, r.h + o, dyv, H, nl == DDL_RNN_RELU);
            }
        }
        // dh_{t-1} (B, H) = dGh_t @ W_hh (+ the GRU's direct z*dh, already in dhc)
        gemm(0, 0, B, H, G, dght, G, w_hh, H, gru ? 1.0f : 0.0f, dhc, H);
        memcpy(hprev + t * BH, hp, sizeof(float) * (size_t)BH);
    }
    if (dh0)
        for (int64_t i = 0; i < BH; i++) dh0[i] += dhc[i];
    if (dc0 && mode == DDL_RNN_MODE_LSTM)
        for (int64_t i = 0; i < BH; i++) dc0[i] += dcc[i];
    // the weight side over all steps at once
    if (dx) gemm(0, 0, TB, Din, G, dG, G, w_ih, Din, 1.0f, dx, Din);
    if (dw_ih) gemm(1, 0, G, Din, TB, dG, G, x, Din, 1.0f, dw_ih, Din);
    if (dw_hh) gemm(1, 0, G, H, TB, dGh, G, hprev, H, 1.0f, dw_hh, H);
    if (db_ih) colsum_acc(db_ih, dG, TB, G);
    if (db_hh) colsum_acc(db_hh, dGh, TB, G);
    free(work);
    return DDL_OK;
}
