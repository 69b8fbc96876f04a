/* test_nn_kernels.c: nn_loss / nn_act / nn_rnn kernels (forward vs double references, backward
 * vs central finite differences of float64 reference objectives, harness.h). Exit code 1 on any
 * failure. */
#include "ddl/nn_act.h"
#include "ddl/nn_loss.h"
#include "ddl/nn_rnn.h"

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- utilities ---------------------------------------------------------------------------- */

static float frand(float lo, float hi) { return lo + (hi - lo) * (float)urand(); }
static void fill(float *p, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) p[i] = frand(lo, hi);
}
static float *fnew(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static float *frnd(int64_t n, float lo, float hi) {
    float *p = fnew(n);
    fill(p, n, lo, hi);
    return p;
}
static void zero(float *p, int64_t n) { memset(p, 0, (size_t)n * sizeof(float)); }

/* max |a-b| / (|b| + floor) over n */
static double max_rel(const float *a, const double *b, int64_t n, double floor_) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (fabs(b[i]) + floor_);
        if (!(d <= m)) m = d; /* NaN -> NaN */
    }
    return m;
}
static double max_rel_ff(const float *a, const float *b, int64_t n, double floor_) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (fabs((double)b[i]) + floor_);
        if (!(d <= m)) m = d;
    }
    return m;
}
static void expect_status(const char *what, ddl_status got, ddl_status want, const char *msg) {
    CHECK(got == want, "%s: status %d (%s), want %d", what, (int)got, ddl_last_error(), (int)want);
    if (msg)
        CHECK(strcmp(ddl_last_error(), msg) == 0, "%s: message '%s', want '%s'", what,
              ddl_last_error(), msg);
    if (got == want)
        printf("  ok   %-44s -> %s: %s\n", what, ddl_status_name(got), got ? ddl_last_error() : "");
}

/* ---- softmax / log_softmax ---------------------------------------------------------------- */

/* softmax and log_softmax of B rows of C in double */
static void softmax_ref(double *ref, double *lref, const float *x, int64_t B, int64_t C) {
    for (int64_t b = 0; b < B; b++) {
        double m = -INFINITY, s = 0;
        for (int64_t c = 0; c < C; c++) m = fmax(m, x[b * C + c]);
        for (int64_t c = 0; c < C; c++) s += exp((double)x[b * C + c] - m);
        for (int64_t c = 0; c < C; c++) {
            ref[b * C + c] = exp((double)x[b * C + c] - m) / s;
            lref[b * C + c] = (double)x[b * C + c] - m - log(s);
        }
    }
}

typedef struct {
    int log;
    float *x, *r;
    int64_t B, C;
} sm_ctx;
/* The objective through the double reference: finite differences then measure the kernel's
 * backward against the exact derivative, not against float32 rounding noise. */
static double sm_obj_ref(void *p) {
    sm_ctx *c = p;
    int64_t n = c->B * c->C;
    double *y = malloc(sizeof(double) * n), *ly = malloc(sizeof(double) * n), s = 0;
    softmax_ref(y, ly, c->x, c->B, c->C);
    for (int64_t i = 0; i < n; i++) s += (c->log ? ly[i] : y[i]) * c->r[i];
    free(y);
    free(ly);
    return s;
}

static void test_softmax(void) {
    printf("softmax / log_softmax\n");
    const int64_t B = 5, C = 7;
    float *x = frnd(B * C, -3, 3), *out = fnew(B * C), *lout = fnew(B * C);
    for (int64_t c = 0; c < C; c++) x[1 * C + c] += 1000.0f; /* stability */
    x[2 * C + 3] = -INFINITY;                                /* an exp(-inf) = 0 entry */
    double ref[5 * 7], lref[5 * 7];
    softmax_ref(ref, lref, x, B, C);
    CHECK(!ddl_softmax_forward(out, x, B, C), "%s", ddl_last_error());
    CHECK(!ddl_log_softmax_forward(lout, x, B, C), "%s", ddl_last_error());
    double e1 = max_rel(out, ref, B * C, 1e-30), e2 = 0;
    for (int64_t i = 0; i < B * C; i++)
        if (isfinite(lref[i]))
            e2 = fmax(e2, fabs(lout[i] - lref[i]) / (fabs(lref[i]) + 1));
        else
            CHECK(lout[i] == (float)lref[i], "log_softmax -inf entry %g", lout[i]);
    CHECK(e1 < 1e-6, "softmax fwd rel err %g", e1);
    CHECK(e2 < 1e-6, "log_softmax fwd err %g", e2);
    printf(
        "  ok   softmax fwd max rel err %.1e, log_softmax fwd err %.1e (incl. +1000 row, -inf)\n",
        e1, e2);
    /* hand value */
    float hx[3] = {1, 2, 3}, hy[3];
    ddl_softmax_forward(hy, hx, 1, 3);
    CHECK(fabs(hy[2] - 0.66524096) < 1e-6, "softmax([1,2,3])[2] = %.8f", hy[2]);
    ddl_log_softmax_forward(hy, hx, 1, 3);
    CHECK(fabs(hy[0] + 2.40760596) < 1e-6, "log_softmax([1,2,3])[0] = %.8f", hy[0]);
    /* in place */
    float ip[3] = {1, 2, 3};
    ddl_softmax_forward(ip, ip, 1, 3);
    CHECK(fabs(ip[2] - 0.66524096) < 1e-6, "softmax in place");
    /* all -inf row: NaN like PyTorch */
    float ninf[2] = {-INFINITY, -INFINITY};
    ddl_softmax_forward(ninf, ninf, 1, 2);
    CHECK(isnan(ninf[0]), "softmax of all -inf should be NaN");

    /* backward: finite rows only */
    float *xs = frnd(B * C, -2, 2), *r = frnd(B * C, -1, 1), *dx = fnew(B * C), *dx2 = fnew(B * C);
    for (int lg = 0; lg < 2; lg++) {
        sm_ctx ctx = {lg, xs, r, B, C};
        float *y = fnew(B * C);
        CHECK(!(lg ? ddl_log_softmax_forward : ddl_softmax_forward)(y, xs, B, C), "%s",
              ddl_last_error());
        zero(dx, B * C);
        ddl_status st =
            lg ? ddl_log_softmax_backward(dx, r, y, B, C) : ddl_softmax_backward(dx, r, y, B, C);
        CHECK(!st, "%s", ddl_last_error());
        grad_check(lg ? "log_softmax_backward dinp" : "softmax_backward dinp", sm_obj_ref, &ctx, xs,
                   B * C, dx, 1e-2, GC_RTOL, 0);
        /* accumulate: twice doubles */
        memcpy(dx2, dx, sizeof(float) * B * C);
        st = lg ? ddl_log_softmax_backward(dx2, r, y, B, C) : ddl_softmax_backward(dx2, r, y, B, C);
        double e = 0;
        for (int64_t i = 0; i < B * C; i++) e = fmax(e, fabs(dx2[i] - 2 * dx[i]));
        CHECK(e < 1e-6, "backward twice doubles (err %g)", e);
        free(y);
    }
    expect_status("softmax B=-1", ddl_softmax_forward(out, x, -1, C), DDL_E_VALUE,
                  "softmax_forward: batch size must be >= 0, got -1");
    expect_status("softmax NULL inp", ddl_softmax_forward(out, NULL, B, C), DDL_E_VALUE, NULL);
    CHECK(ddl_softmax_backward(NULL, r, out, B, C) == DDL_OK, "NULL dinp is a no-op");
    free(x);
    free(out);
    free(lout);
    free(xs);
    free(r);
    free(dx);
    free(dx2);
}

/* ---- cross entropy / nll ------------------------------------------------------------------ */

typedef struct {
    int nll; /* 1: nll_loss on x as log-probs */
    float *x, *r, *losses;
    int64_t *t;
    int64_t B, C, ign;
    ddl_reduction red;
    float eps, g;
} ce_ctx;
/* double reference of per-sample CE losses; returns the reduction */
static double ce_ref(double *per, const float *x, const int64_t *t, int64_t B, int64_t C,
                     int64_t ign, ddl_reduction red, double eps, int nll) {
    double tot = 0;
    int64_t cnt = 0;
    for (int64_t b = 0; b < B; b++) {
        if (t[b] == ign) {
            per[b] = 0;
            continue;
        }
        const float *row = x + b * C;
        double li;
        if (nll)
            li = -(double)row[t[b]];
        else {
            double m = -INFINITY, s = 0, smooth = 0;
            for (int64_t c = 0; c < C; c++) m = fmax(m, row[c]);
            for (int64_t c = 0; c < C; c++) s += exp(row[c] - m);
            double lse = m + log(s);
            for (int64_t c = 0; c < C; c++) smooth += -(row[c] - lse);
            li = (1 - eps) * (lse - row[t[b]]) + eps * smooth / (double)C;
        }
        per[b] = li;
        tot += li;
        cnt++;
    }
    if (red == DDL_REDUCTION_SUM) return tot;
    if (red == DDL_REDUCTION_MEAN) return tot / (double)cnt;
    return 0;
}

/* The objective through the double reference (see sm_obj_ref). */
static double ce_obj_ref(void *p) {
    ce_ctx *c = p;
    double per[16];
    double red = ce_ref(per, c->x, c->t, c->B, c->C, c->ign, c->red, c->eps, c->nll);
    if (c->red != DDL_REDUCTION_NONE) return (double)c->g * red;
    double s = 0;
    for (int64_t b = 0; b < c->B; b++) s += per[b] * c->r[b];
    return s;
}

static void test_cross_entropy(void) {
    printf("cross_entropy / nll_loss\n");
    /* hand values: logits [1,2,3], target 0: lse - 1 = 2.40760596;
     * smoothing 0.1: 0.9*2.40760596 + 0.1*mean(2.40760596, 1.40760596, 0.40760596) = 2.30760596 */
    float hx[3] = {1, 2, 3}, hl = 0;
    int64_t ht[1] = {0};
    ddl_cross_entropy_forward(&hl, NULL, NULL, hx, ht, 1, 3, DDL_REDUCTION_MEAN, -100, 0.0f);
    CHECK(fabs(hl - 2.40760596) < 1e-6, "CE hand value %.8f", hl);
    ddl_cross_entropy_forward(&hl, NULL, NULL, hx, ht, 1, 3, DDL_REDUCTION_SUM, -100, 0.1f);
    CHECK(fabs(hl - 2.30760596) < 1e-6, "CE smoothing hand value %.8f", hl);
    printf("  ok   hand values: CE([1,2,3], 0) = %.7f, with smoothing 0.1 = %.7f\n", 2.40760596,
           hl);

    const int64_t B = 6, C = 5, IGN = -100;
    float *x = frnd(B * C, -2, 2), *r = frnd(B, -1, 1), *losses = fnew(B), *dx = fnew(B * C),
          *dx2 = fnew(B * C), *lse = fnew(B);
    int64_t t[6] = {0, 4, IGN, 2, 1, IGN};
    double per[6];
    const char *rn[3] = {"none", "mean", "sum"};
    for (int nll = 0; nll < 2; nll++) {
        for (int red = 0; red < 3; red++) {
            for (int si = 0; si < (nll ? 1 : 3); si++) {
                float eps = si == 0 ? 0.0f : si == 1 ? 0.1f : 1.0f;
                for (int ig = 0; ig < 2; ig++) {
                    int64_t ign =
                        ig ? IGN
                           : 3; /* ig=0: ignore class 3 (positions holding 3: none), IGN ones... */
                    int64_t tt[6];
                    memcpy(tt, t, sizeof tt);
                    if (!ig) {
                        tt[2] = 3;
                        tt[5] = 0;
                        ign = -100;
                    } /* no ignored entries */
                    ce_ctx ctx = {nll, x, r, losses, tt, B, C, ign, (ddl_reduction)red, eps, 1.7f};
                    float loss = -1;
                    ddl_status st =
                        nll ? ddl_nll_loss_forward(&loss, losses, x, tt, B, C, ctx.red, ign)
                            : ddl_cross_entropy_forward(&loss, losses, lse, x, tt, B, C, ctx.red,
                                                        ign, eps);
                    CHECK(!st, "%s", ddl_last_error());
                    double red_ref = ce_ref(per, x, tt, B, C, ign, ctx.red, eps, nll);
                    double e = max_rel(losses, per, B, 1e-3);
                    if (red) e = fmax(e, fabs(loss - red_ref) / (fabs(red_ref) + 1e-3));
                    CHECK(e < 2e-6, "%s fwd err %g", nll ? "nll" : "ce", e);
                    zero(dx, B * C);
                    float dl1 = 1.7f;
                    const float *dloss = red ? &dl1 : r;
                    st = nll ? ddl_nll_loss_backward(dx, dloss, tt, B, C, ctx.red, ign)
                             : ddl_cross_entropy_backward(dx, dloss, x, lse, tt, B, C, ctx.red, ign,
                                                          eps);
                    CHECK(!st, "%s", ddl_last_error());
                    char name[96];
                    snprintf(name, sizeof name, "%s %s eps=%.1f %s dlogits (fwd err %.0e)",
                             nll ? "nll" : "ce", rn[red], (double)eps, ig ? "ignore" : "no-ignore",
                             e);
                    grad_check(name, ce_obj_ref, &ctx, x, B * C, dx, 1e-2, GC_RTOL, 0);
                    /* ignored rows get no gradient */
                    for (int64_t b = 0; b < B; b++)
                        if (tt[b] == ign)
                            for (int64_t c = 0; c < C; c++)
                                CHECK(dx[b * C + c] == 0.0f, "ignored row has grad");
                    if (!nll) { /* lse NULL recomputes; twice doubles */
                        zero(dx2, B * C);
                        ddl_cross_entropy_backward(dx2, dloss, x, NULL, tt, B, C, ctx.red, ign,
                                                   eps);
                        CHECK(max_rel_ff(dx2, dx, B * C, 1e-6) < 1e-5, "lse NULL differs");
                        ddl_cross_entropy_backward(dx2, dloss, x, lse, tt, B, C, ctx.red, ign, eps);
                        double e2 = 0;
                        for (int64_t i = 0; i < B * C; i++) e2 = fmax(e2, fabs(dx2[i] - 2 * dx[i]));
                        CHECK(e2 < 1e-6, "twice doubles %g", e2);
                    }
                }
            }
        }
    }
    /* all ignored, mean: NaN forward (PyTorch), zero gradient */
    int64_t allign[2] = {-100, -100};
    float l2 = 0, g2[2 * 5] = {0}, one = 1;
    ddl_cross_entropy_forward(&l2, NULL, NULL, x, allign, 2, C, DDL_REDUCTION_MEAN, -100, 0.1f);
    CHECK(isnan(l2), "all-ignored mean should be NaN, got %g", l2);
    ddl_cross_entropy_backward(g2, &one, x, NULL, allign, 2, C, DDL_REDUCTION_MEAN, -100, 0.1f);
    for (int i = 0; i < 10; i++) CHECK(g2[i] == 0.0f, "all-ignored grad");
    printf("  ok   all targets ignored + mean: loss NaN (as PyTorch), gradient 0\n");
    /* extreme logits stay finite */
    float big[3] = {1000, -1000, 0}, lb;
    int64_t t1[1] = {1};
    ddl_cross_entropy_forward(&lb, NULL, NULL, big, t1, 1, 3, DDL_REDUCTION_SUM, -100, 0.0f);
    CHECK(fabs(lb - 2000) < 1e-3, "CE extreme logits %g", lb);

    /* errors */
    int64_t bad[5] = {1, 2, -100, 12, 3};
    float lx[5 * 10] = {0}, ll;
    expect_status(
        "ce target out of range",
        ddl_cross_entropy_forward(&ll, NULL, NULL, lx, bad, 5, 10, DDL_REDUCTION_MEAN, -100, 0),
        DDL_E_INDEX, "cross_entropy: target 12 at position 3 is out of range for 10 classes");
    bad[3] = 1;
    bad[2] = -1;
    expect_status(
        "ce negative target",
        ddl_cross_entropy_forward(&ll, NULL, NULL, lx, bad, 5, 10, DDL_REDUCTION_MEAN, -100, 0),
        DDL_E_INDEX, "cross_entropy: target -1 at position 2 is out of range for 10 classes");
    expect_status(
        "ce backward bad target",
        ddl_cross_entropy_backward(lx, &one, lx, NULL, bad, 5, 10, DDL_REDUCTION_MEAN, -100, 0),
        DDL_E_INDEX, "cross_entropy: target -1 at position 2 is out of range for 10 classes");
    expect_status("nll target out of range",
                  ddl_nll_loss_forward(&ll, NULL, lx, bad, 5, 10, DDL_REDUCTION_SUM, -100),
                  DDL_E_INDEX, "nll_loss: target -1 at position 2 is out of range for 10 classes");
    bad[2] = 1;
    expect_status(
        "ce label_smoothing 1.5",
        ddl_cross_entropy_forward(&ll, NULL, NULL, lx, bad, 5, 10, DDL_REDUCTION_MEAN, -100, 1.5f),
        DDL_E_VALUE, "cross_entropy: label_smoothing must be in [0, 1], got 1.5");
    expect_status(
        "ce none without losses",
        ddl_cross_entropy_forward(&ll, NULL, NULL, lx, bad, 5, 10, DDL_REDUCTION_NONE, -100, 0),
        DDL_E_VALUE, "cross_entropy: `losses (reduction none)` is NULL");
    expect_status(
        "ce bad reduction",
        ddl_cross_entropy_forward(&ll, NULL, NULL, lx, bad, 5, 10, (ddl_reduction)7, -100, 0),
        DDL_E_VALUE, NULL);
    expect_status(
        "ce C=0",
        ddl_cross_entropy_forward(&ll, NULL, NULL, lx, bad, 5, 0, DDL_REDUCTION_SUM, -100, 0),
        DDL_E_VALUE, NULL);
    free(x);
    free(r);
    free(losses);
    free(dx);
    free(dx2);
    free(lse);
}

/* ---- BCE with logits, MSE, L1 ------------------------------------------------------------- */

typedef struct {
    int kind; /* 0 bce, 1 mse, 2 l1 */
    float *x, *y, *pw, *r, *losses;
    int64_t N, C;
    ddl_reduction red;
    float g;
} el_ctx;
static double el_ref_one(int kind, double x, double y, double pw) {
    if (kind == 1) return (x - y) * (x - y);
    if (kind == 2) return fabs(x - y);
    double w = 1 + (pw - 1) * y;
    double sp = log1p(exp(-fabs(x))) + fmax(-x, 0); /* softplus(-x) */
    return (1 - y) * x + w * sp;
}

/* The objective through the double reference (see sm_obj_ref). */
static double el_obj_ref(void *p) {
    el_ctx *c = p;
    int64_t n = c->N * c->C;
    double s = 0, tot = 0;
    for (int64_t i = 0; i < n; i++) {
        double li = el_ref_one(c->kind, c->x[i], c->y[i], c->pw ? c->pw[i % c->C] : 1.0);
        tot += li;
        s += li * c->r[i];
    }
    if (c->red == DDL_REDUCTION_NONE) return s;
    return (double)c->g * (c->red == DDL_REDUCTION_MEAN ? tot / (double)n : tot);
}

static void test_elementwise_losses(void) {
    printf("binary_cross_entropy_with_logits / mse_loss / l1_loss\n");
    /* hand value: x=0, y=1: log 2; x=2,y=0: 2 + log1p(e^-2) = 2.12692801 */
    float hx[2] = {0, 2}, hy[2] = {1, 0}, hl[2];
    ddl_binary_cross_entropy_with_logits_forward(NULL, hl, hx, hy, NULL, 2, 1, DDL_REDUCTION_NONE);
    CHECK(fabs(hl[0] - 0.69314718) < 1e-6 && fabs(hl[1] - 2.12692801) < 1e-6, "bce hand %g %g",
          hl[0], hl[1]);
    /* extreme: x = +-100 finite */
    float ex[4] = {100, -100, 100, -100}, ey[4] = {1, 0, 0, 1}, el[4];
    ddl_binary_cross_entropy_with_logits_forward(NULL, el, ex, ey, NULL, 4, 1, DDL_REDUCTION_NONE);
    CHECK(el[0] < 1e-30f && el[1] < 1e-30f && fabs(el[2] - 100) < 1e-4 && fabs(el[3] - 100) < 1e-4,
          "bce extreme %g %g %g %g", el[0], el[1], el[2], el[3]);
    printf("  ok   bce hand values; x=+-100 finite: %g %g %g %g\n", el[0], el[1], el[2], el[3]);

    const int64_t N = 4, C = 3, n = N * C;
    float *x = frnd(n, -3, 3), *y = frnd(n, 0.05f, 0.95f), *pw = frnd(C, 0.5f, 3),
          *r = frnd(n, -1, 1), *losses = fnew(n), *dx = fnew(n), *dy = fnew(n);
    for (int64_t i = 0; i < n; i++) /* keep l1 away from its kink */
        if (fabs(x[i] - y[i]) < 0.05) x[i] += 0.2f;
    const char *kn[3] = {"bce", "mse", "l1"}, *rn[3] = {"none", "mean", "sum"};
    for (int kind = 0; kind < 3; kind++) {
        for (int red = 0; red < 3; red++) {
            for (int usepw = 0; usepw < (kind == 0 ? 2 : 1); usepw++) {
                el_ctx ctx = {kind,   x, y, usepw ? pw : NULL,  r,
                              losses, N, C, (ddl_reduction)red, 0.7f};
                float loss = 0;
                ddl_status st = kind == 0 ? ddl_binary_cross_entropy_with_logits_forward(
                                                &loss, losses, x, y, ctx.pw, N, C, ctx.red)
                                : kind == 1 ? ddl_mse_loss_forward(&loss, losses, x, y, n, ctx.red)
                                            : ddl_l1_loss_forward(&loss, losses, x, y, n, ctx.red);
                CHECK(!st, "%s", ddl_last_error());
                double tot = 0, e = 0;
                for (int64_t i = 0; i < n; i++) {
                    double li = el_ref_one(kind, x[i], y[i], usepw ? pw[i % C] : 1.0);
                    tot += li;
                    e = fmax(e, fabs(losses[i] - li) / (fabs(li) + 1e-3));
                }
                double rref = red == 1 ? tot / n : tot;
                if (red) e = fmax(e, fabs(loss - rref) / (fabs(rref) + 1e-3));
                CHECK(e < 2e-6, "%s fwd err %g", kn[kind], e);
                float g = 0.7f;
                const float *dl = red ? &g : r;
                zero(dx, n);
                zero(dy, n);
                st = kind == 0 ? ddl_binary_cross_entropy_with_logits_backward(
                                     dx, dy, dl, x, y, ctx.pw, N, C, ctx.red)
                     : kind == 1 ? ddl_mse_loss_backward(dx, dy, dl, x, y, n, ctx.red)
                                 : ddl_l1_loss_backward(dx, dy, dl, x, y, n, ctx.red);
                CHECK(!st, "%s", ddl_last_error());
                char name[96];
                snprintf(name, sizeof name, "%s %s%s dinp (fwd err %.0e)", kn[kind], rn[red],
                         usepw ? " pos_weight" : "", e);
                grad_check(name, el_obj_ref, &ctx, x, n, dx, kind == 2 ? 1e-3 : 1e-2, GC_RTOL, 0);
                snprintf(name, sizeof name, "%s %s%s dtarget", kn[kind], rn[red],
                         usepw ? " pos_weight" : "");
                grad_check(name, el_obj_ref, &ctx, y, n, dy, kind == 2 ? 1e-3 : 1e-2, GC_RTOL, 0);
            }
        }
    }
    float l1x[2] = {1, 2}, l1d[2] = {0, 0}, one = 1;
    ddl_l1_loss_backward(l1d, NULL, &one, l1x, l1x, 2, DDL_REDUCTION_SUM);
    CHECK(l1d[0] == 0 && l1d[1] == 0, "l1 grad at x == y is 0");
    float lm;
    ddl_mse_loss_forward(&lm, NULL, NULL, NULL, 0, DDL_REDUCTION_MEAN);
    CHECK(isnan(lm), "mse mean of nothing is NaN");
    expect_status("mse N=-1", ddl_mse_loss_forward(&lm, NULL, x, y, -1, DDL_REDUCTION_MEAN),
                  DDL_E_VALUE, NULL);
    expect_status("bce none without losses",
                  ddl_binary_cross_entropy_with_logits_forward(&lm, NULL, x, y, NULL, N, C,
                                                               DDL_REDUCTION_NONE),
                  DDL_E_VALUE, NULL);
    free(x);
    free(y);
    free(pw);
    free(r);
    free(losses);
    free(dx);
    free(dy);
}

/* ---- activations -------------------------------------------------------------------------- */

typedef struct {
    int kind; /* 0 leaky, 1 gelu, 2 gelu tanh, 3 tanh, 4 sigmoid, 5 relu */
    float *x, *r, *out;
    int64_t N;
    float slope;
} act_ctx;
static void act_fwd(act_ctx *c) {
    switch (c->kind) {
    case 0: ddl_leaky_relu_forward(c->out, c->x, c->N, c->slope); break;
    case 1: ddl_gelu_forward(c->out, c->x, c->N, DDL_GELU_NONE); break;
    case 2: ddl_gelu_forward(c->out, c->x, c->N, DDL_GELU_TANH); break;
    case 3:
        for (int64_t i = 0; i < c->N; i++) c->out[i] = tanhf(c->x[i]);
        break;
    case 4:
        for (int64_t i = 0; i < c->N; i++) c->out[i] = 1.0f / (1.0f + expf(-c->x[i]));
        break;
    case 5:
        for (int64_t i = 0; i < c->N; i++) c->out[i] = c->x[i] > 0 ? c->x[i] : 0;
        break;
    }
}
/* kind's activation of v in double */
static double act_ref_one(int kind, double v, double slope) {
    switch (kind) {
    case 0: return v > 0 ? v : slope * v;
    case 1: return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    case 2:
        return 0.5 * v * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
    case 3: return tanh(v);
    case 4: return 1 / (1 + exp(-v));
    default: return v > 0 ? v : 0;
    }
}
/* The objective through the double reference (see sm_obj_ref). */
static double act_obj_ref(void *p) {
    act_ctx *c = p;
    double s = 0;
    for (int64_t i = 0; i < c->N; i++) s += act_ref_one(c->kind, c->x[i], c->slope) * c->r[i];
    return s;
}

static void test_activations(void) {
    printf("activations\n");
    const int64_t N = 40;
    float *x = frnd(N, -4, 4), *r = frnd(N, -1, 1), *out = fnew(N), *dx = fnew(N);
    for (int64_t i = 0; i < N; i++)
        if (fabsf(x[i]) < 0.05f) x[i] = 0.3f; /* away from kinks */
    /* gelu forward vs double */
    double e1 = 0, e2 = 0;
    ddl_gelu_forward(out, x, N, DDL_GELU_NONE);
    for (int64_t i = 0; i < N; i++) {
        double ref = act_ref_one(1, x[i], 0);
        e1 = fmax(e1, fabs(out[i] - ref) / (fabs(ref) + 1e-3));
    }
    ddl_gelu_forward(out, x, N, DDL_GELU_TANH);
    for (int64_t i = 0; i < N; i++) {
        double ref = act_ref_one(2, x[i], 0);
        e2 = fmax(e2, fabs(out[i] - ref) / (fabs(ref) + 1e-3));
    }
    CHECK(e1 < 1e-5 && e2 < 1e-5, "gelu fwd err %g %g", e1, e2);
    float g1 = 1.0f, go;
    ddl_gelu_forward(&go, &g1, 1, DDL_GELU_NONE);
    CHECK(fabs(go - 0.84134475) < 1e-6, "gelu(1) = %.8f", go);
    printf("  ok   gelu fwd rel err exact %.1e, tanh %.1e; gelu(1) = %.7f\n", e1, e2, go);
    float lx[3] = {-2, 0, 3}, ly[3];
    ddl_leaky_relu_forward(ly, lx, 3, 0.1f);
    CHECK(ly[0] == -0.2f && ly[1] == 0 && ly[2] == 3, "leaky fwd");
    const char *names[6] = {"leaky_relu dinp",         "gelu(exact) dinp",
                            "gelu(tanh) dinp",         "tanh dinp (from out)",
                            "sigmoid dinp (from out)", "relu dinp (from out)"};
    for (int kind = 0; kind < 6; kind++) {
        act_ctx ctx = {kind, x, r, out, N, 0.1f};
        act_fwd(&ctx);
        zero(dx, N);
        ddl_status st = DDL_OK;
        switch (kind) {
        case 0: st = ddl_leaky_relu_backward(dx, r, x, N, 0.1f); break;
        case 1: st = ddl_gelu_backward(dx, r, x, N, DDL_GELU_NONE); break;
        case 2: st = ddl_gelu_backward(dx, r, x, N, DDL_GELU_TANH); break;
        case 3: st = ddl_tanh_backward(dx, r, out, N); break;
        case 4: st = ddl_sigmoid_backward(dx, r, out, N); break;
        case 5: st = ddl_relu_backward(dx, r, out, N); break;
        }
        CHECK(!st, "%s", ddl_last_error());
        grad_check(names[kind], act_obj_ref, &ctx, x, N, dx, 1e-3, GC_RTOL, 0);
    }
    expect_status("gelu bad approximate", ddl_gelu_forward(out, x, N, (ddl_gelu_approximate)5),
                  DDL_E_VALUE, "gelu_forward: unknown approximate 5 (0 none, 1 tanh)");
    CHECK(ddl_relu_backward(NULL, NULL, NULL, N) == DDL_OK, "relu NULL dinp no-op");
    free(x);
    free(r);
    free(out);
    free(dx);

    printf("embedding / dropout\n");
    const int64_t V = 6, D = 4, M = 7;
    float *w = frnd(V * D, -1, 1), *eo = fnew(M * D), *dout = frnd(M * D, -1, 1), *dw = fnew(V * D);
    int64_t idx[7] = {2, 0, 5, 2, 3, 2, 0};
    CHECK(!ddl_embedding_forward(eo, w, idx, M, V, D), "%s", ddl_last_error());
    int okf = 1;
    for (int64_t m = 0; m < M; m++)
        for (int64_t d = 0; d < D; d++) okf &= eo[m * D + d] == w[idx[m] * D + d];
    CHECK(okf, "embedding forward gather");
    for (int pad = 0; pad < 2; pad++) {
        int64_t padding_idx = pad ? 2 : -1;
        zero(dw, V * D);
        CHECK(!ddl_embedding_backward(dw, dout, idx, M, V, D, padding_idx), "%s", ddl_last_error());
        double e = 0;
        for (int64_t v = 0; v < V; v++)
            for (int64_t d = 0; d < D; d++) {
                double s = 0;
                for (int64_t m = 0; m < M; m++)
                    if (idx[m] == v && v != padding_idx) s += dout[m * D + d];
                e = fmax(e, fabs(dw[v * D + d] - s));
            }
        CHECK(e < 1e-6, "embedding backward err %g (padding %lld)", e, (long long)padding_idx);
        printf("  ok   embedding backward scatter-add (repeated index 2 x3, 0 x2), "
               "padding_idx=%lld: err %.1e\n",
               (long long)padding_idx, e);
    }
    int64_t bidx[5] = {1, 2, 3, 12, 0};
    expect_status("embedding index out of range", ddl_embedding_forward(eo, w, bidx, 5, 10, D),
                  DDL_E_INDEX,
                  "embedding: index 12 at position 3 is out of range for 10 embeddings");
    bidx[3] = -1;
    expect_status("embedding negative index (bwd)",
                  ddl_embedding_backward(dw, dout, bidx, 5, V, D, -1), DDL_E_INDEX,
                  "embedding: index -1 at position 3 is out of range for 6 embeddings");
    expect_status("embedding padding_idx >= V", ddl_embedding_backward(dw, dout, idx, M, V, D, 6),
                  DDL_E_VALUE,
                  "embedding_backward: padding_idx 6 is out of range for 6 embeddings");

    float din[6] = {1, -2, 3, -4, 5, 6}, dro[6], dgi[6] = {0}, dgo[6] = {1, 1, 1, 1, 1, 1};
    uint8_t mask[6] = {1, 0, 1, 1, 0, 1};
    ddl_dropout_forward(dro, din, mask, 6, 0.2f);
    int okd = 1;
    for (int i = 0; i < 6; i++) okd &= fabsf(dro[i] - (mask[i] ? din[i] / 0.8f : 0)) < 1e-6f;
    ddl_dropout_backward(dgi, dgo, mask, 6, 0.2f);
    for (int i = 0; i < 6; i++) okd &= fabsf(dgi[i] - (mask[i] ? 1.25f : 0)) < 1e-6f;
    CHECK(okd, "dropout fwd/bwd");
    ddl_dropout_forward(dro, din, mask, 6, 1.0f);
    for (int i = 0; i < 6; i++) okd &= dro[i] == 0;
    CHECK(okd, "dropout p=1 zeros");
    printf("  ok   dropout p=0.2 forward/backward scale 1.25, p=1 zeros\n");
    expect_status("dropout p=1.5", ddl_dropout_forward(dro, din, mask, 6, 1.5f), DDL_E_VALUE,
                  "dropout_forward: dropout probability must be in [0, 1], got 1.5");
    free(w);
    free(eo);
    free(dout);
    free(dw);
}

/* ---- RNN cells: double references --------------------------------------------------------- */

enum { K_RNN_TANH, K_RNN_RELU, K_LSTM, K_GRU };
static const char *kind_name[4] = {"rnn(tanh)", "rnn(relu)", "lstm", "gru"};
static int64_t gates_of(int k) { return k == K_LSTM ? 4 : k == K_GRU ? 3 : 1; }
static double sigm(double v) { return 1 / (1 + exp(-v)); }

/* h_new/c_new in double from the float inputs */
static void cell_ref(int kind, double *hn, double *cn, const double *x, const double *h,
                     const double *c, const float *wi, const float *wh, const float *bi,
                     const float *bh, int64_t B, int64_t Din, int64_t H) {
    int64_t G = gates_of(kind) * H;
    double *gi = malloc(sizeof(double) * G), *gh = malloc(sizeof(double) * G);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t k = 0; k < G; k++) {
            double si = bi ? bi[k] : 0, sh = bh ? bh[k] : 0;
            for (int64_t i = 0; i < Din; i++) si += x[b * Din + i] * wi[k * Din + i];
            for (int64_t j = 0; j < H; j++) sh += h[b * H + j] * wh[k * H + j];
            gi[k] = si;
            gh[k] = sh;
        }
        for (int64_t j = 0; j < H; j++) {
            double hp = h[b * H + j];
            if (kind == K_RNN_TANH)
                hn[b * H + j] = tanh(gi[j] + gh[j]);
            else if (kind == K_RNN_RELU)
                hn[b * H + j] = fmax(gi[j] + gh[j], 0);
            else if (kind == K_LSTM) {
                double i = sigm(gi[j] + gh[j]), f = sigm(gi[H + j] + gh[H + j]);
                double g = tanh(gi[2 * H + j] + gh[2 * H + j]),
                       o = sigm(gi[3 * H + j] + gh[3 * H + j]);
                double cc = f * c[b * H + j] + i * g;
                cn[b * H + j] = cc;
                hn[b * H + j] = o * tanh(cc);
            } else {
                double r = sigm(gi[j] + gh[j]), z = sigm(gi[H + j] + gh[H + j]);
                double n = tanh(gi[2 * H + j] + r * gh[2 * H + j]);
                hn[b * H + j] = (1 - z) * n + z * hp;
            }
        }
    }
    free(gi);
    free(gh);
}

/* ---- an L-layer, T-step unrolled network of one cell kind (for BPTT checks) --------------- */

#define MAXL 3
#define MAXT 4
typedef struct {
    int kind, L, T, naive, bias;
    int64_t B, Din, H;
    float *wi[MAXL], *wh[MAXL], *bi[MAXL], *bh[MAXL];
    float *dwi[MAXL], *dwh[MAXL], *dbi[MAXL], *dbh[MAXL];
    float *x;       // (T, B, Din)
    float *h0, *c0; // (L, B, H)
    float *qh;      // (T, B, H): projection of the top layer's outputs
    float *rh, *rc; // (L, B, H): projections of the final h and c
    float *hs[MAXL][MAXT + 1], *cs[MAXL][MAXT + 1], *cache[MAXL][MAXT];
    float *scratch;
    float *dx, *dh0, *dc0; // (T, B, Din), (L, B, H), (L, B, H)
} net;

static int64_t din_of(const net *n, int l) { return l == 0 ? n->Din : n->H; }

static ddl_status net_step_fwd(net *n, int l, int t) {
    int64_t Din = din_of(n, l), B = n->B, H = n->H;
    const float *in = l == 0 ? n->x + t * B * n->Din : n->hs[l - 1][t + 1];
    const float *bi = n->bias ? n->bi[l] : NULL, *bh = n->bias ? n->bh[l] : NULL;
    switch (n->kind) {
    case K_RNN_TANH:
    case K_RNN_RELU: {
        ddl_rnn_nonlinearity nl = n->kind == K_RNN_TANH ? DDL_RNN_TANH : DDL_RNN_RELU;
        return (n->naive ? ddl_rnn_cell_forward_naive
                         : ddl_rnn_cell_forward)(n->hs[l][t + 1], n->cache[l][t], in, n->hs[l][t],
                                                 n->wi[l], n->wh[l], bi, bh, B, Din, H, nl);
    }
    case K_LSTM:
        return (n->naive ? ddl_lstm_cell_forward_naive : ddl_lstm_cell_forward)(
            n->hs[l][t + 1], n->cs[l][t + 1], n->cache[l][t], in, n->hs[l][t], n->cs[l][t],
            n->wi[l], n->wh[l], bi, bh, B, Din, H);
    default:
        return (n->naive ? ddl_gru_cell_forward_naive
                         : ddl_gru_cell_forward)(n->hs[l][t + 1], n->cache[l][t], in, n->hs[l][t],
                                                 n->wi[l], n->wh[l], bi, bh, B, Din, H);
    }
}

static double net_forward(void *p) {
    net *n = p;
    int64_t BH = n->B * n->H;
    for (int l = 0; l < n->L; l++) {
        memcpy(n->hs[l][0], n->h0 + l * BH, sizeof(float) * BH);
        memcpy(n->cs[l][0], n->c0 + l * BH, sizeof(float) * BH);
        for (int t = 0; t < n->T; t++)
            if (net_step_fwd(n, l, t)) return NAN;
    }
    double loss = 0;
    for (int t = 0; t < n->T; t++) loss += dot(n->hs[n->L - 1][t + 1], n->qh + t * BH, BH);
    for (int l = 0; l < n->L; l++) {
        loss += dot(n->hs[l][n->T], n->rh + l * BH, BH);
        if (n->kind == K_LSTM) loss += dot(n->cs[l][n->T], n->rc + l * BH, BH);
    }
    return loss;
}

static double *dcopy(const float *a, int64_t n) {
    double *p = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = a[i];
    return p;
}

/* net_forward's objective through double-precision cells (cell_ref): finite differences of it
 * measure the cells' backward against the exact derivative (see sm_obj_ref). */
static double net_forward_ref(void *p) {
    net *n = p;
    int64_t B = n->B, H = n->H, BH = B * H;
    double loss = 0;
    double *below = dcopy(n->x, n->T * B * n->Din); /* (T, B, Din or H): the layer's inputs */
    double *outs = malloc(sizeof(double) * n->T * BH), *c = malloc(sizeof(double) * BH);
    double *h = malloc(sizeof(double) * BH), *hn = malloc(sizeof(double) * BH),
           *cn = malloc(sizeof(double) * BH);
    for (int l = 0; l < n->L; l++) {
        int64_t Din = din_of(n, l);
        for (int64_t i = 0; i < BH; i++) h[i] = n->h0[l * BH + i], c[i] = n->c0[l * BH + i];
        for (int t = 0; t < n->T; t++) {
            cell_ref(n->kind, hn, cn, below + t * B * Din, h, c, n->wi[l], n->wh[l],
                     n->bias ? n->bi[l] : NULL, n->bias ? n->bh[l] : NULL, B, Din, H);
            memcpy(h, hn, sizeof(double) * BH);
            if (n->kind == K_LSTM) memcpy(c, cn, sizeof(double) * BH);
            memcpy(outs + t * BH, h, sizeof(double) * BH);
        }
        for (int64_t i = 0; i < BH; i++) {
            loss += h[i] * n->rh[l * BH + i];
            if (n->kind == K_LSTM) loss += c[i] * n->rc[l * BH + i];
        }
        free(below);
        below = outs;
        outs = malloc(sizeof(double) * n->T * BH);
    }
    for (int64_t i = 0; i < n->T * BH; i++) loss += below[i] * n->qh[i];
    free(below);
    free(outs);
    free(c);
    free(h);
    free(hn);
    free(cn);
    return loss;
}

/* BPTT: layers top-down, each layer's steps in reverse. Returns a status. */
static ddl_status net_backward(net *n) {
    int64_t B = n->B, H = n->H, BH = B * H;
    float *dh_out = fnew(n->T * BH); // (T, B, H): gradient reaching layer l's outputs from above
    float *dxl = fnew(n->T * B * (n->Din > H ? n->Din : H));
    float *dh_new = fnew(BH), *dc_new = fnew(BH), *dh_carry = fnew(BH), *dc_carry = fnew(BH);
    ddl_status st = DDL_OK;
    memcpy(dh_out, n->qh, sizeof(float) * n->T * BH);
    for (int l = n->L - 1; l >= 0 && !st; l--) {
        int64_t Din = din_of(n, l);
        float *dx_layer = l == 0 ? n->dx : dxl; // (T, B, Din)
        if (l > 0) zero(dxl, n->T * B * Din);
        memcpy(dh_carry, n->rh + l * BH, sizeof(float) * BH);
        memcpy(dc_carry, n->rc + l * BH, sizeof(float) * BH);
        for (int t = n->T - 1; t >= 0 && !st; t--) {
            for (int64_t i = 0; i < BH; i++) dh_new[i] = dh_out[t * BH + i] + dh_carry[i];
            memcpy(dc_new, dc_carry, sizeof(float) * BH);
            zero(dh_carry, BH);
            zero(dc_carry, BH);
            const float *in = l == 0 ? n->x + t * B * n->Din : n->hs[l - 1][t + 1];
            float *dxt = dx_layer + t * B * Din;
            float *dbi = n->bias ? n->dbi[l] : NULL, *dbh = n->bias ? n->dbh[l] : NULL;
            switch (n->kind) {
            case K_RNN_TANH:
            case K_RNN_RELU: {
                ddl_rnn_nonlinearity nl = n->kind == K_RNN_TANH ? DDL_RNN_TANH : DDL_RNN_RELU;
                st = (n->naive ? ddl_rnn_cell_backward_naive : ddl_rnn_cell_backward)(
                    dxt, dh_carry, n->dwi[l], n->dwh[l], dbi, dbh, n->scratch, dh_new,
                    n->cache[l][t], in, n->hs[l][t], n->wi[l], n->wh[l], B, Din, H, nl);
                break;
            }
            case K_LSTM:
                st = (n->naive ? ddl_lstm_cell_backward_naive : ddl_lstm_cell_backward)(
                    dxt, dh_carry, dc_carry, n->dwi[l], n->dwh[l], dbi, dbh, n->scratch, dh_new,
                    dc_new, n->cache[l][t], in, n->hs[l][t], n->cs[l][t], n->wi[l], n->wh[l], B,
                    Din, H);
                break;
            default:
                st = (n->naive ? ddl_gru_cell_backward_naive : ddl_gru_cell_backward)(
                    dxt, dh_carry, n->dwi[l], n->dwh[l], dbi, dbh, n->scratch, dh_new,
                    n->cache[l][t], in, n->hs[l][t], n->wi[l], n->wh[l], B, Din, H);
                break;
            }
        }
        memcpy(n->dh0 + l * BH, dh_carry, sizeof(float) * BH);
        memcpy(n->dc0 + l * BH, dc_carry, sizeof(float) * BH);
        if (l > 0) memcpy(dh_out, dxl, sizeof(float) * n->T * BH); /* d(outputs of layer l-1) */
    }
    free(dh_out);
    free(dxl);
    free(dh_new);
    free(dc_new);
    free(dh_carry);
    free(dc_carry);
    return st;
}

static void net_init(net *n, int kind, int L, int T, int64_t B, int64_t Din, int64_t H, int bias) {
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->L = L;
    n->T = T;
    n->B = B;
    n->Din = Din;
    n->H = H;
    n->bias = bias;
    int64_t G = gates_of(kind) * H;
    float ws = 1.0f / sqrtf((float)H) * 1.2f;
    for (int l = 0; l < L; l++) {
        int64_t di = din_of(n, l);
        n->wi[l] = frnd(G * di, -ws, ws);
        n->wh[l] = frnd(G * H, -ws, ws);
        n->bi[l] = frnd(G, -ws, ws);
        n->bh[l] = frnd(G, -ws, ws);
        n->dwi[l] = fnew(G * di);
        n->dwh[l] = fnew(G * H);
        n->dbi[l] = fnew(G);
        n->dbh[l] = fnew(G);
        for (int t = 0; t <= T; t++) {
            n->hs[l][t] = fnew(B * H);
            n->cs[l][t] = fnew(B * H);
        }
        int64_t cf = kind == K_LSTM  ? ddl_lstm_cell_cache_floats(B, H)
                     : kind == K_GRU ? ddl_gru_cell_cache_floats(B, H)
                                     : ddl_rnn_cell_cache_floats(B, H);
        for (int t = 0; t < T; t++) n->cache[l][t] = fnew(cf);
    }
    int64_t sf = kind == K_LSTM  ? ddl_lstm_cell_scratch_floats(B, H)
                 : kind == K_GRU ? ddl_gru_cell_scratch_floats(B, H)
                                 : ddl_rnn_cell_scratch_floats(B, H);
    n->scratch = fnew(sf);
    n->x = frnd(T * B * Din, -1, 1);
    n->h0 = frnd(L * B * H, -0.8f, 0.8f);
    n->c0 = frnd(L * B * H, -1, 1);
    n->qh = frnd(T * B * H, -1, 1);
    n->rh = frnd(L * B * H, -1, 1);
    n->rc = frnd(L * B * H, -1, 1);
    n->dx = fnew(T * B * Din);
    n->dh0 = fnew(L * B * H);
    n->dc0 = fnew(L * B * H);
}
static void net_zero_grads(net *n) {
    int64_t G = gates_of(n->kind) * n->H;
    for (int l = 0; l < n->L; l++) {
        zero(n->dwi[l], G * din_of(n, l));
        zero(n->dwh[l], G * n->H);
        zero(n->dbi[l], G);
        zero(n->dbh[l], G);
    }
    zero(n->dx, n->T * n->B * n->Din);
    zero(n->dh0, n->L * n->B * n->H);
    zero(n->dc0, n->L * n->B * n->H);
}
static void net_free(net *n) {
    for (int l = 0; l < n->L; l++) {
        free(n->wi[l]);
        free(n->wh[l]);
        free(n->bi[l]);
        free(n->bh[l]);
        free(n->dwi[l]);
        free(n->dwh[l]);
        free(n->dbi[l]);
        free(n->dbh[l]);
        for (int t = 0; t <= n->T; t++) {
            free(n->hs[l][t]);
            free(n->cs[l][t]);
        }
        for (int t = 0; t < n->T; t++) free(n->cache[l][t]);
    }
    free(n->scratch);
    free(n->x);
    free(n->h0);
    free(n->c0);
    free(n->qh);
    free(n->rh);
    free(n->rc);
    free(n->dx);
    free(n->dh0);
    free(n->dc0);
}

static void test_cells_single_step(void) {
    printf("RNN cells: one step forward vs double reference, fast vs naive\n");
    const int64_t B = 17, Din = 33, H = 29; /* odd sizes: no kernel-friendly multiples */
    for (int kind = 0; kind < 4; kind++) {
        for (int bias = 0; bias < 2; bias++) {
            net n, m;
            net_init(&n, kind, 1, 1, B, Din, H, bias);
            double e_fwd = 0, e_c = 0;
            CHECK(!isnan(net_forward(&n)), "%s", ddl_last_error());
            double *hn = malloc(sizeof(double) * B * H), *cn = malloc(sizeof(double) * B * H);
            double *dx0 = dcopy(n.x, B * Din), *dh0 = dcopy(n.h0, B * H), *dc0 = dcopy(n.c0, B * H);
            cell_ref(kind, hn, cn, dx0, dh0, dc0, n.wi[0], n.wh[0], bias ? n.bi[0] : NULL,
                     bias ? n.bh[0] : NULL, B, Din, H);
            for (int64_t i = 0; i < B * H; i++) {
                e_fwd = fmax(e_fwd, fabs(n.hs[0][1][i] - hn[i]));
                if (kind == K_LSTM) e_c = fmax(e_c, fabs(n.cs[0][1][i] - cn[i]));
            }
            CHECK(e_fwd < 2e-6 && e_c < 2e-6, "%s fwd err %g %g", kind_name[kind], e_fwd, e_c);
            /* naive twin: same state, compare forward and backward */
            net_init(&m, kind, 1, 1, B, Din, H, bias); /* fresh buffers */
            memcpy(m.wi[0], n.wi[0], sizeof(float) * gates_of(kind) * H * Din);
            memcpy(m.wh[0], n.wh[0], sizeof(float) * gates_of(kind) * H * H);
            memcpy(m.bi[0], n.bi[0], sizeof(float) * gates_of(kind) * H);
            memcpy(m.bh[0], n.bh[0], sizeof(float) * gates_of(kind) * H);
            memcpy(m.x, n.x, sizeof(float) * B * Din);
            memcpy(m.h0, n.h0, sizeof(float) * B * H);
            memcpy(m.c0, n.c0, sizeof(float) * B * H);
            memcpy(m.qh, n.qh, sizeof(float) * B * H);
            memcpy(m.rh, n.rh, sizeof(float) * B * H);
            memcpy(m.rc, n.rc, sizeof(float) * B * H);
            m.naive = 1;
            net_forward(&m);
            double e_nv = max_rel_ff(m.hs[0][1], n.hs[0][1], B * H, 1.0);
            net_zero_grads(&n);
            net_zero_grads(&m);
            CHECK(!net_backward(&n) && !net_backward(&m), "%s", ddl_last_error());
            int64_t G = gates_of(kind) * H;
            double e_b = fmax(max_rel_ff(m.dwi[0], n.dwi[0], G * Din, 1.0),
                              max_rel_ff(m.dwh[0], n.dwh[0], G * H, 1.0));
            e_b = fmax(e_b, max_rel_ff(m.dx, n.dx, B * Din, 1.0));
            e_b = fmax(e_b, max_rel_ff(m.dh0, n.dh0, B * H, 1.0));
            if (bias)
                e_b = fmax(e_b, fmax(max_rel_ff(m.dbi[0], n.dbi[0], G, 1.0),
                                     max_rel_ff(m.dbh[0], n.dbh[0], G, 1.0)));
            if (kind == K_LSTM) e_b = fmax(e_b, max_rel_ff(m.dc0, n.dc0, B * H, 1.0));
            CHECK(e_nv < 1e-5 && e_b < 1e-4, "%s naive vs fast fwd %g bwd %g", kind_name[kind],
                  e_nv, e_b);
            printf("  %-4s %-9s bias=%d B=%lld Din=%lld H=%lld: |h'-ref|=%.1e |c'-ref|=%.1e, naive "
                   "vs sgemm: fwd %.1e bwd %.1e\n",
                   (e_fwd < 2e-6 && e_c < 2e-6 && e_nv < 1e-5 && e_b < 1e-4) ? "ok" : "FAIL",
                   kind_name[kind], bias, (long long)B, (long long)Din, (long long)H, e_fwd, e_c,
                   e_nv, e_b);
            /* backward twice doubles */
            float *d1 = fnew(G * H);
            memcpy(d1, n.dwh[0], sizeof(float) * G * H);
            CHECK(!net_backward(&n), "%s", ddl_last_error());
            double e2 = 0;
            for (int64_t i = 0; i < G * H; i++)
                e2 = fmax(e2, fabs(n.dwh[0][i] - 2 * d1[i]) / (fabs(d1[i]) + 1e-3));
            CHECK(e2 < 1e-5, "%s backward twice doubles dW_hh: %g", kind_name[kind], e2);
            free(d1);
            free(hn);
            free(cn);
            free(dx0);
            free(dh0);
            free(dc0);
            net_free(&n);
            net_free(&m);
        }
    }
}

static void test_bptt(void) {
    printf("RNN cells: BPTT, 2 layers x 3 steps, all gradients vs central differences\n");
    for (int kind = 0; kind < 4; kind++) {
        for (int bias = 1; bias >= 0; bias--) {
            net n;
            net_init(&n, kind, 2, 3, 2, 3, 4, bias);
            CHECK(!isnan(net_forward(&n)), "%s", ddl_last_error());
            net_zero_grads(&n);
            CHECK(!net_backward(&n), "%s", ddl_last_error());
            double eps = kind == K_RNN_RELU
                             ? 1e-4
                             : 5e-3; /* relu: a smaller step crosses its kink less often */
            char nm[96];
            int64_t G = gates_of(kind) * n.H;
            for (int l = 0; l < n.L; l++) {
                snprintf(nm, sizeof nm, "%s%s L%d dW_ih", kind_name[kind], bias ? "" : " nobias",
                         l);
                grad_check(nm, net_forward_ref, &n, n.wi[l], G * din_of(&n, l), n.dwi[l], eps,
                           GC_RTOL, 0);
                snprintf(nm, sizeof nm, "%s%s L%d dW_hh", kind_name[kind], bias ? "" : " nobias",
                         l);
                grad_check(nm, net_forward_ref, &n, n.wh[l], G * n.H, n.dwh[l], eps, GC_RTOL, 0);
                if (bias) {
                    snprintf(nm, sizeof nm, "%s L%d db_ih", kind_name[kind], l);
                    grad_check(nm, net_forward_ref, &n, n.bi[l], G, n.dbi[l], eps, GC_RTOL, 0);
                    snprintf(nm, sizeof nm, "%s L%d db_hh", kind_name[kind], l);
                    grad_check(nm, net_forward_ref, &n, n.bh[l], G, n.dbh[l], eps, GC_RTOL, 0);
                }
            }
            snprintf(nm, sizeof nm, "%s%s dx (all steps)", kind_name[kind], bias ? "" : " nobias");
            grad_check(nm, net_forward_ref, &n, n.x, n.T * n.B * n.Din, n.dx, eps, GC_RTOL, 0);
            snprintf(nm, sizeof nm, "%s%s dh0 (both layers)", kind_name[kind],
                     bias ? "" : " nobias");
            grad_check(nm, net_forward_ref, &n, n.h0, n.L * n.B * n.H, n.dh0, eps, GC_RTOL, 0);
            if (kind == K_LSTM) {
                snprintf(nm, sizeof nm, "%s%s dc0 (both layers)", kind_name[kind],
                         bias ? "" : " nobias");
                grad_check(nm, net_forward_ref, &n, n.c0, n.L * n.B * n.H, n.dc0, eps, GC_RTOL, 0);
            }
            net_free(&n);
        }
    }
}

static void test_rnn_errors(void) {
    printf("RNN cell errors and sizes\n");
    float buf[64] = {0};
    CHECK(ddl_lstm_cell_cache_floats(3, 5) == 75 && ddl_lstm_cell_scratch_floats(3, 5) == 60,
          "lstm sizes");
    CHECK(ddl_gru_cell_cache_floats(3, 5) == 90 && ddl_gru_cell_scratch_floats(3, 5) == 90,
          "gru sizes");
    CHECK(ddl_rnn_cell_cache_floats(3, 5) == 15 && ddl_rnn_cell_cache_floats(-1, 5) == -1,
          "rnn sizes");
    expect_status(
        "lstm H=0",
        ddl_lstm_cell_forward(buf, buf, buf, buf, buf, buf, buf, buf, NULL, NULL, 1, 1, 0),
        DDL_E_VALUE,
        "lstm_cell_forward: need batch B >= 0, input size Din >= 0 and hidden size H >= 1, got "
        "B=1, Din=1, H=0");
    expect_status("gru NULL cache",
                  ddl_gru_cell_forward(buf, NULL, buf, buf, buf, buf, NULL, NULL, 1, 1, 1),
                  DDL_E_VALUE, "gru_cell_forward: `cache` is NULL");
    expect_status("rnn bad nonlinearity",
                  ddl_rnn_cell_forward(buf, buf, buf, buf, buf, buf, NULL, NULL, 1, 1, 1,
                                       (ddl_rnn_nonlinearity)9),
                  DDL_E_VALUE, "rnn_cell_forward: unknown nonlinearity 9 (0 tanh, 1 relu)");
    expect_status("lstm H too big for BLAS",
                  ddl_lstm_cell_forward(buf, buf, buf, buf, buf, buf, buf, buf, NULL, NULL, 1, 1,
                                        (int64_t)1 << 29),
                  DDL_E_VALUE, NULL);
    /* empty batch: OK, nothing written, no BLAS complaint */
    CHECK(ddl_lstm_cell_forward(NULL, NULL, NULL, NULL, NULL, NULL, buf, buf, NULL, NULL, 0, 2,
                                2) == DDL_OK,
          "B=0 lstm: %s", ddl_last_error());
    CHECK(ddl_gru_cell_backward(NULL, NULL, buf, buf, buf, buf, NULL, buf, NULL, NULL, NULL, buf,
                                buf, 0, 2, 2) == DDL_OK,
          "B=0 gru bwd: %s", ddl_last_error());
    /* Din = 0 */
    float h[4] = {0.1f, 0.2f, 0.3f, 0.4f}, w[4 * 2 * 2], hn[4], cache[4 * 6];
    fill(w, 16, -1, 1);
    CHECK(ddl_gru_cell_forward(hn, cache, NULL, h, NULL, w, NULL, NULL, 2, 0, 2) == DDL_OK,
          "Din=0 gru: %s", ddl_last_error());
    printf("  ok   empty batch and Din=0 run without BLAS complaints\n");
}

int main(void) {
    harness_seed();
    test_softmax();
    test_cross_entropy();
    test_elementwise_losses();
    test_activations();
    test_cells_single_step();
    test_bptt();
    test_rnn_errors();
    printf("\n%d checks, %d failures\n", n_check, n_fail);
    return n_fail ? 1 : 0;
}
