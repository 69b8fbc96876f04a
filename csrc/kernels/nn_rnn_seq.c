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

/* gemm() with the rows of C split across ddl's threads, each slice one single-threaded sgemm
 * (ddl_parallel_run sets OpenBLAS to one thread while they run). The recurrence runs on ddl's
 * threads too; sharing them for the big products keeps OpenBLAS's own pool out of the op: its
 * workers spin after each threaded call and took a core from the recurrence (2 threads on
 * 2 CPUs: 5.5 s of CPU for 150 Fashion-LSTM steps before this split, 2.3 s after). */
typedef struct {
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    const float *A, *B;
    float beta;
    float *C;
} gemm_job;

static void gemm_worker(void *ctx, int tid, int n) {
    const gemm_job *g = ctx;
    int64_t m0 = tid == 0 ? 0 : (g->M * tid / n) / 16 * 16;
    int64_t m1 = tid == n - 1 ? g->M : (g->M * (tid + 1) / n) / 16 * 16;
    const float *A = g->ta ? g->A + m0 : g->A + m0 * g->lda;
    gemm(g->ta, g->tb, m1 - m0, g->N, g->K, A, g->lda, g->B, g->ldb, g->beta, g->C + m0 * g->ldc,
         g->ldc);
}

static void par_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm_job g = {ta, tb, M, N, K, lda, ldb, ldc, A, B, beta, C};
    int64_t chunks = M / 64; /* at least 64 rows of C a thread */
    ddl_parallel_run(chunks < 1 ? 1 : chunks > 64 ? 64 : (int)chunks, gemm_worker, &g);
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

/* ---- float gate functions ------------------------------------------------------------------ */

/* The gates' sigmoid and tanh in float arithmetic, twice as many lanes as vmath.h's double
 * versions (which the gate math spent most of its time in). sigmoid = 1 / (1 + e^-x) with
 * vm_exp_f32 (<= 1 ulp); tanh|x| = -m / (2 + m), m = e^(-2|x|) - 1 from the same reduction
 * as vm_exp_f32 (no cancellation near 0), then x's sign. Both within 4 ulp of the exact value
 * (tests/test_nn_rnn_seq.py checks the layers against float64); NaN in, NaN out; +-inf -> 0/1, -1/1. */
static inline __attribute__((always_inline)) float gate_sigmoid(float x) {
    return 1.0f / (1.0f + vm_exp_f32(-x));
}

static inline __attribute__((always_inline)) float gate_tanh(float x) {
    float ax = fabsf(x);
    ax = ax > 9.0f ? 9.0f : ax; /* tanh(9) rounds to 1 */
    float c = -2.0f * ax;       /* in [-18, 0] */
    const float shift = 0x1.8p23f;
    float k = fmaf(c, 0x1.715476p+0f, shift);
    float n = k - shift;
    float r = fmaf(n, -0x1.62e430p-1f, c);
    r = fmaf(n, 0x1.05c610p-29f, r);
    float q = 0x1.6a1a72p-10f;
    q = fmaf(q, r, 0x1.123fc6p-7f);
    q = fmaf(q, r, 0x1.555916p-5f);
    q = fmaf(q, r, 0x1.55548ap-3f);
    q = fmaf(q, r, 0x1.fffffcp-2f);
    float em = fmaf(q * r, r, r);                                /* e^r - 1 */
    int32_t ni = (int32_t)(vm_bits_f32(k) - vm_bits_f32(shift)); /* n in [-26, 0] */
    float s = vm_f32_bits((uint32_t)(ni + 127) << 23);           /* 2^n */
    float m = fmaf(s, em, s - 1.0f);                             /* e^c - 1, in (-1, 0] */
    float t = -m / (2.0f + m);
    float y = vm_f32_bits((vm_bits_f32(t) & 0x7fffffffu) | (vm_bits_f32(x) & 0x80000000u));
    return x != x ? x + x : y;
}

/* ---- forward rows: one pass over a row of the gate buffer ----------------------------------- */

XKERNEL static void lstm_fwd_row(float *restrict g, float *restrict tcv, float *restrict cv,
                                 float *restrict hv, float *restrict yv, const float *restrict cp,
                                 const float *restrict bsum, int64_t H) {
    for (int64_t j = 0; j < H; j++) {
        float i = gate_sigmoid(g[j] + bsum[j]);
        float f = gate_sigmoid(g[H + j] + bsum[H + j]);
        float gg = gate_tanh(g[2 * H + j] + bsum[2 * H + j]);
        float o = gate_sigmoid(g[3 * H + j] + bsum[3 * H + j]);
        float cc = f * cp[j] + i * gg;
        float tc = gate_tanh(cc);
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
        float r = gate_sigmoid(g[j] + bi[j] + gh[j] + bh[j]);
        float z = gate_sigmoid(g[H + j] + bi[H + j] + gh[H + j] + bh[H + j]);
        float hh = gh[2 * H + j] + bh[2 * H + j];
        float n = gate_tanh(g[2 * H + j] + bi[2 * H + j] + r * hh);
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
            float v = gate_tanh(g[j] + bsum[j]);
            g[j] = v;
            yv[j] = v;
        }
    }
}

/* out (n, m) = in (m, n)^T, by 32 x 32 tiles. */
static void transpose(float *restrict out, const float *restrict in, int64_t m, int64_t n) {
    enum { TL = 32 };
    for (int64_t i0 = 0; i0 < m; i0 += TL)
        for (int64_t j0 = 0; j0 < n; j0 += TL) {
            int64_t i1 = m - i0 < TL ? m : i0 + TL, j1 = n - j0 < TL ? n : j0 + TL;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) out[j * m + i] = in[i * n + j];
        }
}

/* Rows of a batch are independent through the recurrence: with several threads each one runs
 * every step for its own slice of the batch (single-threaded sgemms, one fork/join per call)
 * instead of OpenBLAS splitting each small per-step product. Below ROWS_PER_THREAD rows a
 * thread, fewer threads. */
#define ROWS_PER_THREAD 16

static int seq_threads(int64_t B) {
    int64_t n = B / ROWS_PER_THREAD;
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

typedef struct {
    float *y, *gh;
    const float *h0, *c0, *w_t, *bsum, *bh, *zeros; // w_t (H, G) = W_hh^T
    regions r;
    int64_t T, B, H, ldy;
    ddl_rnn_mode mode;
    int relu, reverse;
} fwd_job;

/* Steps 0..T-1 for rows [b0, b1) of the batch. */
static void fwd_rows(const fwd_job *j, int64_t b0, int64_t b1) {
    const int64_t T = j->T, B = j->B, H = j->H, ldy = j->ldy, nb = b1 - b0;
    const int64_t G = gates_of(j->mode) * H, BH = B * H;
    const regions r = j->r;
    for (int64_t s = 0; s < T; s++) {
        int64_t t = j->reverse ? T - 1 - s : s, tp = j->reverse ? t + 1 : t - 1;
        const float *hp = s == 0 ? (j->h0 ? j->h0 : j->zeros) : r.h + tp * BH; // (B, H)
        float *gt = r.g + t * B * G;                                           // (B, G)
        float *yt = j->y + t * B * ldy;                                        // (B, ldy)
        if (j->mode == DDL_RNN_MODE_GRU) {
            gemm(0, 0, nb, G, H, hp + b0 * H, H, j->w_t, G, 0.0f, j->gh + b0 * G, G);
            for (int64_t b = b0; b < b1; b++)
                gru_fwd_row(gt + b * G, r.hh + t * BH + b * H, r.h + t * BH + b * H, yt + b * ldy,
                            j->gh + b * G, hp + b * H, j->bsum, j->bh, H);
            continue;
        }
        if (s > 0 || j->h0) gemm(0, 0, nb, G, H, hp + b0 * H, H, j->w_t, G, 1.0f, gt + b0 * G, G);
        if (j->mode == DDL_RNN_MODE_LSTM) {
            const float *cp = s == 0 ? (j->c0 ? j->c0 : j->zeros) : r.c + tp * BH;
            for (int64_t b = b0; b < b1; b++) {
                int64_t o = t * BH + b * H;
                lstm_fwd_row(gt + b * G, r.tc + o, r.c + o, r.h + o, yt + b * ldy, cp + b * H,
                             j->bsum, H);
            }
        } else {
            for (int64_t b = b0; b < b1; b++)
                rnn_fwd_row(gt + b * G, yt + b * ldy, j->bsum, H, j->relu);
        }
    }
}

static void fwd_worker(void *ctx, int tid, int n) {
    const fwd_job *j = ctx;
    fwd_rows(j, j->B * tid / n, j->B * (tid + 1) / n);
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
    // work: bias sums (2G,), zeros (B, H), W_hh^T (H, G), GRU hidden projection (B, G)
    int64_t nw = 2 * G + BH + H * G + (mode == DDL_RNN_MODE_GRU ? B * G : 0);
    float *work = calloc((size_t)nw, sizeof(float));
    if (!work) DDL_FAIL(DDL_E_NOMEM, "%s: no memory for %lld floats of workspace", who, (ll)nw);
    float *bsum = work, *bh = work + G, *zeros = work + 2 * G, *w_t = zeros + BH;
    float *gh = w_t + H * G;
    /* the per-step product h @ W_hh^T reads W_hh^T as a plain (H, G) matrix: OpenBLAS packs a
     * non-transposed operand ~20% faster at these sizes (measured 92 vs 74 GFLOP/s for
     * (64, 512, 128)), and the transpose is paid once per sequence instead of once per step */
    transpose(w_t, w_hh, G, H);
    for (int64_t k = 0; k < G; k++) {
        float a = b_ih ? b_ih[k] : 0.0f, b = b_hh ? b_hh[k] : 0.0f;
        bsum[k] = mode == DDL_RNN_MODE_GRU ? a : a + b; /* GRU: input-side bias only */
        bh[k] = b;
    }
    // gates (T*B, G) = x @ W_ih^T: the input projection of every step in one sgemm
    par_gemm(0, 1, T * B, G, Din, x, Din, w_ih, Din, 0.0f, r.g, G);
    fwd_job j = {
        y, gh, h0, c0, w_t, bsum, bh, zeros, r, T, B, H, ldy, mode, nl == DDL_RNN_RELU, reverse};
    ddl_parallel_run(seq_threads(B), fwd_worker, &j);
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

/* acc (n,) += column sums of m (rows, n): the rows summed in float into part (n,), then added
 * into the double accumulators (one step's batch rows at a time: short float sums). */
XKERNEL static void colsum_acc(double *restrict acc, float *restrict part, const float *restrict m,
                               int64_t rows, int64_t n) {
    for (int64_t k = 0; k < n; k++) part[k] = 0.0f;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < n; k++) part[k] += m[r * n + k];
    for (int64_t k = 0; k < n; k++) acc[k] += part[k];
}

typedef struct {
    float *dG, *dGh, *dhc, *dcc;
    double *bacc; // (threads, 2, G) per-thread bias sums of dG and (GRU) dGh, or NULL
    float *bpart; // (threads, G) scratch
    const float *dy, *h0, *c0, *w_hh, *zeros;
    regions r;
    int64_t T, B, H, ldy;
    ddl_rnn_mode mode;
    int relu, reverse, need_dh0;
} bwd_job;

/* Steps T-1..0 for rows [b0, b1): the pre-activation gradients dG (and the GRU's dGh) of every
 * step, and the carries dh, dc back to step 0. */
static void bwd_rows(const bwd_job *j, int tid, int64_t b0, int64_t b1) {
    const int64_t T = j->T, B = j->B, H = j->H, ldy = j->ldy, nb = b1 - b0;
    const int64_t G = gates_of(j->mode) * H, BH = B * H;
    const int gru = j->mode == DDL_RNN_MODE_GRU;
    const regions r = j->r;
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t t = j->reverse ? T - 1 - s : s, tp = j->reverse ? t + 1 : t - 1;
        const float *hp = s == 0 ? (j->h0 ? j->h0 : j->zeros) : r.h + tp * BH;
        const float *dyt = j->dy ? j->dy + t * B * ldy : NULL;
        float *dgt = j->dG + t * B * G, *dght = j->dGh + t * B * G;
        for (int64_t b = b0; b < b1; b++) {
            int64_t o = t * BH + b * H;
            const float *dyv = dyt ? dyt + b * ldy : NULL;
            if (j->mode == DDL_RNN_MODE_LSTM) {
                const float *cp = s == 0 ? (j->c0 ? j->c0 : j->zeros) : r.c + tp * BH;
                lstm_bwd_row(dgt + b * G, j->dhc + b * H, j->dcc + b * H, r.g + t * B * G + b * G,
                             r.tc + o, cp + b * H, dyv, H);
            } else if (gru) {
                gru_bwd_row(dgt + b * G, dght + b * G, j->dhc + b * H, r.g + t * B * G + b * G,
                            r.hh + o, hp + b * H, dyv, H);
            } else {
                rnn_bwd_row(dgt + b * G, j->dhc + b * H, r.h + o, dyv, H, j->relu);
            }
        }
        if (j->bacc) { /* the bias sums while this step's rows are in cache */
            double *acc = j->bacc + tid * 2 * G;
            colsum_acc(acc, j->bpart + tid * G, dgt + b0 * G, nb, G);
            if (gru) colsum_acc(acc + G, j->bpart + tid * G, dght + b0 * G, nb, G);
        }
        // dh_{t-1} (nb, H) = dGh_t @ W_hh (+ the GRU's direct z*dh, already in dhc); the
        // carry out of step 0 only matters for dh0
        if (s > 0 || j->need_dh0)
            gemm(0, 0, nb, H, G, dght + b0 * G, G, j->w_hh, H, gru ? 1.0f : 0.0f, j->dhc + b0 * H,
                 H);
    }
}

static void bwd_worker(void *ctx, int tid, int n) {
    const bwd_job *j = ctx;
    bwd_rows(j, tid, j->B * tid / n, j->B * (tid + 1) / n);
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
    // small: carries dh, dc (B, H), zeros (B, H); big (every element written): dG (T*B, G),
    // GRU dGh (T*B, G)
    float *small = calloc((size_t)(3 * BH > 0 ? 3 * BH : 1), sizeof(float));
    int64_t nbig = TB * G * (gru ? 2 : 1);
    float *big = malloc(sizeof(float) * (size_t)(nbig > 0 ? nbig : 1));
    if (!small || !big) {
        free(small);
        free(big);
        DDL_FAIL(DDL_E_NOMEM, "%s: no memory for %lld floats of workspace", who,
                 (ll)(nbig + 3 * BH));
    }
    int nt = seq_threads(B) < ddl_num_threads ? seq_threads(B) : ddl_num_threads;
    nt = nt < 1 ? 1 : nt;
    double *bacc = NULL; // (nt, 2, G), then (nt, G) floats of scratch after it
    if (db_ih || db_hh) {
        bacc = calloc((size_t)(nt * 2 * G) + (size_t)(nt * G + 1) / 2 + 1, sizeof(double));
        if (!bacc) {
            free(small);
            free(big);
            DDL_FAIL(DDL_E_NOMEM, "%s: no memory for the bias sums", who);
        }
    }
    float *dG = big, *dGh = gru ? dG + TB * G : dG;
    float *dhc = small, *dcc = dhc + BH, *zeros = dcc + BH;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < H; j++) {
            if (dh_n) dhc[b * H + j] = dh_n[b * ldy + j];
            if (dc_n && mode == DDL_RNN_MODE_LSTM) dcc[b * H + j] = dc_n[b * ldy + j];
        }
    bwd_job j = {dG,      dGh,        dhc, dcc,  bacc,  bacc ? (float *)(bacc + nt * 2 * G) : NULL,
                 dy,      h0,         c0,  w_hh, zeros, r,
                 T,       B,          H,   ldy,  mode,  nl == DDL_RNN_RELU,
                 reverse, dh0 != NULL};
    ddl_parallel_run(seq_threads(B), bwd_worker, &j);
    if (dh0)
        for (int64_t i = 0; i < BH; i++) dh0[i] += dhc[i];
    if (dc0 && mode == DDL_RNN_MODE_LSTM)
        for (int64_t i = 0; i < BH; i++) dc0[i] += dcc[i];
    // the weight side over all steps at once
    if (dx) par_gemm(0, 0, TB, Din, G, dG, G, w_ih, Din, 1.0f, dx, Din);
    if (dw_ih) par_gemm(1, 0, G, Din, TB, dG, G, x, Din, 1.0f, dw_ih, Din);
    if (dw_hh && T > 0) {
        /* sum_t dGh_t^T h_{t-1}: h_{t-1} of steps after the first is h of the step before, in
         * the cache already (forward: rows 0..T-2 for steps 1..T-1; reverse: rows 1..T-1 for
         * steps 0..T-2); the first step's h_{t-1} is h0 (nothing when it is zero) */
        const float *dg1 = reverse ? dGh : dGh + B * G, *h1 = reverse ? r.h + BH : r.h;
        par_gemm(1, 0, G, H, (T - 1) * B, dg1, G, h1, H, 1.0f, dw_hh, H);
        if (h0)
            gemm(1, 0, G, H, B, reverse ? dGh + (T - 1) * B * G : dGh, G, h0, H, 1.0f, dw_hh, H);
    }
    for (int64_t k = 0; bacc && k < G; k++) { /* the threads' bias sums, in thread order */
        double a = 0.0, ah = 0.0;
        for (int i = 0; i < nt; i++) {
            a += bacc[i * 2 * G + k];
            ah += bacc[i * 2 * G + G + k];
        }
        if (db_ih) db_ih[k] += (float)a;
        if (db_hh) db_hh[k] += (float)(gru ? ah : a); /* LSTM/RNN: dGh is dG */
    }
    free(bacc);
    free(small);
    free(big);
    return DDL_OK;
}
