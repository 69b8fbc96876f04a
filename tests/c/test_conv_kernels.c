/* test_conv_kernels.c: nn_conv / nn_pool / nn_norm kernels against float64 references and their
 * `_naive` twins; backward by finite differences of float64 reference objectives (harness.h). */
#include "ddl/nn_conv.h"
#include "ddl/nn_norm.h"

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double srand1(void) { return 2 * urand() - 1; }
static float *fbuf(int64_t n) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = (float)srand1();
    return p;
}
static float *fcopy(const float *a, int64_t n) {
    float *p = malloc((size_t)n * sizeof(float));
    memcpy(p, a, (size_t)n * sizeof(float));
    return p;
}
static void fnan(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
}
static double maxabs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}
static double maxdiff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d) return INFINITY;
        m = fmax(m, d);
    }
    return m;
}

/* ---------------- conv2d ---------------- */
typedef struct {
    int64_t N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw;
} cc;
typedef struct {
    cc c;
    float *out, *col, *inp, *w, *b, *R;
    int64_t nout;
} conv_ctx;
/* The objective dot(conv2d(inp, w, b), R) through a double-precision direct convolution: finite differences of it measure
 * the backward against the exact derivative, not against float32 rounding noise. */
static double conv_loss_ref(void *p) {
    conv_ctx *k = p;
    cc c = k->c;
    int64_t OH, OW;
    ddl_conv2d_out_size(&OH, &OW, c.H, c.W, c.KH, c.KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    double L = 0;
    for (int64_t n = 0; n < c.N; n++)
        for (int64_t o = 0; o < c.O; o++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double acc = k->b[o];
                    for (int64_t ci = 0; ci < c.C; ci++)
                        for (int64_t kh = 0; kh < c.KH; kh++)
                            for (int64_t kw = 0; kw < c.KW; kw++) {
                                int64_t ih = oh * c.sh - c.ph + kh * c.dh,
                                        iw = ow * c.sw - c.pw + kw * c.dw;
                                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                                acc += (double)k->inp[((n * c.C + ci) * c.H + ih) * c.W + iw] *
                                       k->w[((o * c.C + ci) * c.KH + kh) * c.KW + kw];
                            }
                    L += acc * k->R[((n * c.O + o) * OH + oh) * OW + ow];
                }
    return L;
}
static double worst_conv_fd = 0;
static void test_conv(cc c) {
    int64_t OH, OW, ns;
    ddl_status st =
        ddl_conv2d_out_size(&OH, &OW, c.H, c.W, c.KH, c.KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    CHECK(st == DDL_OK, "out_size: %s", ddl_last_error());
    if (st) return;
    st = ddl_conv2d_scratch_floats(&ns, c.C, c.H, c.W, c.KH, c.KW, c.sh, c.sw, c.ph, c.pw, c.dh,
                                   c.dw);
    CHECK(st == DDL_OK, "scratch: %s", ddl_last_error());
    int64_t nin = c.N * c.C * c.H * c.W, nw = c.O * c.C * c.KH * c.KW, nout = c.N * c.O * OH * OW;
    float *inp = fbuf(nin), *w = fbuf(nw), *b = fbuf(c.O), *R = fbuf(nout);
    float *col = ns ? fbuf(ns) : NULL;
    float *o1 = fbuf(nout), *o2 = fbuf(nout);
    char tag[200];
    snprintf(
        tag, sizeof tag,
        "conv N%lld C%lld %lldx%lld O%lld k%lldx%lld s%lld,%lld p%lld,%lld d%lld,%lld -> %lldx%lld",
        (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.O,
        (long long)c.KH, (long long)c.KW, (long long)c.sh, (long long)c.sw, (long long)c.ph,
        (long long)c.pw, (long long)c.dh, (long long)c.dw, (long long)OH, (long long)OW);
    for (int withb = 0; withb < 2; withb++) {
        fnan(o1, nout);
        if (col) fnan(col, ns);
        st = ddl_conv2d_forward(o1, col, inp, w, withb ? b : NULL, c.N, c.C, c.H, c.W, c.O, c.KH,
                                c.KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
        CHECK(st == DDL_OK, "%s fwd: %s", tag, ddl_last_error());
        st = ddl_conv2d_forward_naive(o2, inp, w, withb ? b : NULL, c.N, c.C, c.H, c.W, c.O, c.KH,
                                      c.KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
        CHECK(st == DDL_OK, "%s fwd naive: %s", tag, ddl_last_error());
        double d = maxdiff(o1, o2, nout);
        CHECK(d <= 1e-5 * (1 + maxabs(o2, nout)), "%s bias=%d: fast vs naive fwd diff %g", tag,
              withb, d);
    }
    /* backward: fast vs naive, both accumulating onto the same random init */
    float *gi0 = fbuf(nin), *gw0 = fbuf(nw), *gb0 = fbuf(c.O);
    float *gi1 = fcopy(gi0, nin), *gw1 = fcopy(gw0, nw), *gb1 = fcopy(gb0, c.O);
    float *gi2 = fcopy(gi0, nin), *gw2 = fcopy(gw0, nw), *gb2 = fcopy(gb0, c.O);
    if (col) fnan(col, ns);
    st = ddl_conv2d_backward(gi1, gw1, gb1, col, R, inp, w, c.N, c.C, c.H, c.W, c.O, c.KH, c.KW,
                             c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    CHECK(st == DDL_OK, "%s bwd: %s", tag, ddl_last_error());
    st = ddl_conv2d_backward_naive(gi2, gw2, gb2, R, inp, w, c.N, c.C, c.H, c.W, c.O, c.KH, c.KW,
                                   c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    CHECK(st == DDL_OK, "%s bwd naive: %s", tag, ddl_last_error());
    double di = maxdiff(gi1, gi2, nin), dw_ = maxdiff(gw1, gw2, nw), db = maxdiff(gb1, gb2, c.O);
    CHECK(di <= 1e-5 * (1 + maxabs(gi2, nin)), "%s: dinp fast vs naive %g", tag, di);
    CHECK(dw_ <= 1e-5 * (1 + maxabs(gw2, nw)), "%s: dweight fast vs naive %g", tag, dw_);
    CHECK(db <= 1e-5 * (1 + maxabs(gb2, c.O)), "%s: dbias fast vs naive %g", tag, db);
    /* each gradient alone (others NULL, inputs not needed NULL) equals the full call */
    float *a = fcopy(gi0, nin);
    st = ddl_conv2d_backward(a, NULL, NULL, col, R, NULL, w, c.N, c.C, c.H, c.W, c.O, c.KH, c.KW,
                             c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    CHECK(st == DDL_OK && maxdiff(a, gi1, nin) == 0, "%s: dinp alone differs", tag);
    free(a);
    a = fcopy(gw0, nw);
    st = ddl_conv2d_backward(NULL, a, NULL, col, R, inp, NULL, c.N, c.C, c.H, c.W, c.O, c.KH, c.KW,
                             c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    CHECK(st == DDL_OK && maxdiff(a, gw1, nw) == 0, "%s: dweight alone differs", tag);
    free(a);
    a = fcopy(gb0, c.O);
    st = ddl_conv2d_backward(NULL, NULL, a, NULL, R, NULL, NULL, c.N, c.C, c.H, c.W, c.O, c.KH,
                             c.KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw);
    CHECK(st == DDL_OK && maxdiff(a, gb1, c.O) == 0, "%s: dbias alone differs", tag);
    free(a);
    /* finite differences on the gradients from zero */
    float *gi = calloc(nin, 4), *gw = calloc(nw, 4), *gb = calloc(c.O, 4);
    ddl_conv2d_backward(gi, gw, gb, col, R, inp, w, c.N, c.C, c.H, c.W, c.O, c.KH, c.KW, c.sh, c.sw,
                        c.ph, c.pw, c.dh, c.dw);
    /* running backward twice doubles the gradient */
    float *g2 = fcopy(gw, nw);
    ddl_conv2d_backward(NULL, g2, NULL, col, R, inp, w, c.N, c.C, c.H, c.W, c.O, c.KH, c.KW, c.sh,
                        c.sw, c.ph, c.pw, c.dh, c.dw);
    int dbl = 1;
    for (int64_t i = 0; i < nw; i++)
        if (fabsf(g2[i] - 2 * gw[i]) > 1e-5f * (1 + fabsf(gw[i]))) dbl = 0;
    CHECK(dbl, "%s: backward twice does not double dweight", tag);
    free(g2);
    conv_ctx k = {c, o1, col, inp, w, b, R, nout};
    double e;
    e = grad_check("conv2d_backward dinp", conv_loss_ref, &k, inp, nin, gi, 1e-2, GC_RTOL, 24);
    if (e > worst_conv_fd) worst_conv_fd = e;
    e = grad_check("conv2d_backward dweight", conv_loss_ref, &k, w, nw, gw, 1e-2, GC_RTOL, 24);
    if (e > worst_conv_fd) worst_conv_fd = e;
    e = grad_check("conv2d_backward dbias", conv_loss_ref, &k, b, c.O, gb, 1e-2, GC_RTOL, 24);
    if (e > worst_conv_fd) worst_conv_fd = e;
    FREE_ALL(gi, gw, gb, inp, w, b, R, col, o1, o2, gi0, gw0, gb0, gi1, gw1, gb1, gi2, gw2, gb2);
}

/* ---------------- linear ---------------- */
typedef struct {
    int64_t B, IN, OUT;
    float *out, *inp, *w, *b, *R;
} lin_ctx;
/* dot(linear(inp, w, b), R) in double (see conv_loss_ref) */
static double lin_loss_ref(void *p) {
    lin_ctx *k = p;
    double L = 0;
    for (int64_t b = 0; b < k->B; b++)
        for (int64_t j = 0; j < k->OUT; j++) {
            double acc = k->b[j];
            for (int64_t i = 0; i < k->IN; i++)
                acc += (double)k->inp[b * k->IN + i] * k->w[j * k->IN + i];
            L += acc * k->R[b * k->OUT + j];
        }
    return L;
}
static double worst_lin_fd = 0;
static void test_linear(int64_t B, int64_t IN, int64_t OUT) {
    float *inp = fbuf(B * IN), *w = fbuf(OUT * IN), *b = fbuf(OUT), *R = fbuf(B * OUT);
    float *o1 = fbuf(B * OUT), *o2 = fbuf(B * OUT);
    for (int withb = 0; withb < 2; withb++) {
        fnan(o1, B * OUT);
        CHECK(ddl_linear_forward(o1, inp, w, withb ? b : NULL, B, IN, OUT) == DDL_OK, "linear fwd");
        CHECK(ddl_linear_forward_naive(o2, inp, w, withb ? b : NULL, B, IN, OUT) == DDL_OK,
              "linear fwd naive");
        double d = maxdiff(o1, o2, B * OUT);
        CHECK(d <= 1e-5 * (1 + maxabs(o2, B * OUT)), "linear %lld,%lld,%lld bias=%d fwd diff %g",
              (long long)B, (long long)IN, (long long)OUT, withb, d);
    }
    float *gi0 = fbuf(B * IN), *gw0 = fbuf(OUT * IN), *gb0 = fbuf(OUT);
    float *gi1 = fcopy(gi0, B * IN), *gw1 = fcopy(gw0, OUT * IN), *gb1 = fcopy(gb0, OUT);
    float *gi2 = fcopy(gi0, B * IN), *gw2 = fcopy(gw0, OUT * IN), *gb2 = fcopy(gb0, OUT);
    CHECK(ddl_linear_backward(gi1, gw1, gb1, R, inp, w, B, IN, OUT) == DDL_OK, "linear bwd");
    CHECK(ddl_linear_backward_naive(gi2, gw2, gb2, R, inp, w, B, IN, OUT) == DDL_OK,
          "linear bwd naive");
    CHECK(maxdiff(gi1, gi2, B * IN) <= 1e-5 * (1 + maxabs(gi2, B * IN)), "linear dinp diff");
    CHECK(maxdiff(gw1, gw2, OUT * IN) <= 1e-5 * (1 + maxabs(gw2, OUT * IN)), "linear dweight diff");
    CHECK(maxdiff(gb1, gb2, OUT) <= 1e-5 * (1 + maxabs(gb2, OUT)), "linear dbias diff");
    float *gi = calloc(B * IN, 4), *gw = calloc(OUT * IN, 4), *gb = calloc(OUT, 4);
    ddl_linear_backward(gi, gw, gb, R, inp, w, B, IN, OUT);
    lin_ctx k = {B, IN, OUT, o1, inp, w, b, R};
    double e;
    e = grad_check("linear_backward dinp", lin_loss_ref, &k, inp, B * IN, gi, 1e-2, GC_RTOL, 24);
    if (e > worst_lin_fd) worst_lin_fd = e;
    e = grad_check("linear_backward dweight", lin_loss_ref, &k, w, OUT * IN, gw, 1e-2, GC_RTOL, 24);
    if (e > worst_lin_fd) worst_lin_fd = e;
    e = grad_check("linear_backward dbias", lin_loss_ref, &k, b, OUT, gb, 1e-2, GC_RTOL, 24);
    if (e > worst_lin_fd) worst_lin_fd = e;
    float *a = fcopy(gi0, B * IN);
    CHECK(ddl_linear_backward(a, NULL, NULL, R, NULL, w, B, IN, OUT) == DDL_OK &&
              maxdiff(a, gi1, B * IN) == 0,
          "linear dinp alone");
    FREE_ALL(a, gi, gw, gb, inp, w, b, R, o1, o2, gi0, gw0, gb0, gi1, gw1, gb1, gi2, gw2, gb2);
}

/* ---------------- pooling ---------------- */
typedef struct {
    int64_t N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW;
    int kind;
    float *out, *inp, *R;
    int64_t *idx;
} pool_ctx;
static void pool_fwd(pool_ctx *k) {
    if (k->kind == 0)
        ddl_max_pool2d_forward(k->out, k->idx, k->inp, k->N, k->C, k->H, k->W, k->KH, k->KW, k->sh,
                               k->sw, k->ph, k->pw);
    else if (k->kind == 1)
        ddl_avg_pool2d_forward(k->out, k->inp, k->N, k->C, k->H, k->W, k->KH, k->KW, k->sh, k->sw,
                               k->ph, k->pw);
    else
        ddl_adaptive_avg_pool2d_forward(k->out, k->inp, k->N, k->C, k->H, k->W, k->OH, k->OW);
}
static double worst_pool_fd = 0;
/* double reference of all three pools */
static void pool_ref(double *ref, int64_t *ridx, pool_ctx *k) {
    for (int64_t p = 0; p < k->N * k->C; p++)
        for (int64_t oh = 0; oh < k->OH; oh++)
            for (int64_t ow = 0; ow < k->OW; ow++) {
                int64_t h0, h1, w0, w1;
                double cnt;
                if (k->kind == 2) {
                    h0 = oh * k->H / k->OH;
                    h1 = (int64_t)ceil((double)(oh + 1) * k->H / k->OH);
                    w0 = ow * k->W / k->OW;
                    w1 = (int64_t)ceil((double)(ow + 1) * k->W / k->OW);
                    cnt = (double)(h1 - h0) * (w1 - w0);
                } else {
                    h0 = oh * k->sh - k->ph;
                    h1 = h0 + k->KH;
                    w0 = ow * k->sw - k->pw;
                    w1 = w0 + k->KW;
                    cnt = (double)k->KH * k->KW;
                }
                double s = 0, m = -INFINITY;
                int64_t am = -1;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W) continue;
                        double v = k->inp[(p * k->H + ih) * k->W + iw];
                        s += v;
                        if (v > m) {
                            m = v;
                            am = ih * k->W + iw;
                        }
                    }
                int64_t o = (p * k->OH + oh) * k->OW + ow;
                ref[o] = k->kind == 0 ? m : s / cnt;
                ridx[o] = am;
            }
}
/* dot(pool(inp), R) in double (see conv_loss_ref) */
static double pool_loss_ref(void *p) {
    pool_ctx *k = p;
    int64_t nout = k->N * k->C * k->OH * k->OW;
    double *ref = malloc(nout * 8), L = 0;
    int64_t *ridx = malloc(nout * 8);
    pool_ref(ref, ridx, k);
    for (int64_t i = 0; i < nout; i++) L += ref[i] * k->R[i];
    free(ref);
    free(ridx);
    return L;
}
static void test_pool(int kind, int64_t N, int64_t C, int64_t H, int64_t W, int64_t KH, int64_t KW,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t OHa, int64_t OWa) {
    pool_ctx k = {N, C, H, W, KH, KW, sh, sw, ph, pw, OHa, OWa, kind, 0, 0, 0, 0};
    if (kind < 2) {
        ddl_status st = ddl_pool2d_out_size(&k.OH, &k.OW, H, W, KH, KW, sh, sw, ph, pw);
        CHECK(st == 0, "pool out size: %s", ddl_last_error());
        if (st) return;
    }
    int64_t nin = N * C * H * W, nout = N * C * k.OH * k.OW;
    k.inp = malloc(nin * 4);
    k.out = fbuf(nout);
    k.R = fbuf(nout);
    k.idx = malloc(nout * 8);
    /* distinct values spaced 0.05 apart (no ties within eps for the max) in random order */
    for (int64_t i = 0; i < nin; i++) k.inp[i] = (float)(0.05 * (double)(i - nin / 2));
    for (int64_t i = nin - 1; i > 0; i--) {
        int64_t j = irand(0, i);
        float t = k.inp[i];
        k.inp[i] = k.inp[j];
        k.inp[j] = t;
    }
    fnan(k.out, nout);
    pool_fwd(&k);
    double *ref = malloc(nout * 8);
    int64_t *ridx = malloc(nout * 8);
    pool_ref(ref, ridx, &k);
    double d = 0;
    int idx_ok = 1;
    for (int64_t i = 0; i < nout; i++) {
        double e = fabs(k.out[i] - ref[i]);
        if (!(e <= d)) d = e;
        if (kind == 0 && k.idx[i] != ridx[i]) idx_ok = 0;
    }
    const char *nm[] = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"};
    CHECK(d <= 1e-5, "%s %lldx%lld k%lldx%lld s%lld,%lld p%lld,%lld -> %lldx%lld: fwd diff %g",
          nm[kind], (long long)H, (long long)W, (long long)KH, (long long)KW, (long long)sh,
          (long long)sw, (long long)ph, (long long)pw, (long long)k.OH, (long long)k.OW, d);
    CHECK(idx_ok, "%s: indices differ from reference argmax", nm[kind]);
    float *g0 = fbuf(nin), *g = fcopy(g0, nin);
    ddl_status st;
    if (kind == 0)
        st = ddl_max_pool2d_backward(g, k.R, k.idx, N, C, H, W, KH, KW, sh, sw, ph, pw);
    else if (kind == 1)
        st = ddl_avg_pool2d_backward(g, k.R, N, C, H, W, KH, KW, sh, sw, ph, pw);
    else
        st = ddl_adaptive_avg_pool2d_backward(g, k.R, N, C, H, W, k.OH, k.OW);
    CHECK(st == 0, "%s bwd: %s", nm[kind], ddl_last_error());
    for (int64_t i = 0; i < nin; i++) g[i] -= g0[i]; /* accumulated part */
    char what[64];
    snprintf(what, sizeof what, "%s_backward dinp", nm[kind]);
    double e = grad_check(what, pool_loss_ref, &k, k.inp, nin, g, 1e-2, GC_RTOL, 40);
    if (e > worst_pool_fd) worst_pool_fd = e;
    free(k.inp);
    free(k.out);
    free(k.R);
    free(k.idx);
    free(ref);
    free(ridx);
    free(g0);
    free(g);
}

/* ---------------- batch norm ---------------- */
typedef struct {
    int64_t N, C, S;
    int training, affine;
    float *out, *inp, *w, *b, *R, *rm, *rv;
} bn_ctx;
/* The loss through a double-precision reference forward (see conv_loss_ref; the batch
 * statistics of a shifted input also lose bits in float32). */
static double bn_loss_ref(void *p) {
    bn_ctx *k = p;
    int64_t N = k->N, C = k->C, S = k->S, M = N * S;
    double L = 0;
    for (int64_t c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t s = 0; s < S; s++) mean += k->inp[(i * C + c) * S + s];
        mean /= M;
        for (int64_t i = 0; i < N; i++)
            for (int64_t s = 0; s < S; s++) {
                double d = k->inp[(i * C + c) * S + s] - mean;
                var += d * d;
            }
        double um = k->training ? mean : k->rm[c], uv = k->training ? var / M : k->rv[c],
               is = 1 / sqrt(uv + 1e-5);
        for (int64_t i = 0; i < N; i++)
            for (int64_t s = 0; s < S; s++) {
                int64_t j = (i * C + c) * S + s;
                L += ((k->inp[j] - um) * is * (k->affine ? k->w[c] : 1) +
                      (k->affine ? k->b[c] : 0)) *
                     k->R[j];
            }
    }
    return L;
}
static double worst_bn_fd_ref = 0;
static void test_bn(int64_t N, int64_t C, int64_t S, int training, int affine, double shift) {
    int64_t n = N * C * S, M = N * S;
    float *inp = fbuf(n), *w = fbuf(C), *b = fbuf(C), *R = fbuf(n), *out = fbuf(n), *rm = fbuf(C),
          *rv = fbuf(C);
    for (int64_t i = 0; i < n; i++) inp[i] = (float)(inp[i] * 2 + shift);
    for (int64_t c = 0; c < C; c++) rv[c] = 0.5f + (float)urand();
    float *rm0 = fcopy(rm, C), *rv0 = fcopy(rv, C), *sm = fbuf(C), *si = fbuf(C);
    fnan(out, n);
    ddl_status st = ddl_batchnorm_forward(out, sm, si, rm, rv, inp, affine ? w : NULL,
                                          affine ? b : NULL, N, C, S, training, 0.1, 1e-5);
    CHECK(st == 0, "bn fwd: %s", ddl_last_error());
    /* double reference */
    double dout = 0, dstat = 0;
    for (int64_t c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t s = 0; s < S; s++) mean += inp[(i * C + c) * S + s];
        mean /= M;
        for (int64_t i = 0; i < N; i++)
            for (int64_t s = 0; s < S; s++) {
                double d = inp[(i * C + c) * S + s] - mean;
                var += d * d;
            }
        double vb = var / M, vu = var / (M - 1);
        double um = training ? mean : rm0[c], uv = training ? vb : rv0[c];
        double is = 1 / sqrt(uv + 1e-5);
        for (int64_t i = 0; i < N; i++)
            for (int64_t s = 0; s < S; s++) {
                int64_t j = (i * C + c) * S + s;
                double y = (inp[j] - um) * is * (affine ? w[c] : 1) + (affine ? b[c] : 0);
                dout = fmax(dout, fabs(y - out[j]));
            }
        double erm = training ? 0.9 * rm0[c] + 0.1 * mean : rm0[c];
        double erv = training ? 0.9 * rv0[c] + 0.1 * vu : rv0[c];
        dstat = fmax(dstat, fabs(erm - rm[c]) / (1 + fabs(erm)));
        dstat = fmax(dstat, fabs(erv - rv[c]) / (1 + fabs(erv)));
        dstat = fmax(dstat, fabs(um - sm[c]) / (1 + fabs(um)));
        dstat = fmax(dstat, fabs(is - si[c]) / (1 + fabs(is)));
    }
    CHECK(dout <= 2e-5 * (1 + fabs(shift) / 8),
          "bn N%lld C%lld S%lld train=%d affine=%d shift=%g: fwd diff %g", (long long)N,
          (long long)C, (long long)S, training, affine, shift, dout);
    CHECK(dstat <= 1e-6, "bn N%lld C%lld S%lld train=%d: stats diff %g", (long long)N, (long long)C,
          (long long)S, training, dstat);
    /* backward, accumulated on top of a random init */
    float *gi0 = fbuf(n), *gw0 = fbuf(C), *gb0 = fbuf(C);
    float *gi = fcopy(gi0, n), *gw = fcopy(gw0, C), *gb = fcopy(gb0, C);
    st = ddl_batchnorm_backward(gi, affine ? gw : NULL, affine ? gb : NULL, R, inp,
                                affine ? w : NULL, sm, si, N, C, S, training);
    CHECK(st == 0, "bn bwd: %s", ddl_last_error());
    for (int64_t i = 0; i < n; i++) gi[i] -= gi0[i];
    for (int64_t c = 0; c < C; c++) gw[c] -= gw0[c], gb[c] -= gb0[c];
    bn_ctx k = {N, C, S, training, affine, out, inp, w, b, R, rm0, rv0};
    double e;
    e = grad_check("batchnorm_backward dinp", bn_loss_ref, &k, inp, n, gi, 1e-3, GC_RTOL, 30);
    if (e > worst_bn_fd_ref) worst_bn_fd_ref = e;
    if (affine) {
        e = grad_check("batchnorm_backward dweight", bn_loss_ref, &k, w, C, gw, 1e-3, GC_RTOL, 30);
        if (e > worst_bn_fd_ref) worst_bn_fd_ref = e;
        e = grad_check("batchnorm_backward dbias", bn_loss_ref, &k, b, C, gb, 1e-3, GC_RTOL, 30);
        if (e > worst_bn_fd_ref) worst_bn_fd_ref = e;
    }
    /* eval-mode dinp needs no inp; dbias alone needs nothing but dout */
    if (!training) {
        float *g1 = calloc(n, 4);
        CHECK(ddl_batchnorm_backward(g1, NULL, NULL, R, NULL, affine ? w : NULL, sm, si, N, C, S,
                                     0) == 0,
              "bn eval dinp without inp");
        CHECK(maxdiff(g1, gi, n) <= 1e-5 * (1 + maxabs(gi, n)), "bn eval dinp alone differs");
        free(g1);
    }
    float *g2 = calloc(C, 4);
    CHECK(ddl_batchnorm_backward(NULL, NULL, g2, R, NULL, NULL, NULL, NULL, N, C, S, training) == 0,
          "bn dbias alone: %s", ddl_last_error());
    if (affine) CHECK(maxdiff(g2, gb, C) <= 1e-4 * (1 + maxabs(gb, C)), "bn dbias alone differs");
    FREE_ALL(g2, inp, w, b, R, out, rm, rv, rm0, rv0, sm, si, gi0, gw0, gb0, gi, gw, gb);
}

static void test_bn_hand(void) {
    /* N=2, C=1, S=2, x = [1, 2, 3, 4]: mean 2.5, biased var 1.25, unbiased 5/3 */
    float x[4] = {1, 2, 3, 4}, out[4], sm, si, rm = 0.0f, rv = 1.0f;
    ddl_status st =
        ddl_batchnorm_forward(out, &sm, &si, &rm, &rv, x, NULL, NULL, 2, 1, 2, 1, 0.1, 0.0);
    CHECK(st == 0, "bn hand");
    CHECK(fabsf(rm - 0.25f) < 1e-7f, "running_mean %.9g, want 0.25", rm);
    CHECK(fabsf(rv - (float)(0.9 + 0.1 * 5.0 / 3.0)) < 1e-7f, "running_var %.9g, want %.9g", rv,
          0.9 + 0.1 * 5.0 / 3.0);
    CHECK(fabsf(sm - 2.5f) < 1e-7f && fabsf(si - (float)(1 / sqrt(1.25))) < 1e-7f,
          "saved stats %g %g", sm, si);
    CHECK(fabsf(out[0] - (float)(-1.5 / sqrt(1.25))) < 1e-6f, "bn hand out[0] %g", out[0]);
    printf("bn hand: running_mean %.7f (want 0.25), running_var %.7f (want %.7f)\n", rm, rv,
           0.9 + 0.1 * 5.0 / 3.0);
    /* eval: uses running stats, leaves them alone */
    float rm2 = 0.5f, rv2 = 4.0f;
    st = ddl_batchnorm_forward(out, &sm, &si, &rm2, &rv2, x, NULL, NULL, 2, 1, 2, 0, 0.1, 0.0);
    CHECK(st == 0 && rm2 == 0.5f && rv2 == 4.0f && fabsf(out[3] - 1.75f) < 1e-6f,
          "bn eval hand: out[3]=%g", out[3]);
    /* momentum 1 and 0 */
    rm = 7;
    rv = 7;
    ddl_batchnorm_forward(out, NULL, NULL, &rm, &rv, x, NULL, NULL, 2, 1, 2, 1, 1.0, 1e-5);
    CHECK(rm == 2.5f && fabsf(rv - 5.0f / 3.0f) < 1e-7f, "momentum 1: %g %g", rm, rv);
    /* track_running_stats=False */
    CHECK(ddl_batchnorm_forward(out, NULL, NULL, NULL, NULL, x, NULL, NULL, 2, 1, 2, 1, 0.1,
                                1e-5) == 0,
          "bn without running stats");
}

static void expect_err(ddl_status st, ddl_status want, const char *substr) {
    CHECK(st == want && strstr(ddl_last_error(), substr) != NULL,
          "want status %d with '%s', got %d '%s'", want, substr, st, ddl_last_error());
}
static void test_errors(void) {
    float f[64] = {0};
    int64_t ix[64] = {0}, a, b;
    expect_err(ddl_conv2d_forward(f, f, f, f, NULL, 1, 1, 3, 3, 1, 5, 5, 1, 1, 0, 0, 1, 1),
               DDL_E_VALUE, "conv2d: kernel (5, 5) is larger than the padded input (3, 3)");
    printf("error message: %s\n", ddl_last_error());
    expect_err(ddl_conv2d_out_size(&a, &b, 3, 3, 3, 3, 1, 1, 0, 0, 2, 2), DDL_E_VALUE,
               "with dilation (2, 2) spans (5, 5)");
    printf("error message: %s\n", ddl_last_error());
    expect_err(ddl_conv2d_forward(f, f, f, f, NULL, 0, 1, 3, 3, 1, 1, 1, 1, 1, 0, 0, 1, 1),
               DDL_E_VALUE, "positive");
    printf("error message: %s\n", ddl_last_error());
    expect_err(ddl_conv2d_forward(f, f, f, f, NULL, 1, 1, 3, 3, 1, 1, 1, 0, 1, 0, 0, 1, 1),
               DDL_E_VALUE, "stride (0, 1)");
    expect_err(ddl_conv2d_forward(f, f, f, f, NULL, 1, 1, 3, 3, 1, 1, 1, 1, 1, -1, 0, 1, 1),
               DDL_E_VALUE, "padding (-1, 0)");
    expect_err(ddl_conv2d_forward(f, NULL, f, f, NULL, 1, 1, 3, 3, 1, 3, 3, 1, 1, 0, 0, 1, 1),
               DDL_E_VALUE, "col_scratch");
    expect_err(
        ddl_conv2d_forward(f, f, f, f, NULL, 1, (int64_t)1 << 40, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1),
        DDL_E_VALUE, "2^31");
    expect_err(
        ddl_conv2d_backward(NULL, f, NULL, f, f, NULL, f, 1, 1, 3, 3, 1, 3, 3, 1, 1, 0, 0, 1, 1),
        DDL_E_VALUE, "needs inp");
    expect_err(ddl_conv2d_out_size(&a, &b, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1), DDL_OK, "");
    CHECK(a == 1 && b == 1, "3x3 on 3x3 gives 1x1");
    expect_err(ddl_max_pool2d_forward(f, ix, f, 1, 1, 4, 4, 3, 3, 1, 1, 2, 2), DDL_E_VALUE,
               "padding (2, 2) must be at most half the kernel (3, 3)");
    printf("error message: %s\n", ddl_last_error());
    expect_err(ddl_avg_pool2d_forward(f, f, 1, 1, 2, 2, 5, 5, 1, 1, 1, 1), DDL_E_VALUE,
               "avg_pool2d: kernel (5, 5) is larger than the padded input (4, 4)");
    expect_err(ddl_adaptive_avg_pool2d_forward(f, f, 1, 1, 2, 2, 0, 1), DDL_E_VALUE, "positive");
    /* bad indices: error, and dinp untouched */
    float dinp[4] = {1, 2, 3, 4}, dy[1] = {5};
    int64_t bad[1] = {4};
    expect_err(ddl_max_pool2d_backward(dinp, dy, bad, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0), DDL_E_INDEX,
               "outside");
    CHECK(dinp[0] == 1 && dinp[3] == 4, "dinp changed on error");
    expect_err(ddl_linear_forward(f, f, f, NULL, 0, 2, 2), DDL_E_VALUE, "positive");
    printf("error message: %s\n", ddl_last_error());
    expect_err(ddl_batchnorm_forward(f, f, f, f, f, f, NULL, NULL, 1, 2, 1, 1, 0.1, 1e-5),
               DDL_E_VALUE, "more than 1 value per channel");
    printf("error message: %s\n", ddl_last_error());
    expect_err(ddl_batchnorm_forward(f, f, f, NULL, NULL, f, NULL, NULL, 2, 2, 1, 0, 0.1, 1e-5),
               DDL_E_VALUE, "eval mode needs");
    expect_err(ddl_batchnorm_forward(f, f, f, f, NULL, f, NULL, NULL, 2, 2, 1, 1, 0.1, 1e-5),
               DDL_E_VALUE, "both");
    expect_err(ddl_batchnorm_forward(f, f, f, NULL, NULL, f, NULL, NULL, 2, 2, 1, 1, 0.1, -1),
               DDL_E_VALUE, "eps");
    expect_err(ddl_batchnorm_backward(f, NULL, NULL, f, NULL, NULL, f, f, 2, 2, 1, 1), DDL_E_VALUE,
               "inp");
}

static void test_nan(void) {
    /* max pool propagates NaN like PyTorch; beta=0 sgemm must not read NaN garbage in out */
    float x[4] = {1, NAN, 3, 2}, y[1];
    int64_t i[1];
    ddl_max_pool2d_forward(y, i, x, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0);
    CHECK(isnan(y[0]) && i[0] == 1, "max pool NaN: %g %lld", y[0], (long long)i[0]);
    /* 2x2 over rows of 17 outputs (the vector path's full and masked steps): a NaN that comes
     * first stays (a later larger value does not replace it), a later NaN wins, ties keep the
     * first */
    float x2[2 * 34], y2[17];
    int64_t i2[17];
    for (int k = 0; k < 68; k++) x2[k] = 1.0f;
    x2[0] = NAN, x2[1] = 5, x2[34] = 7;   /* output 0: NaN at index 0 */
    x2[2] = 1, x2[3] = 2, x2[37] = NAN;   /* output 1: NaN at 37 */
    x2[32] = 4, x2[33] = 9, x2[66] = NAN; /* output 16 (masked step): NaN at 66 */
    ddl_max_pool2d_forward(y2, i2, x2, 1, 1, 2, 34, 2, 2, 2, 2, 0, 0);
    CHECK(isnan(y2[0]) && i2[0] == 0, "max pool NaN first: %g %lld", y2[0], (long long)i2[0]);
    CHECK(isnan(y2[1]) && i2[1] == 37, "max pool NaN later: %g %lld", y2[1], (long long)i2[1]);
    CHECK(isnan(y2[16]) && i2[16] == 66, "max pool NaN tail: %g %lld", y2[16], (long long)i2[16]);
    CHECK(y2[5] == 1.0f && i2[5] == 10, "max pool ties: %g %lld", y2[5], (long long)i2[5]);
}

int main(void) {
    harness_seed();
    cc fixed[] = {
        {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1},
        {1, 2, 8, 7, 3, 3, 2, 2, 2, 1, 0, 1, 1},   /* stride 2, 3x2 kernel */
        {2, 3, 9, 11, 2, 3, 3, 1, 2, 2, 1, 2, 2},  /* dilation 2 */
        {3, 5, 6, 5, 4, 1, 1, 1, 1, 0, 0, 1, 1},   /* pointwise fast path */
        {1, 4, 5, 5, 3, 1, 1, 2, 2, 0, 0, 1, 1},   /* 1x1 stride 2 */
        {1, 2, 5, 5, 3, 1, 1, 1, 1, 1, 1, 1, 1},   /* 1x1 with padding */
        {1, 2, 3, 3, 2, 5, 5, 1, 1, 1, 1, 1, 1},   /* kernel == padded input: 1x1 output */
        {2, 1, 28, 28, 8, 3, 3, 1, 1, 1, 1, 1, 1}, /* Fashion-MNIST-like */
        {1, 3, 4, 4, 2, 3, 3, 3, 3, 2, 2, 1, 1},   /* stride > kernel coverage, heavy padding */
        {1, 2, 1, 9, 3, 1, 3, 1, 2, 0, 1, 1, 3},   /* H = 1 */
        /* stride 1 with OW == W: the plane-contiguous im2col / col2im path */
        {2, 3, 6, 7, 4, 3, 3, 1, 1, 0, 1, 1, 1}, /* rows "valid", columns "same" */
        {1, 2, 5, 6, 3, 5, 3, 1, 1, 2, 2, 1, 2}, /* column dilation 2 */
        {2, 2, 4, 1, 3, 3, 1, 1, 1, 1, 0, 1, 1}, /* W = 1 */
        {3, 4, 2, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1}, /* 2x2 plane, 3x3 kernel */
        {2, 2, 3, 4, 3, 5, 5, 1, 1, 2, 2, 1, 1}, /* 5x5 taps past the plane */
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) test_conv(fixed[i]);
    int nrand = 0;
    while (nrand < 40) {
        cc c = {irand(1, 3), irand(1, 5), irand(1, 12), irand(1, 12), irand(1, 6),
                irand(1, 4), irand(1, 4), irand(1, 3),  irand(1, 3),  irand(0, 2),
                irand(0, 2), irand(1, 3), irand(1, 3)};
        int64_t a, b;
        if (ddl_conv2d_out_size(&a, &b, c.H, c.W, c.KH, c.KW, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw) !=
            DDL_OK)
            continue;
        test_conv(c);
        nrand++;
    }
    printf("conv2d: %zu fixed + %d random configs, worst FD rel err %.2e\n",
           sizeof fixed / sizeof *fixed, nrand, worst_conv_fd);
    int64_t ls[][3] = {{1, 1, 1}, {1, 7, 3}, {5, 13, 9}, {64, 100, 10}, {3, 300, 257}, {17, 1, 31}};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++) test_linear(ls[i][0], ls[i][1], ls[i][2]);
    printf("linear: %zu configs, worst FD rel err %.2e\n", sizeof ls / sizeof *ls, worst_lin_fd);
    for (int kind = 0; kind < 2; kind++) {
        test_pool(kind, 2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0, 0);
        test_pool(kind, 1, 2, 7, 9, 3, 3, 2, 2, 1, 1, 0, 0);
        test_pool(kind, 2, 1, 5, 6, 3, 2, 1, 1, 1, 1, 0, 0);
        test_pool(kind, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0);
        test_pool(kind, 1, 2, 9, 7, 4, 5, 3, 2, 2, 2, 0, 0);
        test_pool(kind, 3, 2, 11, 4, 3, 1, 3, 1, 0, 0, 0, 0);
        test_pool(kind, 2, 3, 9, 40, 2, 2, 2, 2, 0, 0, 0, 0); /* 2x2: 20 outputs per row, odd H */
        test_pool(kind, 1, 2, 28, 7, 2, 2, 2, 2, 0, 0, 0, 0); /* 2x2: 3 outputs per row, odd W */
        test_pool(kind, 1, 1, 4, 66, 2, 2, 2, 2, 0, 0, 0, 0); /* 2x2: 33 per row */
    }
    int64_t ad[][4] = {{7, 9, 3, 4}, {5, 5, 1, 1}, {4, 6, 4, 6}, {3, 2, 5, 7}, {10, 7, 3, 2}};
    for (size_t i = 0; i < sizeof ad / sizeof *ad; i++)
        test_pool(2, 2, 2, ad[i][0], ad[i][1], 0, 0, 0, 0, 0, 0, ad[i][2], ad[i][3]);
    printf("pooling: 12 max/avg + 5 adaptive configs, worst FD rel err %.2e\n", worst_pool_fd);
    int64_t bs[][3] = {{4, 3, 5}, {16, 70, 1}, {1, 2, 13}, {3, 130, 9}, {2, 1, 100}, {8, 5, 64}};
    for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
        for (int tr = 0; tr < 2; tr++)
            for (int af = 0; af < 2; af++) test_bn(bs[i][0], bs[i][1], bs[i][2], tr, af, 0.0);
    test_bn(8, 3, 50, 1, 1, 100.0); /* |mean| >> std */
    test_bn_hand();
    printf("batchnorm: %zu shapes x train/eval x affine + 1 shifted, worst FD rel err %.2e\n",
           sizeof bs / sizeof *bs, worst_bn_fd_ref);
    test_errors();
    test_nan();
    printf("%d checks, %d failed\n", n_check, n_fail);
    return n_fail > 100 ? 100 : n_fail;
}
