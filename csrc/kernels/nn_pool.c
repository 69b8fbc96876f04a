/* nn_pool.c: float32 and float64 kernels for max, average and adaptive-average 2-d pooling,
 * forward and backward (the loops in kernels/pool_impl.h, once per type). */
#include "ddl/nn_conv.h"

#include "core/internal.h"

#include "kernels/common.h"

#include <immintrin.h>
#include <math.h>

/* ---- pooling ----------------------------------------------------------------------------- */

/* Every size of the input (N, C, H, W) and of the window or output (a, b) is positive. */
static ddl_status check_positive(const char *who, int64_t N, int64_t C, int64_t H, int64_t W,
                                 const char *what, int64_t a, int64_t b) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || a < 1 || b < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (N, C, H, W) = (%lld, %lld, %lld, %lld) and %s (%lld, %lld) must "
                 "be positive",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, what, (ll)a, (ll)b);
    return DDL_OK;
}

/* The sizes of a pooling call, and the buffers it must have: a (named an) and b (bn, or NULL
 * when the call needs only one). */
static ddl_status pool_check(const char *who, int64_t *OH, int64_t *OW, int64_t N, int64_t C,
                             int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw, const void *a, const char *an, const void *b,
                             const char *bn) {
    if (an) DDL_TRY(check_buf(who, an, a, 1));
    if (bn) DDL_TRY(check_buf(who, bn, b, 1));
    DDL_TRY(check_positive(who, N, C, H, W, "kernel", KH, KW));
    if (N > MAX_DIM || C > MAX_DIM)
        DDL_FAIL(DDL_E_VALUE, "%s: sizes beyond 2^31 - 1 are not supported", who);
    ddl_status st = ddl_window_out_size(who, OH, OW, H, W, KH, KW, sh, sw, ph, pw, 1, 1);
    if (st != DDL_OK) return st;
    /* Wider padding would give windows that lie wholly in the padding (no max to take). */
    if (ph > KH / 2 || pw > KW / 2)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: padding (%lld, %lld) must be at most half the kernel (%lld, %lld)", who,
                 (ll)ph, (ll)pw, (ll)KH, (ll)KW);
    int64_t t;
    if (!prod4(&t, N, C, H, W) || !prod4(&t, N, C, *OH, *OW))
        DDL_FAIL(DDL_E_VALUE, "%s: input (%lld, %lld, %lld, %lld) is too large", who, (ll)N, (ll)C,
                 (ll)H, (ll)W);
    return DDL_OK;
}

ddl_status ddl_pool2d_out_size(int64_t *OH, int64_t *OW, int64_t H, int64_t W, int64_t KH,
                               int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w) {
    int64_t oh, ow;
    if (!OH || !OW) DDL_FAIL(DDL_E_VALUE, "pool2d_out_size: OH and OW must not be NULL");
    DDL_TRY(pool_check("pool2d", &oh, &ow, 1, 1, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w,
                       NULL, NULL, NULL, NULL));
    *OH = oh, *OW = ow;
    return DDL_OK;
}

/* The common 2x2, stride 2, no padding case, branch-free (first maximum wins, NaN wins) */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),
               optimize("no-trapping-math"))) static void
maxpool22(float *restrict y, int64_t *restrict ix, const float *restrict x, int64_t W, int64_t OH,
          int64_t OW) {
    for (int64_t oh = 0; oh < OH; oh++) {
        const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
        for (int64_t ow = 0; ow < OW; ow++) {
            float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            int64_t ia = 2 * oh * W + 2 * ow;
            float best = a;
            int64_t arg = ia;
            int tb = b > best || b != b;
            best = tb ? b : best;
            arg = tb ? ia + 1 : arg;
            int tc = c > best || c != c;
            best = tc ? c : best;
            arg = tc ? ia + W : arg;
            int td = d > best || d != d;
            best = td ? d : best;
            arg = td ? ia + W + 1 : arg;
            y[oh * OW + ow] = best;
            ix[oh * OW + ow] = arg;
        }
    }
}

/* The same 2x2 stride-2 pooling with AVX-512, one output row (up to 16 outputs) per step: two
 * masked loads per input row, even/odd lanes split by permutes, and the same comparisons as
 * maxpool22 (a later value wins when it is greater or NaN), so values and indices are equal. For
 * planes under 2^31 values (the indices are built in 32-bit lanes). */
__attribute__((target("avx512f"))) static void maxpool22_avx512(float *restrict y,
                                                                int64_t *restrict ix,
                                                                const float *restrict x, int64_t W,
                                                                int64_t OH, int64_t OW) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512i one = _mm512_set1_epi32(1), down = _mm512_set1_epi32((int)W);
    const __m512i diag = _mm512_set1_epi32((int)W + 1);
    for (int64_t oh = 0; oh < OH; oh++) {
        const float *r0 = x + 2 * oh * W, *r1 = r0 + W; // two input rows (2*OW used)
        for (int64_t ow = 0; ow < OW; ow += 16) {
            unsigned n = (unsigned)(OW - ow < 16 ? OW - ow : 16); /* outputs in this step */
            __mmask16 mo = (__mmask16)((1u << n) - 1);
            __mmask16 ml = (__mmask16)(n >= 8 ? 0xFFFFu : (1u << (2 * n)) - 1);
            __mmask16 mh = (__mmask16)(n > 8 ? (1u << (2 * n - 16)) - 1 : 0);
            __m512 l0 = _mm512_maskz_loadu_ps(ml, r0 + 2 * ow);
            __m512 h0 = _mm512_maskz_loadu_ps(mh, r0 + 2 * ow + 16);
            __m512 l1 = _mm512_maskz_loadu_ps(ml, r1 + 2 * ow);
            __m512 h1 = _mm512_maskz_loadu_ps(mh, r1 + 2 * ow + 16);
            __m512 a = _mm512_permutex2var_ps(l0, ev, h0), b = _mm512_permutex2var_ps(l0, od, h0);
            __m512 c = _mm512_permutex2var_ps(l1, ev, h1), d = _mm512_permutex2var_ps(l1, od, h1);
            __m512i base = _mm512_add_epi32(_mm512_set1_epi32((int)(2 * oh * W + 2 * ow)), ev);
            __m512 best = a;
            __m512i arg = base;
            __mmask16 m =
                _mm512_cmp_ps_mask(b, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, m, b);
            arg = _mm512_mask_add_epi32(arg, m, base, one);
            m = _mm512_cmp_ps_mask(c, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, m, c);
            arg = _mm512_mask_add_epi32(arg, m, base, down);
            m = _mm512_cmp_ps_mask(d, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, m, d);
            arg = _mm512_mask_add_epi32(arg, m, base, diag);
            _mm512_mask_storeu_ps(y + oh * OW + ow, mo, best);
            _mm512_mask_storeu_epi64(ix + oh * OW + ow, (__mmask8)mo,
                                     _mm512_cvtepi32_epi64(_mm512_castsi512_si256(arg)));
            _mm512_mask_storeu_epi64(ix + oh * OW + ow + 8, (__mmask8)(mo >> 8),
                                     _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(arg, 1)));
        }
    }
}

static int have_avx512f(void) { return __builtin_cpu_supports("avx512f"); }

/* One max-pooling call, its planes (n, c) split over ddl's threads (each plane is its own). */
typedef struct {
    float *out;
    int64_t *indices;
    const float *inp;
    float *dinp;
    const float *dout;
    const int64_t *cindices;
    int64_t H, W, OH, OW, KH, KW, sh, sw, ph, pw, planes;
} max_job;

/* Threads for `planes` planes of `area` values: one per 2^16 values, at most one per plane. */
static int pool_threads(int64_t planes, int64_t area) {
    int64_t t = planes * area >> 16;
    if (t > planes) t = planes;
    return t < 1 ? 1 : (int)(t > 64 ? 64 : t);
}

/* Window [h0, h1) x [w0, w1) clipped to the input and PyTorch's count_include_pad divisor (the
 * window clipped to the padded input). */
typedef struct {
    int64_t h0, h1, w0, w1;
    int64_t count;
} avg_window;

static avg_window avg_window_at(int64_t oh, int64_t ow, int64_t H, int64_t W, int64_t KH,
                                int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    avg_window a;
    int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
    int64_t h1 = min64(h0 + KH, H + ph), w1 = min64(w0 + KW, W + pw);
    a.count = (h1 - h0) * (w1 - w0);
    a.h0 = max64(h0, 0), a.w0 = max64(w0, 0);
    a.h1 = min64(h1, H), a.w1 = min64(w1, W);
    return a;
}

/* PyTorch's adaptive bins: [floor(i*in/out), ceil((i+1)*in/out)). */
static int64_t bin_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
static int64_t bin_end(int64_t i, int64_t in, int64_t out) {
    return ((i + 1) * in + out - 1) / out;
}

static ddl_status adaptive_check(const char *who, int64_t N, int64_t C, int64_t H, int64_t W,
                                 int64_t OH, int64_t OW, const void *a, const char *an,
                                 const void *b, const char *bn) {
    if (an) DDL_TRY(check_buf(who, an, a, 1));
    if (bn) DDL_TRY(check_buf(who, bn, b, 1));
    DDL_TRY(check_positive(who, N, C, H, W, "output size", OH, OW));
    int64_t t;
    if (N > MAX_DIM || C > MAX_DIM || H > MAX_DIM || W > MAX_DIM || OH > MAX_DIM || OW > MAX_DIM ||
        !prod4(&t, N, C, H, W) || !prod4(&t, N, C, OH, OW))
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (%lld, %lld, %lld, %lld) or output (%lld, %lld) "
                 "is too large",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, (ll)OH, (ll)OW);
    return DDL_OK;
}

/* the per-plane loops: max_planes, ... (float32) and max_planes_f64, ... (float64) */
#define POOL_T float
#define POOL_NAME(x) x
#include "kernels/pool_impl.h"
#define POOL_T double
#define POOL_NAME(x) x##_f64
#include "kernels/pool_impl.h"

static void max_backward_worker(void *p, int tid, int nt) {
    const max_job *jb = p;
    max_back_planes(jb->dinp, jb->dout, jb->cindices, jb->planes * tid / nt,
                    jb->planes * (tid + 1) / nt, jb->H * jb->W, jb->OH * jb->OW);
}

static void max_forward_worker(void *p, int tid, int nt) {
    const max_job *jb = p;
    int64_t p0 = jb->planes * tid / nt, p1 = jb->planes * (tid + 1) / nt;
    const int64_t H = jb->H, W = jb->W, OH = jb->OH, OW = jb->OW;
    if (jb->KH == 2 && jb->KW == 2 && jb->sh == 2 && jb->sw == 2 && jb->ph == 0 && jb->pw == 0) {
        int vec = have_avx512f() && H * W < ((int64_t)1 << 31);
        for (int64_t p = p0; p < p1; p++) {
            float *y = jb->out + p * OH * OW;
            int64_t *ix = jb->indices + p * OH * OW;
            if (vec)
                maxpool22_avx512(y, ix, jb->inp + p * H * W, W, OH, OW);
            else
                maxpool22(y, ix, jb->inp + p * H * W, W, OH, OW);
        }
        return;
    }
    max_planes(jb->out, jb->indices, jb->inp, p0, p1, H, W, OH, OW, jb->KH, jb->KW, jb->sh, jb->sw,
               jb->ph, jb->pw);
}

/* max pooling forward, float32 (planes over threads) or float64 (one thread). */
static ddl_status max_forward(int f64, void *out, int64_t *indices, const void *inp, int64_t N,
                              int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh,
                              int64_t sw, int64_t ph, int64_t pw) {
    // out (N, C, OH, OW), indices (N, C, OH, OW), inp (N, C, H, W)
    int64_t OH, OW;
    DDL_TRY(pool_check("max_pool2d", &OH, &OW, N, C, H, W, KH, KW, sh, sw, ph, pw, out, "out",
                       indices, "indices"));
    DDL_TRY(check_buf("max_pool2d", "inp", inp, 1));
    if (f64) {
        max_planes_f64(out, indices, inp, 0, N * C, H, W, OH, OW, KH, KW, sh, sw, ph, pw);
        return DDL_OK;
    }
    max_job jb = {out, indices, inp, NULL, NULL, NULL, H, W, OH, OW, KH, KW, sh, sw, ph, pw, N * C};
    ddl_parallel_run(pool_threads(N * C, H * W), max_forward_worker, &jb);
    return DDL_OK;
}

static ddl_status max_backward(int f64, void *dinp, const void *dout, const int64_t *indices,
                               int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
    // dinp (N, C, H, W), dout (N, C, OH, OW), indices (N, C, OH, OW)
    int64_t OH, OW;
    DDL_TRY(pool_check("max_pool2d_backward", &OH, &OW, N, C, H, W, KH, KW, sh, sw, ph, pw, dout,
                       "dout", indices, "indices"));
    if (!dinp) return DDL_OK;
    const int64_t total = N * C * OH * OW;
    for (int64_t i = 0; i < total; i++) /* checked before any write: nothing changes on error */
        if (indices[i] < 0 || indices[i] >= H * W)
            DDL_FAIL(DDL_E_INDEX,
                     "max_pool2d_backward: index %lld at position %lld is outside the "
                     "(%lld, %lld) input plane",
                     (ll)indices[i], (ll)i, (ll)H, (ll)W);
    if (f64) {
        max_back_planes_f64(dinp, dout, indices, 0, N * C, H * W, OH * OW);
        return DDL_OK;
    }
    max_job jb = {NULL, NULL, NULL, dinp, dout, indices, H,  W,    OH,
                  OW,   KH,   KW,   sh,   sw,   ph,      pw, N * C};
    ddl_parallel_run(pool_threads(N * C, H * W), max_backward_worker, &jb);
    return DDL_OK;
}

/* average pooling, forward (back 0: out from x) or backward (back 1: dinp += from dout) */
static ddl_status avg_pool(int f64, int back, void *y, const void *x, int64_t N, int64_t C,
                           int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                           int64_t ph, int64_t pw) {
    int64_t OH, OW;
    if (back)
        DDL_TRY(pool_check("avg_pool2d_backward", &OH, &OW, N, C, H, W, KH, KW, sh, sw, ph, pw, x,
                           "dout", NULL, NULL));
    else
        DDL_TRY(pool_check("avg_pool2d", &OH, &OW, N, C, H, W, KH, KW, sh, sw, ph, pw, y, "out", x,
                           "inp"));
    if (!y) return DDL_OK;
    if (f64)
        avg_planes_f64(back, y, y, x, x, N * C, H, W, OH, OW, KH, KW, sh, sw, ph, pw);
    else
        avg_planes(back, y, y, x, x, N * C, H, W, OH, OW, KH, KW, sh, sw, ph, pw);
    return DDL_OK;
}

/* adaptive average pooling, forward or backward as avg_pool */
static ddl_status adaptive_pool(int f64, int back, void *y, const void *x, int64_t N, int64_t C,
                                int64_t H, int64_t W, int64_t OH, int64_t OW) {
    if (back)
        DDL_TRY(adaptive_check("adaptive_avg_pool2d_backward", N, C, H, W, OH, OW, x, "dout", NULL,
                               NULL));
    else
        DDL_TRY(adaptive_check("adaptive_avg_pool2d", N, C, H, W, OH, OW, y, "out", x, "inp"));
    if (!y) return DDL_OK;
    if (f64)
        adaptive_planes_f64(back, y, y, x, x, N * C, H, W, OH, OW);
    else
        adaptive_planes(back, y, y, x, x, N * C, H, W, OH, OW);
    return DDL_OK;
}

/* ---- the public entry points, float32 then float64 --------------------------------------- */

ddl_status ddl_max_pool2d_forward(float *out, int64_t *indices, const float *inp, int64_t N,
                                  int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                  int64_t pad_w) {
    return max_forward(0, out, indices, inp, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
}

ddl_status ddl_max_pool2d_backward(float *dinp, const float *dout, const int64_t *indices,
                                   int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                                   int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                   int64_t pad_w) {
    return max_backward(0, dinp, dout, indices, N, C, H, W, KH, KW, stride_h, stride_w, pad_h,
                        pad_w);
}

ddl_status ddl_avg_pool2d_forward(float *out, const float *inp, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int64_t KH, int64_t KW, int64_t stride_h,
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w) {
    return avg_pool(0, 0, out, inp, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
}

ddl_status ddl_avg_pool2d_backward(float *dinp, const float *dout, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t KH, int64_t KW, int64_t stride_h,
                                   int64_t stride_w, int64_t pad_h, int64_t pad_w) {
    return avg_pool(0, 1, dinp, dout, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
}

ddl_status ddl_adaptive_avg_pool2d_forward(float *out, const float *inp, int64_t N, int64_t C,
                                           int64_t H, int64_t W, int64_t OH, int64_t OW) {
    return adaptive_pool(0, 0, out, inp, N, C, H, W, OH, OW);
}

ddl_status ddl_adaptive_avg_pool2d_backward(float *dinp, const float *dout, int64_t N, int64_t C,
                                            int64_t H, int64_t W, int64_t OH, int64_t OW) {
    return adaptive_pool(0, 1, dinp, dout, N, C, H, W, OH, OW);
}

ddl_status ddl_max_pool2d_forward_f64(double *out, int64_t *indices, const double *inp, int64_t N,
                                      int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                      int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w) {
    return max_forward(1, out, indices, inp, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
}

ddl_status ddl_max_pool2d_backward_f64(double *dinp, const double *dout, const int64_t *indices,
                                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                                       int64_t KW, int64_t stride_h, int64_t stride_w,
                                       int64_t pad_h, int64_t pad_w) {
    return max_backward(1, dinp, dout, indices, N, C, H, W, KH, KW, stride_h, stride_w, pad_h,
                        pad_w);
}

ddl_status ddl_avg_pool2d_forward_f64(double *out, const double *inp, int64_t N, int64_t C,
                                      int64_t H, int64_t W, int64_t KH, int64_t KW,
                                      int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w) {
    return avg_pool(1, 0, out, inp, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
}

ddl_status ddl_avg_pool2d_backward_f64(double *dinp, const double *dout, int64_t N, int64_t C,
                                       int64_t H, int64_t W, int64_t KH, int64_t KW,
                                       int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                       int64_t pad_w) {
    return avg_pool(1, 1, dinp, dout, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
}

ddl_status ddl_adaptive_avg_pool2d_forward_f64(double *out, const double *inp, int64_t N, int64_t C,
                                               int64_t H, int64_t W, int64_t OH, int64_t OW) {
    return adaptive_pool(1, 0, out, inp, N, C, H, W, OH, OW);
}

ddl_status ddl_adaptive_avg_pool2d_backward_f64(double *dinp, const double *dout, int64_t N,
                                                int64_t C, int64_t H, int64_t W, int64_t OH,
                                                int64_t OW) {
    return adaptive_pool(1, 1, dinp, dout, N, C, H, W, OH, OW);
}
