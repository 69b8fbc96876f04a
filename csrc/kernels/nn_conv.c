/* nn_conv.c: float32 kernels for conv2d (im2col + sgemm), max/avg/adaptive-avg pool2d, linear. */
#include "ddl/nn_conv.h"

#include "core/internal.h"

#include "core/blas.h"

#include <math.h>
#include <string.h>

/* Largest element count a buffer may have (keeps byte sizes and index arithmetic in int64). */
#define MAX_ELEMS ((int64_t)1 << 60)
/* Each size and parameter fits in an int (BLAS's index type), so sums and pairwise products
 * of them never overflow int64. */
#define MAX_DIM ((int64_t)2147483647)

typedef long long ll; /* for printf */

/* r = a*b*c*d, or 0 when it would pass MAX_ELEMS (all factors are >= 0). */
static int prod4(int64_t *r, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t v[4] = {a, b, c, d}, p = 1;
    for (int i = 0; i < 4; i++) {
        if (v[i] != 0 && p > MAX_ELEMS / v[i]) return 0;
        p *= v[i];
    }
    *r = p;
    return 1;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Sum in double with 8 independent partials: a single accumulator is a latency chain that makes
 * conv2d's dbias cost more than its dweight sgemm. */
static double sum_f32(const float *x, int64_t n) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += x[i + j];
    for (; i < n; i++) t += x[i];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + t;
}

/* Output size of a sliding window over (H, W); validates the window parameters. */
static ddl_status window_out_size(const char *who, int64_t *OH, int64_t *OW, int64_t H, int64_t W,
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
    ddl_status st = window_out_size(who, &g->OH, &g->OW, H, W, KH, KW, sh, sw, ph, pw, dh, dw);
    if (st != DDL_OK) return st;
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

ddl_status ddl_conv2d_out_size(int64_t *OH, int64_t *OW, int64_t H, int64_t W, int64_t KH,
                               int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w, int64_t dil_h, int64_t dil_w) {
    int64_t oh, ow;
    if (!OH || !OW) DDL_FAIL(DDL_E_VALUE, "conv2d_out_size: OH and OW must not be NULL");
    ddl_status st = window_out_size("conv2d", &oh, &ow, H, W, KH, KW, stride_h, stride_w, pad_h,
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

/* One sample's im2col: col[(c, kh, kw), (oh, ow)] = inp[c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw],
 * zero in the padding. */
static void im2col(float *col, const float *inp, const conv_geom *g) {
    // col (C*KH*KW, OH*OW), inp (C, H, W)
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, sw = g->sw;
    for (int64_t c = 0; c < g->C; c++) {
        const float *plane = inp + c * H * W; // (H, W)
        for (int64_t kh = 0; kh < g->KH; kh++) {
            for (int64_t kw = 0; kw < g->KW; kw++) {
                float *row = col + ((c * g->KH + kh) * g->KW + kw) * g->OHW; // (OH, OW)
                int64_t iw0 = kw * g->dw - g->pw, lo, hi;
                valid_range(&lo, &hi, iw0, sw, W, OW);
                for (int64_t oh = 0; oh < OH; oh++) {
                    float *r = row + oh * OW;
                    int64_t ih = oh * g->sh - g->ph + kh * g->dh;
                    if (ih < 0 || ih >= H) {
                        memset(r, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    if (hi > lo) {
                        const float *src = plane + ih * W + iw0 + lo * sw; // first valid column
                        if (sw == 1)
                            memcpy(r + lo, src, (size_t)(hi - lo) * sizeof(float));
                        else
                            for (int64_t ow = lo; ow < hi; ow++) r[ow] = src[(ow - lo) * sw];
                    }
                    for (int64_t ow = hi; ow < OW; ow++) r[ow] = 0.0f;
                }
            }
        }
    }
}

/* The adjoint of im2col: inp[c, ih, iw] += col[...] over every window position that reads it. */
static void col2im_add(float *inp, const float *col, const conv_geom *g) {
    // inp (C, H, W), col (C*KH*KW, OH*OW)
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, sw = g->sw;
    for (int64_t c = 0; c < g->C; c++) {
        float *plane = inp + c * H * W; // (H, W)
        for (int64_t kh = 0; kh < g->KH; kh++) {
            for (int64_t kw = 0; kw < g->KW; kw++) {
                const float *row = col + ((c * g->KH + kh) * g->KW + kw) * g->OHW; // (OH, OW)
                int64_t iw0 = kw * g->dw - g->pw, lo, hi;
                valid_range(&lo, &hi, iw0, sw, W, OW);
                for (int64_t oh = 0; oh < OH; oh++) {
                    int64_t ih = oh * g->sh - g->ph + kh * g->dh;
                    if (ih < 0 || ih >= H || hi == lo) continue;
                    const float *r = row + oh * OW;
                    float *dst = plane + ih * W + iw0 + lo * sw;
                    if (sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow - lo] += r[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) dst[(ow - lo) * sw] += r[ow];
                }
            }
        }
    }
}

ddl_status ddl_conv2d_forward(float *out, float *col_scratch, const float *inp, const float *weight,
                              const float *bias, int64_t N, int64_t C, int64_t H, int64_t W,
                              int64_t O, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                              int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w) {
    // out (N, O, OH, OW), col_scratch (C*KH*KW, OH*OW), inp (N, C, H, W), weight (O, C, KH, KW),
    // bias (O,)
    conv_geom g;
    ddl_status st = conv_geom_init(&g, "conv2d", N, C, H, W, O, KH, KW, stride_h, stride_w, pad_h,
                                   pad_w, dil_h, dil_w);
    if (st != DDL_OK) return st;
    if (!out || !inp || !weight)
        DDL_FAIL(DDL_E_VALUE, "conv2d: out, inp and weight must not be NULL");
    if (!col_scratch && !g.pointwise)
        DDL_FAIL(DDL_E_VALUE, "conv2d: col_scratch must not be NULL (it needs %lld floats)",
                 (ll)(g.CKK * g.OHW));
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C * H * W; // (C, H, W)
        float *y = out + n * O * g.OHW;       // (O, OH*OW)
        const float *b = x;                   // (C*KH*KW, OH*OW)
        if (!g.pointwise) {
            im2col(col_scratch, x, &g);
            b = col_scratch;
        }
        if (bias)
            for (int64_t o = 0; o < O; o++)
                for (int64_t i = 0; i < g.OHW; i++) y[o * g.OHW + i] = bias[o];
        ddl_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)g.OHW, (int)g.CKK,
                        1.0f, weight, (int)g.CKK, b, (int)g.OHW, bias ? 1.0f : 0.0f, y, (int)g.OHW);
    }
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
    ddl_status st = conv_geom_init(&g, "conv2d_backward", N, C, H, W, O, KH, KW, stride_h, stride_w,
                                   pad_h, pad_w, dil_h, dil_w);
    if (st != DDL_OK) return st;
    if (!dout) DDL_FAIL(DDL_E_VALUE, "conv2d_backward: dout must not be NULL");
    if (dweight && !inp) DDL_FAIL(DDL_E_VALUE, "conv2d_backward: dweight needs inp, which is NULL");
    if (dinp && !weight) DDL_FAIL(DDL_E_VALUE, "conv2d_backward: dinp needs weight, which is NULL");
    if ((dinp || dweight) && !col_scratch && !g.pointwise)
        DDL_FAIL(DDL_E_VALUE,
                 "conv2d_backward: col_scratch must not be NULL (it needs %lld floats)",
                 (ll)(g.CKK * g.OHW));
    const int64_t OHW = g.OHW, CKK = g.CKK;
    if (dbias) {
        for (int64_t o = 0; o < O; o++) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++) acc += sum_f32(dout + (n * O + o) * OHW, OHW);
            dbias[o] += (float)acc;
        }
    }
    if (!dinp && !dweight) return DDL_OK;
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dout + n * O * OHW; // (O, OH*OW)
        if (dweight) {
            const float *x = inp + n * C * H * W; // (C, H, W)
            const float *b = x;                   // (C*KH*KW, OH*OW)
            if (!g.pointwise) {
                im2col(col_scratch, x, &g);
                b = col_scratch;
            }
            // dweight (O, CKK) += dy (O, OHW) @ b^T (OHW, CKK)
            ddl_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)CKK, (int)OHW,
                            1.0f, dy, (int)OHW, b, (int)OHW, 1.0f, dweight, (int)CKK);
        }
        if (dinp) {
            float *dx = dinp + n * C * H * W; // (C, H, W)
            // dcol (CKK, OHW) = weight^T (CKK, O) @ dy (O, OHW); pointwise: dcol is dx itself
            if (g.pointwise) {
                ddl_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)OHW, (int)O,
                                1.0f, weight, (int)CKK, dy, (int)OHW, 1.0f, dx, (int)OHW);
            } else {
                ddl_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)OHW, (int)O,
                                1.0f, weight, (int)CKK, dy, (int)OHW, 0.0f, col_scratch, (int)OHW);
                col2im_add(dx, col_scratch, &g);
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
    ddl_status st = conv_geom_init(&g, "conv2d", N, C, H, W, O, KH, KW, stride_h, stride_w, pad_h,
                                   pad_w, dil_h, dil_w);
    if (st != DDL_OK) return st;
    if (!out || !inp || !weight)
        DDL_FAIL(DDL_E_VALUE, "conv2d: out, inp and weight must not be NULL");
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
    ddl_status st = conv_geom_init(&g, "conv2d_backward", N, C, H, W, O, KH, KW, stride_h, stride_w,
                                   pad_h, pad_w, dil_h, dil_w);
    if (st != DDL_OK) return st;
    if (!dout) DDL_FAIL(DDL_E_VALUE, "conv2d_backward: dout must not be NULL");
    if (dweight && !inp) DDL_FAIL(DDL_E_VALUE, "conv2d_backward: dweight needs inp, which is NULL");
    if (dinp && !weight) DDL_FAIL(DDL_E_VALUE, "conv2d_backward: dinp needs weight, which is NULL");
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

/* ---- pooling ----------------------------------------------------------------------------- */

static ddl_status pool_check(const char *who, int64_t *OH, int64_t *OW, int64_t N, int64_t C,
                             int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || KH < 1 || KW < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (N, C, H, W) = (%lld, %lld, %lld, %lld) and kernel (%lld, %lld) "
                 "must have positive sizes",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, (ll)KH, (ll)KW);
    if (N > MAX_DIM || C > MAX_DIM)
        DDL_FAIL(DDL_E_VALUE, "%s: sizes beyond 2^31 - 1 are not supported", who);
    ddl_status st = window_out_size(who, OH, OW, H, W, KH, KW, sh, sw, ph, pw, 1, 1);
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
    ddl_status st =
        pool_check("pool2d", &oh, &ow, 1, 1, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
    if (st != DDL_OK) return st;
    *OH = oh, *OW = ow;
    return DDL_OK;
}

/* The common 2x2, stride 2, no padding case, branch-free (first maximum wins, NaN wins) */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),
               optimize("no-trapping-math"))) static void maxpool22(float *restrict y, int64_t *restrict ix, const float *restrict x, int64_t W,
                      int64_t OH, int64_t OW) {
    for (int64_t oh = 0; oh < OH; oh++) {
        const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
        for (int64_t ow = 0; ow < OW; ow++) {
            float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            int64_t ia = 2 * oh * W + 2 * ow;
            float best = a; int64_t arg = ia;
            int tb = b > best || b != b; best = tb ? b : best; arg = tb ? ia + 1 : arg;
            int tc = c > best || c != c; best = tc ? c : best; arg = tc ? ia + W : arg;
            int td = d > best || d != d; best = td ? d : best; arg = td ? ia + W + 1 : arg;
            y[oh * OW + ow] = best;
            ix[oh * OW + ow] = arg;
        }
    }
}

ddl_status ddl_max_pool2d_forward(float *out, int64_t *indices, const float *inp, int64_t N,
                                  int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                  int64_t pad_w) {
    // out (N, C, OH, OW), indices (N, C, OH, OW), inp (N, C, H, W)
    int64_t OH, OW;
    ddl_status st =
        pool_check("max_pool2d", &OH, &OW, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
    if (st != DDL_OK) return st;
    if (!out || !indices || !inp)
        DDL_FAIL(DDL_E_VALUE, "max_pool2d: out, indices and inp must not be NULL");
    if (KH == 2 && KW == 2 && stride_h == 2 && stride_w == 2 && pad_h == 0 && pad_w == 0) {
        for (int64_t p = 0; p < N * C; p++)
            maxpool22(out + p * OH * OW, indices + p * OH * OW, inp + p * H * W, W, OH, OW);
        return DDL_OK;
    }
    for (int64_t p = 0; p < N * C; p++) {
        const float *x = inp + p * H * W; // (H, W)
        float *y = out + p * OH * OW;     // (OH, OW)
        int64_t *ix = indices + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * stride_h - pad_h, h1 = min64(h0 + KH, H);
            h0 = max64(h0, 0);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * stride_w - pad_w, w1 = min64(w0 + KW, W);
                w0 = max64(w0, 0);
                float best = -INFINITY;
                int64_t arg = h0 * W + w0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        float v = x[ih * W + iw];
                        if (v > best || isnan(v)) { /* PyTorch's rule: NaN wins */
                            best = v;
                            arg = ih * W + iw;
                        }
                    }
                y[oh * OW + ow] = best;
                ix[oh * OW + ow] = arg;
            }
        }
    }
    return DDL_OK;
}

ddl_status ddl_max_pool2d_backward(float *dinp, const float *dout, const int64_t *indices,
                                   int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH,
                                   int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                   int64_t pad_w) {
    // dinp (N, C, H, W), dout (N, C, OH, OW), indices (N, C, OH, OW)
    int64_t OH, OW;
    ddl_status st = pool_check("max_pool2d_backward", &OH, &OW, N, C, H, W, KH, KW, stride_h,
                               stride_w, pad_h, pad_w);
    if (st != DDL_OK) return st;
    if (!dout || !indices)
        DDL_FAIL(DDL_E_VALUE, "max_pool2d_backward: dout and indices must not be NULL");
    if (!dinp) return DDL_OK;
    const int64_t total = N * C * OH * OW;
    for (int64_t i = 0; i < total; i++) /* checked before any write: nothing changes on error */
        if (indices[i] < 0 || indices[i] >= H * W)
            DDL_FAIL(DDL_E_INDEX,
                     "max_pool2d_backward: index %lld at position %lld is outside the "
                     "(%lld, %lld) input plane",
                     (ll)indices[i], (ll)i, (ll)H, (ll)W);
    for (int64_t p = 0; p < N * C; p++) {
        float *dx = dinp + p * H * W;         // (H, W)
        const float *dy = dout + p * OH * OW; // (OH, OW)
        const int64_t *ix = indices + p * OH * OW;
        for (int64_t i = 0; i < OH * OW; i++) dx[ix[i]] += dy[i];
    }
    return DDL_OK;
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

ddl_status ddl_avg_pool2d_forward(float *out, const float *inp, int64_t N, int64_t C, int64_t H,
                                  int64_t W, int64_t KH, int64_t KW, int64_t stride_h,
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w) {
    // out (N, C, OH, OW), inp (N, C, H, W)
    int64_t OH, OW;
    ddl_status st =
        pool_check("avg_pool2d", &OH, &OW, N, C, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
    if (st != DDL_OK) return st;
    if (!out || !inp) DDL_FAIL(DDL_E_VALUE, "avg_pool2d: out and inp must not be NULL");
    for (int64_t p = 0; p < N * C; p++) {
        const float *x = inp + p * H * W; // (H, W)
        float *y = out + p * OH * OW;     // (OH, OW)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                avg_window a =
                    avg_window_at(oh, ow, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
                double acc = 0.0;
                for (int64_t ih = a.h0; ih < a.h1; ih++)
                    for (int64_t iw = a.w0; iw < a.w1; iw++) acc += x[ih * W + iw];
                y[oh * OW + ow] = (float)(acc / (double)a.count);
            }
    }
    return DDL_OK;
}

ddl_status ddl_avg_pool2d_backward(float *dinp, const float *dout, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t KH, int64_t KW, int64_t stride_h,
                                   int64_t stride_w, int64_t pad_h, int64_t pad_w) {
    // dinp (N, C, H, W), dout (N, C, OH, OW)
    int64_t OH, OW;
    ddl_status st = pool_check("avg_pool2d_backward", &OH, &OW, N, C, H, W, KH, KW, stride_h,
                               stride_w, pad_h, pad_w);
    if (st != DDL_OK) return st;
    if (!dout) DDL_FAIL(DDL_E_VALUE, "avg_pool2d_backward: dout must not be NULL");
    if (!dinp) return DDL_OK;
    for (int64_t p = 0; p < N * C; p++) {
        float *dx = dinp + p * H * W;         // (H, W)
        const float *dy = dout + p * OH * OW; // (OH, OW)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                avg_window a =
                    avg_window_at(oh, ow, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w);
                float g = dy[oh * OW + ow] / (float)a.count;
                for (int64_t ih = a.h0; ih < a.h1; ih++)
                    for (int64_t iw = a.w0; iw < a.w1; iw++) dx[ih * W + iw] += g;
            }
    }
    return DDL_OK;
}

/* PyTorch's adaptive bins: [floor(i*in/out), ceil((i+1)*in/out)). */
static int64_t bin_start(int64_t i, int64_t in, int64_t out) { return i * in / out; }
static int64_t bin_end(int64_t i, int64_t in, int64_t out) {
    return ((i + 1) * in + out - 1) / out;
}

static ddl_status adaptive_check(const char *who, int64_t N, int64_t C, int64_t H, int64_t W,
                                 int64_t OH, int64_t OW) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || OH < 1 || OW < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (N, C, H, W) = (%lld, %lld, %lld, %lld) and output size "
                 "(%lld, %lld) must be positive",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, (ll)OH, (ll)OW);
    int64_t t;
    if (N > MAX_DIM || C > MAX_DIM || H > MAX_DIM || W > MAX_DIM || OH > MAX_DIM || OW > MAX_DIM ||
        !prod4(&t, N, C, H, W) || !prod4(&t, N, C, OH, OW))
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (%lld, %lld, %lld, %lld) or output (%lld, %lld) "
                 "is too large",
                 who, (ll)N, (ll)C, (ll)H, (ll)W, (ll)OH, (ll)OW);
    return DDL_OK;
}

ddl_status ddl_adaptive_avg_pool2d_forward(float *out, const float *inp, int64_t N, int64_t C,
                                           int64_t H, int64_t W, int64_t OH, int64_t OW) {
    // out (N, C, OH, OW), inp (N, C, H, W)
    ddl_status st = adaptive_check("adaptive_avg_pool2d", N, C, H, W, OH, OW);
    if (st != DDL_OK) return st;
    if (!out || !inp) DDL_FAIL(DDL_E_VALUE, "adaptive_avg_pool2d: out and inp must not be NULL");
    for (int64_t p = 0; p < N * C; p++) {
        const float *x = inp + p * H * W; // (H, W)
        float *y = out + p * OH * OW;     // (OH, OW)
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
                double acc = 0.0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) acc += x[ih * W + iw];
                y[oh * OW + ow] = (float)(acc / (double)((h1 - h0) * (w1 - w0)));
            }
        }
    }
    return DDL_OK;
}

ddl_status ddl_adaptive_avg_pool2d_backward(float *dinp, const float *dout, int64_t N, int64_t C,
                                            int64_t H, int64_t W, int64_t OH, int64_t OW) {
    // dinp (N, C, H, W), dout (N, C, OH, OW)
    ddl_status st = adaptive_check("adaptive_avg_pool2d_backward", N, C, H, W, OH, OW);
    if (st != DDL_OK) return st;
    if (!dout) DDL_FAIL(DDL_E_VALUE, "adaptive_avg_pool2d_backward: dout must not be NULL");
    if (!dinp) return DDL_OK;
    for (int64_t p = 0; p < N * C; p++) {
        float *dx = dinp + p * H * W;         // (H, W)
        const float *dy = dout + p * OH * OW; // (OH, OW)
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
                float g = (float)(dy[oh * OW + ow] / (double)((h1 - h0) * (w1 - w0)));
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) dx[ih * W + iw] += g;
            }
        }
    }
    return DDL_OK;
}

/* ---- linear ------------------------------------------------------------------------------ */

static ddl_status linear_check(const char *who, int64_t B, int64_t IN, int64_t OUT) {
    if (B < 1 || IN < 1 || OUT < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (B, IN) = (%lld, %lld) and weight (OUT, IN) = (%lld, %lld) must "
                 "have positive sizes",
                 who, (ll)B, (ll)IN, (ll)OUT, (ll)IN);
    int64_t t;
    if (B > MAX_DIM || IN > MAX_DIM || OUT > MAX_DIM || !prod4(&t, B, IN, 1, 1) ||
        !prod4(&t, B, OUT, 1, 1) || !prod4(&t, OUT, IN, 1, 1))
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (%lld, %lld) with weight (%lld, %lld) is too large (BLAS "
                 "dimensions are limited to 2^31 - 1)",
                 who, (ll)B, (ll)IN, (ll)OUT, (ll)IN);
    return DDL_OK;
}

ddl_status ddl_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int64_t B, int64_t IN, int64_t OUT) {
    // out (B, OUT), inp (B, IN), weight (OUT, IN), bias (OUT,)
    ddl_status st = linear_check("linear", B, IN, OUT);
    if (st != DDL_OK) return st;
    if (!out || !inp || !weight)
        DDL_FAIL(DDL_E_VALUE, "linear: out, inp and weight must not be NULL");
    if (bias)
        for (int64_t b = 0; b < B; b++) memcpy(out + b * OUT, bias, (size_t)OUT * sizeof(float));
    ddl_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)OUT, (int)IN, 1.0f, inp,
                    (int)IN, weight, (int)IN, bias ? 1.0f : 0.0f, out, (int)OUT);
    return DDL_OK;
}

ddl_status ddl_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int64_t B, int64_t IN,
                               int64_t OUT) {
    // dinp (B, IN), dweight (OUT, IN), dbias (OUT,), dout (B, OUT), inp (B, IN),
    // weight (OUT, IN)
    ddl_status st = linear_check("linear_backward", B, IN, OUT);
    if (st != DDL_OK) return st;
    if (!dout) DDL_FAIL(DDL_E_VALUE, "linear_backward: dout must not be NULL");
    if (dweight && !inp) DDL_FAIL(DDL_E_VALUE, "linear_backward: dweight needs inp, which is NULL");
    if (dinp && !weight) DDL_FAIL(DDL_E_VALUE, "linear_backward: dinp needs weight, which is NULL");
    if (dinp) /* dinp (B, IN) += dout (B, OUT) @ weight (OUT, IN) */
        ddl_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)IN, (int)OUT, 1.0f,
                        dout, (int)OUT, weight, (int)IN, 1.0f, dinp, (int)IN);
    if (dweight) /* dweight (OUT, IN) += dout^T (OUT, B) @ inp (B, IN) */
        ddl_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OUT, (int)IN, (int)B, 1.0f,
                        dout, (int)OUT, inp, (int)IN, 1.0f, dweight, (int)IN);
    if (dbias) {
        /* Row by row keeps the reads contiguous; a float partial per column would lose bits
         * over large B, so sum in blocks of 256 columns into doubles. */
        double acc[256];
        for (int64_t j0 = 0; j0 < OUT; j0 += 256) {
            int64_t nj = min64(256, OUT - j0);
            for (int64_t j = 0; j < nj; j++) acc[j] = 0.0;
            for (int64_t b = 0; b < B; b++) {
                const float *r = dout + b * OUT + j0;
                for (int64_t j = 0; j < nj; j++) acc[j] += r[j];
            }
            for (int64_t j = 0; j < nj; j++) dbias[j0 + j] += (float)acc[j];
        }
    }
    return DDL_OK;
}

ddl_status ddl_linear_forward_naive(float *out, const float *inp, const float *weight,
                                    const float *bias, int64_t B, int64_t IN, int64_t OUT) {
    // out (B, OUT), inp (B, IN), weight (OUT, IN), bias (OUT,)
    ddl_status st = linear_check("linear", B, IN, OUT);
    if (st != DDL_OK) return st;
    if (!out || !inp || !weight)
        DDL_FAIL(DDL_E_VALUE, "linear: out, inp and weight must not be NULL");
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < OUT; j++) {
            double acc = bias ? bias[j] : 0.0;
            for (int64_t i = 0; i < IN; i++) acc += (double)inp[b * IN + i] * weight[j * IN + i];
            out[b * OUT + j] = (float)acc;
        }
    return DDL_OK;
}

ddl_status ddl_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *weight, int64_t B, int64_t IN,
                                     int64_t OUT) {
    // dinp (B, IN), dweight (OUT, IN), dbias (OUT,), dout (B, OUT), inp (B, IN),
    // weight (OUT, IN)
    ddl_status st = linear_check("linear_backward", B, IN, OUT);
    if (st != DDL_OK) return st;
    if (!dout) DDL_FAIL(DDL_E_VALUE, "linear_backward: dout must not be NULL");
    if (dweight && !inp) DDL_FAIL(DDL_E_VALUE, "linear_backward: dweight needs inp, which is NULL");
    if (dinp && !weight) DDL_FAIL(DDL_E_VALUE, "linear_backward: dinp needs weight, which is NULL");
    if (dinp)
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < IN; i++) {
                double acc = 0.0;
                for (int64_t j = 0; j < OUT; j++)
                    acc += (double)dout[b * OUT + j] * weight[j * IN + i];
                dinp[b * IN + i] += (float)acc;
            }
    if (dweight)
        for (int64_t j = 0; j < OUT; j++)
            for (int64_t i = 0; i < IN; i++) {
                double acc = 0.0;
                for (int64_t b = 0; b < B; b++) acc += (double)dout[b * OUT + j] * inp[b * IN + i];
                dweight[j * IN + i] += (float)acc;
            }
    if (dbias)
        for (int64_t j = 0; j < OUT; j++) {
            double acc = 0.0;
            for (int64_t b = 0; b < B; b++) acc += dout[b * OUT + j];
            dbias[j] += (float)acc;
        }
    return DDL_OK;
}
