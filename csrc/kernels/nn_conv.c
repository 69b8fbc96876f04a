/* nn_conv.c: conv2d kernels (float32: batched im2col + sgemm with the batch split over ddl's
 * threads, direct loops for few taps; float64: per-sample im2col + dgemm) with their `_naive`
 * twin for the tests; also the sliding-window size check that pooling shares
 * (kernels/common.h). Linear is in nn_linear.c. */
#include "ddl/nn_conv.h"

#include "core/internal.h"

#include "core/blas.h"
#include "kernels/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The dinp products: the layer GEMM (ddl_gemm_f32), or in the planted-error test build a
 * scaled sgemm (kernels/common.h's PLANT). */
static void gemm_dinp(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#ifdef DDL_PLANT_BACKWARD_ERROR
    ddl_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, PLANT(1.0f), A, (int)lda, B, (int)ldb, beta, C,
                    (int)ldc);
#else
    ddl_gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
#endif
}

/* Output size of a sliding window over (H, W); validates the window parameters. */
ddl_status ddl_window_out_size(const char *who, int64_t *OH, int64_t *OW, int64_t H, int64_t W,
                               int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, int64_t dh, int64_t dw) {
    if (H < 1 || W < 1 || KH < 1 || KW < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (%lld, %lld) and kernel (%lld, %lld) sizes must be positive", who,
                 (ll)H, (ll)W, (ll)KH, (ll)KW);
    if (sh < 1 || sw < 1)
        DDL_FAIL(DDL_E_VALUE, "%s: stride (%lld, %lld) must be positive", who, (ll)sh, (ll)sw);
    if (dh < 1 || dw < 1)
        DDL_FAIL(DDL_E_VALUE, "%s: dilation (%lld, %lld) must be positive", who, (ll)dh, (ll)dw);
    if (ph < 0 || pw < 0)
        DDL_FAIL(DDL_E_VALUE, "%s: padding (%lld, %lld) must be non-negative", who, (ll)ph, (ll)pw);
    if (H > MAX_DIM || W > MAX_DIM || KH > MAX_DIM || KW > MAX_DIM || sh > MAX_DIM ||
        sw > MAX_DIM || ph > MAX_DIM || pw > MAX_DIM || dh > MAX_DIM || dw > MAX_DIM)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: sizes, strides, padding and dilation beyond 2^31 - 1 "
                 "are not supported",
                 who);
    int64_t eh = dh * (KH - 1) + 1, ew = dw * (KW - 1) + 1; /* dilated kernel extent */
    int64_t PH = H + 2 * ph, PW = W + 2 * pw;               /* padded input */
    if (PH < eh || PW < ew) {
        if (dh == 1 && dw == 1)
            DDL_FAIL(DDL_E_VALUE,
                     "%s: kernel (%lld, %lld) is larger than the padded input (%lld, %lld)", who,
                     (ll)KH, (ll)KW, (ll)PH, (ll)PW);
        DDL_FAIL(DDL_E_VALUE,
                 "%s: kernel (%lld, %lld) with dilation (%lld, %lld) spans (%lld, %lld), "
                 "larger than the padded input (%lld, %lld)",
                 who, (ll)KH, (ll)KW, (ll)dh, (ll)dw, (ll)eh, (ll)ew, (ll)PH, (ll)PW);
    }
    *OH = (PH - eh) / sh + 1;
    *OW = (PW - ew) / sw + 1;
    return DDL_OK;
}
/* ---- conv2d ------------------------------------------------------------------------------ */

typedef struct {
    int64_t N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw;
    int64_t OH, OW, CKK, OHW;
    int pointwise; /* 1x1, stride 1, no padding: the input is its own im2col matrix */
} conv_geom;

static ddl_status conv_geom_init(conv_geom *g, const char *who, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int64_t O, int64_t KH, int64_t KW, int64_t sh,
                                 int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || O < 1 || KH < 1 || KW < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (N, C, H, W) = (%lld, %lld, %lld, %lld) and weight "
                 "(O, C, KH, KW) = (%lld, %lld, %lld, %lld) must have positive sizes",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, (ll)O, (ll)C, (ll)KH, (ll)KW);
    if (N > MAX_DIM || C > MAX_DIM || O > MAX_DIM)
        DDL_FAIL(DDL_E_VALUE, "%s: sizes beyond 2^31 - 1 are not supported", who);
    DDL_TRY(ddl_window_out_size(who, &g->OH, &g->OW, H, W, KH, KW, sh, sw, ph, pw, dh, dw));
    int64_t t;
    if (!prod4(&t, N, C, H, W) || !prod4(&t, N, O, g->OH, g->OW) || !prod4(&t, O, C, KH, KW) ||
        !prod4(&g->CKK, C, KH, KW, 1) || !prod4(&t, g->CKK, g->OH, g->OW, 1) || g->CKK > MAX_DIM ||
        g->OH * g->OW > MAX_DIM)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (%lld, %lld, %lld, %lld) with weight (%lld, %lld, %lld, %lld) "
                 "is too large (BLAS dimensions are limited to 2^31 - 1)",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, (ll)O, (ll)C, (ll)KH, (ll)KW);
    g->N = N, g->C = C, g->H = H, g->W = W, g->O = O, g->KH = KH, g->KW = KW;
    g->sh = sh, g->sw = sw, g->ph = ph, g->pw = pw, g->dh = dh, g->dw = dw;
    g->OHW = g->OH * g->OW;
    g->pointwise = KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    return DDL_OK;
}

/* A conv2d forward's (fast or naive) geometry and buffers. */
static ddl_status conv_forward_args(conv_geom *g, const void *out, const void *inp,
                                    const void *weight, int64_t N, int64_t C, int64_t H, int64_t W,
                                    int64_t O, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                                    int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
    DDL_TRY(conv_geom_init(g, "conv2d", N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw));
    return forward_bufs_check("conv2d", out, inp, weight);
}

/* A conv2d backward's (fast or naive) geometry and the inputs its gradients need. */
static ddl_status conv_backward_args(conv_geom *g, const void *dinp, const void *dweight,
                                     const void *dout, const void *inp, const void *weight,
                                     int64_t N, int64_t C, int64_t H, int64_t W, int64_t O,
                                     int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                     int64_t pw, int64_t dh, int64_t dw) {
    DDL_TRY(conv_geom_init(g, "conv2d_backward", N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw));
    return grad_inputs_check("conv2d_backward", dinp, dweight, dout, inp, weight);
}

/* The fast kernels' im2col scratch, needed unless the convolution is pointwise. */
static ddl_status col_scratch_check(const conv_geom *g, const char *who, const float *col) {
    if (!col && !g->pointwise)
        DDL_FAIL(DDL_E_VALUE, "%s: col_scratch must not be NULL (it needs %lld floats)", who,
                 (ll)(g->CKK * g->OHW));
    return DDL_OK;
}

ddl_status ddl_conv2d_out_size(int64_t *OH, int64_t *OW, int64_t H, int64_t W, int64_t KH,
                               int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w, int64_t dil_h, int64_t dil_w) {
    int64_t oh, ow;
    if (!OH || !OW) DDL_FAIL(DDL_E_VALUE, "conv2d_out_size: OH and OW must not be NULL");
    ddl_status st = ddl_window_out_size("conv2d", &oh, &ow, H, W, KH, KW, stride_h, stride_w, pad_h,
                                        pad_w, dil_h, dil_w);
    if (st != DDL_OK) return st;
    *OH = oh, *OW = ow;
    return DDL_OK;
}

ddl_status ddl_conv2d_scratch_floats(int64_t *nfloats, int64_t C, int64_t H, int64_t W, int64_t KH,
                                     int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, int64_t dil_h, int64_t dil_w) {
    conv_geom g;
    if (!nfloats) DDL_FAIL(DDL_E_VALUE, "conv2d_scratch_floats: nfloats must not be NULL");
    ddl_status st = conv_geom_init(&g, "conv2d", 1, C, H, W, 1, KH, KW, stride_h, stride_w, pad_h,
                                   pad_w, dil_h, dil_w);
    if (st != DDL_OK) return st;
    *nfloats = g.pointwise ? 0 : g.CKK * g.OHW;
    return DDL_OK;
}

/* Range [*lo, *hi) of output columns ow whose input column iw0 + ow*s lies in [0, W). */
static void valid_range(int64_t *lo, int64_t *hi, int64_t iw0, int64_t s, int64_t W, int64_t OW) {
    int64_t a = iw0 >= 0 ? 0 : (-iw0 + s - 1) / s;
    int64_t b = iw0 < W ? (W - 1 - iw0) / s + 1 : 0;
    a = min64(a, OW);
    b = min64(b, OW);
    *lo = a;
    *hi = max64(a, b);
}

/* im2col / col2im_add for float32 (im2col, col2im_add) and float64 (im2col_f64, ...) */
#define IM2COL_T float
#define IM2COL_NAME(x) x
#include "kernels/im2col_impl.h"
#define IM2COL_T double
#define IM2COL_NAME(x) x##_f64
#include "kernels/im2col_impl.h"

/* ---- im2col + sgemm, the batch split across threads ------------------------------------- */

/* A backward chunk's im2col matrix (C*KH*KW, nb*OH*OW) and its gradient matrix (O, nb*OH*OW)
 * stay under this many floats each (8 MiB): several samples per sgemm, and near the caches. */
#define CHUNK_FLOATS ((int64_t)1 << 21)

/* One conv2d call split over threads: thread tid takes samples [N*tid/n, N*(tid+1)/n) with
 * single-threaded sgemm (ddl_parallel_run). Forward: one sample at a time, thread 0's im2col in
 * the caller's col0, thread tid > 0's at ws + (tid-1)*ws_floats. Backward: chunks of nb samples
 * through the thread's own workspace (ws + tid*ws_floats); dweight of thread tid > 0 goes to
 * its private dw + (tid-1)*O*CKK, summed by the caller. */
typedef struct {
    const conv_geom *g;
    float *out, *dinp, *dweight, *ws, *dw, *col0;
    const float *inp, *weight, *bias, *dout;
    int64_t nb, ws_floats;
} conv_job;

/* Where a workspace's (O, CKK) doubles start (after col and mat; an even float offset). */
static int64_t acc_offset(const conv_geom *g, int64_t nb) {
    return ((g->CKK + g->O) * nb * g->OHW + 1) & ~(int64_t)1;
}

/* Threads and samples per chunk for g; the workspace floats per thread in *ws_floats. */
static int conv_plan(const conv_geom *g, int64_t *nb, int64_t *ws_floats) {
    int64_t nt = min64(min64(g->N, ddl_num_threads), 64);
    if (nt < 1) nt = 1;
    int64_t per = max64(g->CKK, g->O) * g->OHW;
    *nb = max64(1, min64((g->N + nt - 1) / nt, CHUNK_FLOATS / per));
    *ws_floats = acc_offset(g, *nb) + 2 * g->O * g->CKK; /* + small_k's doubles; even */
    return (int)nt;
}

/* ---- few taps (C*KH*KW <= SMALL_K, e.g. a first layer on 1-3 channels): direct loops ------ */

/* With so short a reduction, sgemm spends its time packing; the forward and the weight
 * gradient run as plain loops over one sample's im2col (in L1) instead, writing the output in
 * place (no copy out of a batched product). dinp keeps the sgemm path. */
#define SMALL_K 16

static int small_k(const conv_geom *g) { return g->CKK <= SMALL_K; }

/* y (n,) = sum_k w[k] * col[k*n .. k*n + n) (+ b afterwards) */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) static void
taps_combine(float *restrict y, const float *restrict w, const float *restrict col, int64_t K,
             int64_t n, float b) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        const float wk = w[k], *c = col + k * n;
        for (int64_t i = 0; i < n; i++) y[i] += wk * c[i];
    }
    for (int64_t i = 0; i < n; i++) y[i] += b;
}

/* dot(a, b) over n values in 16 float lanes (a fixed order), summed in double */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) static double
dot_lanes(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += a[i] * b[i];
    double s = 0.0;
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

/* out (n, O, OH, OW) = weight (O, CKK) @ im2col(x_n) + bias, samples [lo, hi), one at a time */
static void small_k_forward(const conv_job *jb, float *col, int64_t lo, int64_t hi) {
    const conv_geom *g = jb->g;
    const int64_t CHW = g->C * g->H * g->W, OHW = g->OHW, O = g->O, CKK = g->CKK;
    for (int64_t n = lo; n < hi; n++) {
        const float *c = jb->inp + n * CHW; // (CKK, OHW) when pointwise
        if (!g->pointwise) {
            im2col(col, OHW, c, g);
            c = col;
        }
        for (int64_t o = 0; o < O; o++)
            taps_combine(jb->out + (n * O + o) * OHW, jb->weight + o * CKK, c, CKK, OHW,
                         jb->bias ? jb->bias[o] : 0.0f);
    }
}

/* dweight (O, CKK) += sum_n dy_n (O, OHW) @ im2col(x_n)^T, samples [lo, hi), in doubles (acc) */
static void small_k_dweight(const conv_job *jb, float *col, double *acc, float *dweight, int64_t lo,
                            int64_t hi) {
    const conv_geom *g = jb->g;
    const int64_t CHW = g->C * g->H * g->W, OHW = g->OHW, O = g->O, CKK = g->CKK;
    for (int64_t i = 0; i < O * CKK; i++) acc[i] = 0.0;
    for (int64_t n = lo; n < hi; n++) {
        const float *c = jb->inp + n * CHW;
        if (!g->pointwise) {
            im2col(col, OHW, c, g);
            c = col;
        }
        for (int64_t o = 0; o < O; o++) {
            const float *dy = jb->dout + (n * O + o) * OHW; // (OHW,)
            for (int64_t k = 0; k < CKK; k++) acc[o * CKK + k] += dot_lanes(dy, c + k * OHW, OHW);
        }
    }
    for (int64_t i = 0; i < O * CKK; i++) dweight[i] += (float)acc[i];
}

/* out (n, O, OH, OW) = weight (O, CKK) @ im2col(x_n) + bias for samples [lo, hi), one sgemm
 * per sample straight into out: the sample's im2col (col, CKK*OHW floats) stays in L2 and
 * nothing is copied out of a batched product (measured faster than batching the forward; with
 * OpenBLAS at one thread inside ddl_parallel_run there is no pool to wake per sample). */
static void conv_forward_range(const conv_job *jb, float *col, int64_t lo, int64_t hi) {
    const conv_geom *g = jb->g;
    const int64_t CHW = g->C * g->H * g->W, OHW = g->OHW, O = g->O, CKK = g->CKK;
    if (small_k(g)) {
        small_k_forward(jb, col, lo, hi);
        return;
    }
    for (int64_t n = lo; n < hi; n++) {
        const float *x = jb->inp + n * CHW; // (C, H, W); pointwise: already (CKK, OHW)
        float *y = jb->out + n * O * OHW;   // (O, OH*OW)
        if (!g->pointwise) {
            im2col(col, OHW, x, g);
            x = col;
        }
        if (jb->bias)
            for (int64_t o = 0; o < O; o++)
                for (int64_t i = 0; i < OHW; i++) y[o * OHW + i] = jb->bias[o];
        ddl_gemm_f32(0, 0, O, OHW, CKK, jb->weight, CKK, x, OHW, jb->bias ? 1.0f : 0.0f, y, OHW);
    }
}

/* dweight += dy (O, m*OHW) @ im2col^T and dinp += col2im(weight^T @ dy), samples [lo, hi). */
static void conv_backward_range(const conv_job *jb, float *ws, float *dweight, int64_t lo,
                                int64_t hi) {
    const conv_geom *g = jb->g;
    const int64_t CHW = g->C * g->H * g->W, OHW = g->OHW, O = g->O, CKK = g->CKK, nb = jb->nb;
    float *col = ws, *dy = ws + CKK * nb * OHW; // (CKK, nb*OHW), (O, nb*OHW)
    if (small_k(g) && dweight) {
        double *acc = (double *)(ws + acc_offset(g, nb)); // (O, CKK), 8-byte aligned
        small_k_dweight(jb, col, acc, dweight, lo, hi);
        dweight = NULL; /* done; the loop below does dinp only */
        if (!jb->dinp) return;
    }
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
        int64_t m = min64(nb, hi - n0), ld = m * OHW;
        for (int64_t j = 0; j < m; j++)
            for (int64_t o = 0; o < O; o++)
                memcpy(dy + o * ld + j * OHW, jb->dout + ((n0 + j) * O + o) * OHW,
                       sizeof(float) * (size_t)OHW);
        if (dweight) {
            for (int64_t j = 0; j < m; j++) im2col(col + j * OHW, ld, jb->inp + (n0 + j) * CHW, g);
            ddl_gemm_f32(0, 1, O, CKK, ld, dy, ld, col, ld, 1.0f, dweight, CKK);
        }
        if (jb->dinp) {
            gemm_dinp(1, 0, CKK, ld, O, jb->weight, CKK, dy, ld, 0.0f, col, ld);
            for (int64_t j = 0; j < m; j++)
                col2im_add(jb->dinp + (n0 + j) * CHW, col + j * OHW, ld, g);
        }
    }
}

static void conv_forward_worker(void *p, int tid, int n) {
    const conv_job *jb = p;
    int64_t N = jb->g->N;
    float *col = tid == 0 ? jb->col0 : jb->ws + (tid - 1) * jb->ws_floats;
    conv_forward_range(jb, col, N * tid / n, N * (tid + 1) / n);
}

static void conv_backward_worker(void *p, int tid, int n) {
    const conv_job *jb = p;
    int64_t N = jb->g->N;
    float *dw = jb->dweight && tid > 0 ? jb->dw + (tid - 1) * jb->g->O * jb->g->CKK : jb->dweight;
    conv_backward_range(jb, jb->ws + tid * jb->ws_floats, dw, N * tid / n, N * (tid + 1) / n);
}

ddl_status ddl_conv2d_forward(float *out, float *col_scratch, const float *inp, const float *weight,
                              const float *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                              int64_t O, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                              int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w) {
    // out (N, O, OH, OW), col_scratch (C*KH*KW, OH*OW), inp (N, C, H, W), weight (O, C, KH, KW),
    // bias (O,)
    conv_geom g;
    DDL_TRY(conv_forward_args(&g, out, inp, weight, N, C, H, W, O, KH, KW, stride_h, stride_w,
                              pad_h, pad_w, dil_h, dil_w));
    DDL_TRY(col_scratch_check(&g, "conv2d", col_scratch));
    /* thread 0 im2cols into the caller's col_scratch, threads 1.. into one block of their own;
     * without memory for it, one thread does all */
    conv_job jb = {.g = &g,
                   .out = out,
                   .inp = inp,
                   .weight = weight,
                   .bias = bias,
                   .col0 = col_scratch,
                   .ws_floats = g.pointwise ? 0 : g.CKK * g.OHW};
    int nt = (int)min64(min64(N, ddl_num_threads), 64);
    if (nt > 1 && jb.ws_floats) {
        jb.ws = malloc(sizeof(float) * (size_t)((nt - 1) * jb.ws_floats));
        if (!jb.ws) nt = 1;
    }
    ddl_parallel_run(nt, conv_forward_worker, &jb);
    free(jb.ws);
    return DDL_OK;
}

ddl_status ddl_conv2d_backward(float *dinp, float *dweight, float *dbias, float *col_scratch,
                               const float *dout, const float *inp, const float *weight, int64_t N,
                               int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                               int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                               int64_t dil_h, int64_t dil_w) {
    // dinp (N, C, H, W), dweight (O, C, KH, KW), dbias (O,), col_scratch (C*KH*KW, OH*OW),
    // dout (N, O, OH, OW), inp (N, C, H, W), weight (O, C, KH, KW)
    conv_geom g;
    DDL_TRY(conv_backward_args(&g, dinp, dweight, dout, inp, weight, N, C, H, W, O, KH, KW,
                               stride_h, stride_w, pad_h, pad_w, dil_h, dil_w));
    if (dinp || dweight) DDL_TRY(col_scratch_check(&g, "conv2d_backward", col_scratch));
    const int64_t OHW = g.OHW, CKK = g.CKK;
    if (dbias) {
        for (int64_t o = 0; o < O; o++) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++) acc += sum_f32(dout + (n * O + o) * OHW, OHW);
            dbias[o] += (float)acc;
        }
    }
    if (!dinp && !dweight) return DDL_OK;
    conv_job jb = {
        .g = &g, .dinp = dinp, .dweight = dweight, .inp = inp, .weight = weight, .dout = dout};
    int nt = conv_plan(&g, &jb.nb, &jb.ws_floats);
    int64_t ndw = dweight ? (nt - 1) * O * CKK : 0; /* private dweight of threads 1.. */
    jb.ws = malloc(sizeof(float) * (size_t)(nt * jb.ws_floats + ndw));
    if (jb.ws) {
        jb.dw = jb.ws + nt * jb.ws_floats;
        if (ndw) memset(jb.dw, 0, sizeof(float) * (size_t)ndw);
        nt = ddl_parallel_run(nt, conv_backward_worker, &jb);
        for (int t = 1; t < nt && dweight; t++)
            for (int64_t i = 0; i < O * CKK; i++) dweight[i] += jb.dw[(t - 1) * O * CKK + i];
        free(jb.ws);
        return DDL_OK;
    }
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dout + n * O * OHW; // (O, OH*OW)
        if (dweight) {
            const float *x = inp + n * C * H * W; // (C, H, W)
            const float *b = x;                   // (C*KH*KW, OH*OW)
            if (!g.pointwise) {
                im2col(col_scratch, g.OHW, x, &g);
                b = col_scratch;
            }
            // dweight (O, CKK) += dy (O, OHW) @ b^T (OHW, CKK)
            ddl_gemm_f32(0, 1, O, CKK, OHW, dy, OHW, b, OHW, 1.0f, dweight, CKK);
        }
        if (dinp) {
            float *dx = dinp + n * C * H * W; // (C, H, W)
            // dcol (CKK, OHW) = weight^T (CKK, O) @ dy (O, OHW); pointwise: dcol is dx itself
            if (g.pointwise) {
                gemm_dinp(1, 0, CKK, OHW, O, weight, CKK, dy, OHW, 1.0f, dx, OHW);
            } else {
                gemm_dinp(1, 0, CKK, OHW, O, weight, CKK, dy, OHW, 0.0f, col_scratch, OHW);
                col2im_add(dx, col_scratch, g.OHW, &g);
            }
        }
    }
    return DDL_OK;
}

ddl_status ddl_conv2d_forward_naive(float *out, const float *inp, const float *weight,
                                    const float *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                                    int64_t O, int64_t KH, int64_t KW, int64_t stride_h,
                                    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                    int64_t dil_w) {
    // out (N, O, OH, OW), inp (N, C, H, W), weight (O, C, KH, KW), bias (O,)
    conv_geom g;
    DDL_TRY(conv_forward_args(&g, out, inp, weight, N, C, H, W, O, KH, KW, stride_h, stride_w,
                              pad_h, pad_w, dil_h, dil_w));
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oh = 0; oh < g.OH; oh++)
                for (int64_t ow = 0; ow < g.OW; ow++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t ih = oh * stride_h - pad_h + kh * dil_h;
                                int64_t iw = ow * stride_w - pad_w + kw * dil_w;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                acc += (double)inp[((n * C + c) * H + ih) * W + iw] *
                                       weight[((o * C + c) * KH + kh) * KW + kw];
                            }
                    out[((n * O + o) * g.OH + oh) * g.OW + ow] = (float)acc;
                }
    return DDL_OK;
}

ddl_status ddl_conv2d_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *weight, int64_t N, int64_t C,
                                     int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                                     int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, int64_t dil_h, int64_t dil_w) {
    // dinp (N, C, H, W), dweight (O, C, KH, KW), dbias (O,), dout (N, O, OH, OW),
    // inp (N, C, H, W), weight (O, C, KH, KW)
    conv_geom g;
    DDL_TRY(conv_backward_args(&g, dinp, dweight, dout, inp, weight, N, C, H, W, O, KH, KW,
                               stride_h, stride_w, pad_h, pad_w, dil_h, dil_w));
    const int64_t OH = g.OH, OW = g.OW;
    if (dbias)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < OH * OW; i++) acc += dout[(n * O + o) * OH * OW + i];
            dbias[o] += (float)acc;
        }
    if (dweight) /* gather: each weight sums over (n, oh, ow) */
        for (int64_t o = 0; o < O; o++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t kh = 0; kh < KH; kh++)
                    for (int64_t kw = 0; kw < KW; kw++) {
                        double acc = 0.0;
                        for (int64_t n = 0; n < N; n++)
                            for (int64_t oh = 0; oh < OH; oh++)
                                for (int64_t ow = 0; ow < OW; ow++) {
                                    int64_t ih = oh * stride_h - pad_h + kh * dil_h;
                                    int64_t iw = ow * stride_w - pad_w + kw * dil_w;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                    acc += (double)dout[((n * O + o) * OH + oh) * OW + ow] *
                                           inp[((n * C + c) * H + ih) * W + iw];
                                }
                        dweight[((o * C + c) * KH + kh) * KW + kw] += (float)acc;
                    }
    if (dinp) /* gather: each input element sums over the outputs whose window covers it */
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t ih = 0; ih < H; ih++)
                    for (int64_t iw = 0; iw < W; iw++) {
                        double acc = 0.0;
                        for (int64_t o = 0; o < O; o++)
                            for (int64_t kh = 0; kh < KH; kh++)
                                for (int64_t kw = 0; kw < KW; kw++) {
                                    int64_t th = ih + pad_h - kh * dil_h; /* = oh * stride_h */
                                    int64_t tw = iw + pad_w - kw * dil_w;
                                    if (th < 0 || tw < 0 || th % stride_h || tw % stride_w)
                                        continue;
                                    int64_t oh = th / stride_h, ow = tw / stride_w;
                                    if (oh >= OH || ow >= OW) continue;
                                    acc += (double)dout[((n * O + o) * OH + oh) * OW + ow] *
                                           weight[((o * C + c) * KH + kh) * KW + kw];
                                }
                        dinp[((n * C + c) * H + ih) * W + iw] += (float)acc;
                    }
    return DDL_OK;
}
/* ---- conv2d in float64: per-sample im2col + dgemm, one thread ---------------------------- */

/* The float64 im2col scratch (NULL with *col_out NULL when pointwise needs none). */
static ddl_status f64_scratch(double **col, const conv_geom *g, const char *who) {
    *col = NULL;
    if (g->pointwise) return DDL_OK;
    *col = malloc(sizeof(double) * (size_t)(g->CKK * g->OHW));
    if (!*col)
        DDL_FAIL(DDL_E_NOMEM, "%s: no memory for the %lld-double im2col scratch", who,
                 (ll)(g->CKK * g->OHW));
    return DDL_OK;
}

static void dgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda,
                  const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
    ddl_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, 1.0, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

ddl_status ddl_conv2d_forward_f64(double *out, const double *inp, const double *weight,
                                  const double *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                                  int64_t O, int64_t KH, int64_t KW, int64_t stride_h,
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                  int64_t dil_w) {
    // out (N, O, OH, OW), inp (N, C, H, W), weight (O, C, KH, KW), bias (O,)
    conv_geom g;
    DDL_TRY(conv_forward_args(&g, out, inp, weight, N, C, H, W, O, KH, KW, stride_h, stride_w,
                              pad_h, pad_w, dil_h, dil_w));
    double *col;
    DDL_TRY(f64_scratch(&col, &g, "conv2d"));
    for (int64_t n = 0; n < N; n++) {
        const double *x = inp + n * C * H * W; // (C, H, W)
        double *y = out + n * O * g.OHW;       // (O, OH*OW)
        const double *b = x;                   // (C*KH*KW, OH*OW)
        if (col) {
            im2col_f64(col, g.OHW, x, &g);
            b = col;
        }
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < g.OHW; i++) y[o * g.OHW + i] = bias ? bias[o] : 0.0;
        dgemm(0, 0, O, g.OHW, g.CKK, weight, g.CKK, b, g.OHW, 1.0, y, g.OHW);
    }
    free(col);
    return DDL_OK;
}

ddl_status ddl_conv2d_backward_f64(double *dinp, double *dweight, double *dbias, const double *dout,
                                   const double *inp, const double *weight, int64_t N, int64_t C,
                                   int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                                   int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                   int64_t dil_h, int64_t dil_w) {
    // dinp (N, C, H, W), dweight (O, C, KH, KW), dbias (O,), dout (N, O, OH, OW),
    // inp (N, C, H, W), weight (O, C, KH, KW)
    conv_geom g;
    DDL_TRY(conv_backward_args(&g, dinp, dweight, dout, inp, weight, N, C, H, W, O, KH, KW,
                               stride_h, stride_w, pad_h, pad_w, dil_h, dil_w));
    const int64_t OHW = g.OHW, CKK = g.CKK;
    if (dbias)
        for (int64_t o = 0; o < O; o++)
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < OHW; i++) dbias[o] += dout[(n * O + o) * OHW + i];
    if (!dinp && !dweight) return DDL_OK;
    double *col;
    DDL_TRY(f64_scratch(&col, &g, "conv2d_backward"));
    for (int64_t n = 0; n < N; n++) {
        const double *dy = dout + n * O * OHW; // (O, OH*OW)
        if (dweight) {
            const double *b = inp + n * C * H * W; // (C*KH*KW, OH*OW)
            if (col) {
                im2col_f64(col, OHW, b, &g);
                b = col;
            }
            dgemm(0, 1, O, CKK, OHW, dy, OHW, b, OHW, 1.0, dweight, CKK);
        }
        if (dinp) {
            double *dx = dinp + n * C * H * W; // (C, H, W)
            if (!col) {
                dgemm(1, 0, CKK, OHW, O, weight, CKK, dy, OHW, 1.0, dx, OHW);
            } else {
                dgemm(1, 0, CKK, OHW, O, weight, CKK, dy, OHW, 0.0, col, OHW);
                col2im_add_f64(dx, col, OHW, &g);
            }
        }
    }
    free(col);
    return DDL_OK;
}
