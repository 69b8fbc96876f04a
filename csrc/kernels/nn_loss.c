/* nn_loss.c: softmax, log_softmax and loss kernels (cross entropy, nll, BCE, MSE, L1), fwd+bwd. */
#include "ddl/nn_loss.h"

#include "core/internal.h"

#include "kernels/common.h"

#include <math.h>

/* ---- validation helpers --------------------------------------------------------------------- */

static ddl_status check_rows(const char *who, int64_t B, int64_t C, int need_class) {
    if (B < 0) DDL_FAIL(DDL_E_VALUE, "%s: batch size must be >= 0, got %lld", who, (long long)B);
    if (C < (need_class ? 1 : 0))
        DDL_FAIL(DDL_E_VALUE, "%s: number of classes must be >= %d, got %lld", who, need_class,
                 (long long)C);
    if (C > 0 && B > INT64_MAX / C)
        DDL_FAIL(DDL_E_VALUE, "%s: size %lld x %lld overflows", who, (long long)B, (long long)C);
    return DDL_OK;
}

static ddl_status check_reduction(const char *who, ddl_reduction r) {
    if (r != DDL_REDUCTION_NONE && r != DDL_REDUCTION_MEAN && r != DDL_REDUCTION_SUM)
        DDL_FAIL(DDL_E_VALUE, "%s: unknown reduction %d (0 none, 1 mean, 2 sum)", who, (int)r);
    return DDL_OK;
}

/* Forward outputs: NONE needs `losses` (n values), SUM/MEAN need `loss`. */
static ddl_status check_loss_outputs(const char *who, const float *loss, const float *losses,
                                     int64_t n, ddl_reduction r) {
    DDL_TRY(check_reduction(who, r));
    if (r == DDL_REDUCTION_NONE) return check_buf(who, "losses (reduction none)", losses, n);
    return check_buf(who, "loss", loss, 1);
}

/* Backward input: dloss has n values for NONE, one otherwise. */
static ddl_status check_dloss(const char *who, const float *dloss, int64_t n, ddl_reduction r) {
    DDL_TRY(check_reduction(who, r));
    return check_buf(who, "dloss", dloss, r == DDL_REDUCTION_NONE ? n : 1);
}

/* Every target is ignore_index or in [0, C); counts the non-ignored ones. */
static ddl_status check_targets(const char *who, int64_t *count, const int64_t *targets, int64_t B,
                                int64_t C, int64_t ignore_index) {
    int64_t n = 0;
    for (int64_t i = 0; i < B; i++) {
        int64_t t = targets[i];
        if (t == ignore_index) continue;
        if (t < 0 || t >= C)
            DDL_FAIL(DDL_E_INDEX,
                     "%s: target %lld at position %lld is out of range for %lld classes", who,
                     (long long)t, (long long)i, (long long)C);
        n++;
    }
    *count = n;
    return DDL_OK;
}

/* Softmax-like forwards: B rows of C in `inp`, written to `out`. */
static ddl_status check_rows_fwd(const char *who, const float *out, const float *inp, int64_t B,
                                 int64_t C) {
    DDL_TRY(check_rows(who, B, C, 0));
    DDL_TRY(check_buf(who, "out", out, B * C));
    return check_buf(who, "inp", inp, B * C);
}

/* Softmax-like backwards: dout and the forward's out are read only when dinp is wanted. */
static ddl_status check_rows_bwd(const char *who, const float *dinp, const float *dout,
                                 const float *out, int64_t B, int64_t C) {
    DDL_TRY(check_rows(who, B, C, 0));
    if (dinp == NULL) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, B * C));
    return check_buf(who, "out", out, B * C);
}

/* Class-target losses (cross entropy, nll): B rows of C classes in `x` (named `x_name`; NULL
 * when the call does not read it) and B targets. */
static ddl_status check_class_inputs(const char *who, const char *x_name, const float *x,
                                     const int64_t *targets, int64_t B, int64_t C) {
    DDL_TRY(check_rows(who, B, C, 1));
    if (x_name) DDL_TRY(check_buf(who, x_name, x, B * C));
    return check_buf(who, "targets", targets, B);
}

/* The reduced value of per-sample sums: `total` over `count` samples. */
static float reduce_total(double total, int64_t count, ddl_reduction r) {
    if (r == DDL_REDUCTION_SUM) return (float)total;
    return count > 0 ? (float)(total / (double)count) : NAN; /* PyTorch: 0/0 */
}

/* The factor each sample's gradient gets from a SUM/MEAN reduction. */
static double reduce_scale(const float *dloss, int64_t count, ddl_reduction r) {
    if (r == DDL_REDUCTION_SUM) return dloss[0];
    return count > 0 ? dloss[0] / (double)count : 0.0; /* no sample reads it when count == 0 */
}

static inline double grad_at(const float *dloss, double scale, int64_t i, ddl_reduction r) {
    return r == DDL_REDUCTION_NONE ? (double)dloss[i] : scale;
}

/* log(sum(exp(x))) of one row, max-subtracted. A row of all -inf, or with +inf or NaN, gives
 * NaN (inf - inf), as PyTorch. */
static inline float row_max(const float *x, int64_t C) {
    float m = -INFINITY;
    for (int64_t c = 0; c < C; c++) m = x[c] > m ? x[c] : m;
    return m;
}

static double row_logsumexp(const float *x, int64_t C) {
    float m = row_max(x, C);
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) s += expf(x[c] - m);
    return (double)m + log(s);
}

/* ---- softmax -------------------------------------------------------------------------------- */

ddl_status ddl_softmax_forward(float *out, const float *inp, int64_t B, int64_t C) {
    const char *who = "softmax_forward";
    DDL_TRY(check_rows_fwd(who, out, inp, B, C));
    for (int64_t b = 0; b < B; b++) {
        const float *x = inp + b * C; // (C,)
        float *y = out + b * C;       // (C,)
        float m = row_max(x, C);
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) {
            float e = expf(x[c] - m); /* all -inf or +inf: inf - inf = NaN, as PyTorch */
            y[c] = e;
            s += e;
        }
        double inv = 1.0 / s;
        for (int64_t c = 0; c < C; c++) y[c] = (float)(y[c] * inv);
    }
    return DDL_OK;
}

ddl_status ddl_softmax_backward(float *dinp, const float *dout, const float *out, int64_t B,
                                int64_t C) {
    const char *who = "softmax_backward";
    DDL_TRY(check_rows_bwd(who, dinp, dout, out, B, C));
    if (dinp == NULL) return DDL_OK;
    for (int64_t b = 0; b < B; b++) {
        const float *dy = dout + b * C, *y = out + b * C; // (C,)
        float *dx = dinp + b * C;                         // (C,)
        double dot = 0.0;
        for (int64_t c = 0; c < C; c++) dot += (double)dy[c] * y[c];
        float fdot = (float)dot;
        for (int64_t c = 0; c < C; c++) dx[c] += PLANT(y[c] * (dy[c] - fdot));
    }
    return DDL_OK;
}

/* ---- log_softmax ---------------------------------------------------------------------------- */

ddl_status ddl_log_softmax_forward(float *out, const float *inp, int64_t B, int64_t C) {
    const char *who = "log_softmax_forward";
    DDL_TRY(check_rows_fwd(who, out, inp, B, C));
    for (int64_t b = 0; b < B; b++) {
        const float *x = inp + b * C; // (C,)
        float *y = out + b * C;       // (C,)
        double lse = row_logsumexp(x, C);
        for (int64_t c = 0; c < C; c++) y[c] = (float)((double)x[c] - lse);
    }
    return DDL_OK;
}

ddl_status ddl_log_softmax_backward(float *dinp, const float *dout, const float *out, int64_t B,
                                    int64_t C) {
    const char *who = "log_softmax_backward";
    DDL_TRY(check_rows_bwd(who, dinp, dout, out, B, C));
    if (dinp == NULL) return DDL_OK;
    for (int64_t b = 0; b < B; b++) {
        const float *dy = dout + b * C, *y = out + b * C; // (C,)
        float *dx = dinp + b * C;                         // (C,)
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += dy[c];
        float fs = (float)s;
        for (int64_t c = 0; c < C; c++) dx[c] += PLANT(dy[c] - expf(y[c]) * fs);
    }
    return DDL_OK;
}

/* ---- cross entropy -------------------------------------------------------------------------- */

static ddl_status check_smoothing(const char *who, float eps) {
    if (!(eps >= 0.0f && eps <= 1.0f))
        DDL_FAIL(DDL_E_VALUE, "%s: label_smoothing must be in [0, 1], got %g", who, (double)eps);
    return DDL_OK;
}

ddl_status ddl_cross_entropy_forward(float *loss, float *losses, float *lse, const float *logits,
                                     const int64_t *targets, int64_t B, int64_t C,
                                     ddl_reduction reduction, int64_t ignore_index,
                                     float label_smoothing) {
    const char *who = "cross_entropy";
    DDL_TRY(check_class_inputs(who, "logits", logits, targets, B, C));
    DDL_TRY(check_loss_outputs(who, loss, losses, B, reduction));
    DDL_TRY(check_smoothing(who, label_smoothing));
    int64_t count;
    DDL_TRY(check_targets(who, &count, targets, B, C, ignore_index));
    const double eps = label_smoothing;
    double total = 0.0;
    for (int64_t b = 0; b < B; b++) {
        const float *x = logits + b * C; // (C,)
        double l = row_logsumexp(x, C);
        if (lse) lse[b] = (float)l;
        int64_t t = targets[b];
        if (t == ignore_index) {
            if (losses) losses[b] = 0.0f;
            continue;
        }
        double li = l - (double)x[t];
        if (eps > 0.0) {
            /* mean_c(-log_softmax) = lse - mean_c(x) */
            double sx = 0.0;
            for (int64_t c = 0; c < C; c++) sx += x[c];
            li = (1.0 - eps) * li + eps * (l - sx / (double)C);
        }
        if (losses) losses[b] = (float)li;
        total += li;
    }
    if (reduction != DDL_REDUCTION_NONE) *loss = reduce_total(total, count, reduction);
    return DDL_OK;
}

ddl_status ddl_cross_entropy_backward(float *dlogits, const float *dloss, const float *logits,
                                      const float *lse, const int64_t *targets, int64_t B,
                                      int64_t C, ddl_reduction reduction, int64_t ignore_index,
                                      float label_smoothing) {
    const char *who = "cross_entropy_backward";
    DDL_TRY(check_class_inputs(who, "logits", logits, targets, B, C));
    DDL_TRY(check_dloss(who, dloss, B, reduction));
    DDL_TRY(check_smoothing(who, label_smoothing));
    int64_t count;
    DDL_TRY(check_targets("cross_entropy", &count, targets, B, C, ignore_index));
    if (dlogits == NULL) return DDL_OK;
    const double scale = reduce_scale(dloss, count, reduction);
    const float eps = label_smoothing, off = eps / (float)C;
    for (int64_t b = 0; b < B; b++) {
        int64_t t = targets[b];
        if (t == ignore_index) continue;
        const float *x = logits + b * C; // (C,)
        float *dx = dlogits + b * C;     // (C,)
        float g = (float)grad_at(dloss, scale, b, reduction);
        float l = lse ? lse[b] : (float)row_logsumexp(x, C);
        for (int64_t c = 0; c < C; c++) dx[c] += g * (expf(x[c] - l) - off);
        dx[t] -= g * (1.0f - eps);
    }
    return DDL_OK;
}

/* ---- nll_loss ------------------------------------------------------------------------------- */

ddl_status ddl_nll_loss_forward(float *loss, float *losses, const float *logp,
                                const int64_t *targets, int64_t B, int64_t C,
                                ddl_reduction reduction, int64_t ignore_index) {
    const char *who = "nll_loss";
    DDL_TRY(check_class_inputs(who, "logp", logp, targets, B, C));
    DDL_TRY(check_loss_outputs(who, loss, losses, B, reduction));
    int64_t count;
    DDL_TRY(check_targets(who, &count, targets, B, C, ignore_index));
    double total = 0.0;
    for (int64_t b = 0; b < B; b++) {
        int64_t t = targets[b];
        float li = t == ignore_index ? 0.0f : -logp[b * C + t];
        if (losses) losses[b] = li;
        total += li;
    }
    if (reduction != DDL_REDUCTION_NONE) *loss = reduce_total(total, count, reduction);
    return DDL_OK;
}

ddl_status ddl_nll_loss_backward(float *dlogp, const float *dloss, const int64_t *targets,
                                 int64_t B, int64_t C, ddl_reduction reduction,
                                 int64_t ignore_index) {
    const char *who = "nll_loss_backward";
    DDL_TRY(check_class_inputs(who, NULL, NULL, targets, B, C));
    DDL_TRY(check_dloss(who, dloss, B, reduction));
    int64_t count;
    DDL_TRY(check_targets("nll_loss", &count, targets, B, C, ignore_index));
    if (dlogp == NULL) return DDL_OK;
    const double scale = reduce_scale(dloss, count, reduction);
    for (int64_t b = 0; b < B; b++) {
        int64_t t = targets[b];
        if (t == ignore_index) continue;
        dlogp[b * C + t] -= (float)grad_at(dloss, scale, b, reduction);
    }
    return DDL_OK;
}

/* ---- binary cross entropy with logits ------------------------------------------------------- */

/* softplus(-x) = log(1 + exp(-x)), stable for any x. */
static inline float softplus_neg(float x) {
    return log1pf(expf(-fabsf(x))) + (x < 0.0f ? -x : 0.0f);
}

static ddl_status check_elems(const char *who, int64_t N, int64_t C) {
    if (N < 0 || C < 0)
        DDL_FAIL(DDL_E_VALUE, "%s: sizes must be >= 0, got N=%lld, C=%lld", who, (long long)N,
                 (long long)C);
    if (C > 0 && N > INT64_MAX / C)
        DDL_FAIL(DDL_E_VALUE, "%s: size %lld x %lld overflows", who, (long long)N, (long long)C);
    return DDL_OK;
}

/* Pairwise losses (BCE, MSE, L1): N x C elements of inp and target. */
static ddl_status check_pair_inputs(const char *who, const float *inp, const float *target,
                                    int64_t N, int64_t C) {
    DDL_TRY(check_elems(who, N, C));
    DDL_TRY(check_buf(who, "inp", inp, N * C));
    return check_buf(who, "target", target, N * C);
}

ddl_status ddl_binary_cross_entropy_with_logits_forward(float *loss, float *losses,
                                                        const float *inp, const float *target,
                                                        const float *pos_weight, int64_t N,
                                                        int64_t C, ddl_reduction reduction) {
    const char *who = "binary_cross_entropy_with_logits";
    DDL_TRY(check_pair_inputs(who, inp, target, N, C));
    const int64_t n = N * C;
    DDL_TRY(check_loss_outputs(who, loss, losses, n, reduction));
    double total = 0.0;
    for (int64_t r = 0; r < N; r++) {
        for (int64_t c = 0; c < C; c++) {
            int64_t k = r * C + c;
            float x = inp[k], y = target[k];
            float w = pos_weight ? 1.0f + (pos_weight[c] - 1.0f) * y : 1.0f;
            float li = (1.0f - y) * x + w * softplus_neg(x);
            if (losses) losses[k] = li;
            total += li;
        }
    }
    if (reduction != DDL_REDUCTION_NONE) *loss = reduce_total(total, n, reduction);
    return DDL_OK;
}

ddl_status ddl_binary_cross_entropy_with_logits_backward(float *dinp, float *dtarget,
                                                         const float *dloss, const float *inp,
                                                         const float *target,
                                                         const float *pos_weight, int64_t N,
                                                         int64_t C, ddl_reduction reduction) {
    const char *who = "binary_cross_entropy_with_logits_backward";
    DDL_TRY(check_pair_inputs(who, inp, target, N, C));
    const int64_t n = N * C;
    DDL_TRY(check_dloss(who, dloss, n, reduction));
    if (dinp == NULL && dtarget == NULL) return DDL_OK;
    const double scale = reduce_scale(dloss, n, reduction);
    for (int64_t r = 0; r < N; r++) {
        for (int64_t c = 0; c < C; c++) {
            int64_t k = r * C + c;
            float x = inp[k], y = target[k];
            float g = (float)grad_at(dloss, scale, k, reduction);
            float pw = pos_weight ? pos_weight[c] : 1.0f;
            if (dinp) {
                float w = 1.0f + (pw - 1.0f) * y;
                dinp[k] += g * ((1.0f - y) - w * sigmoidf_(-x));
            }
            if (dtarget) {
                float d = -x;
                if (pos_weight) d += (pw - 1.0f) * softplus_neg(x);
                dtarget[k] += g * d;
            }
        }
    }
    return DDL_OK;
}

/* ---- mse_loss ------------------------------------------------------------------------------- */

ddl_status ddl_mse_loss_forward(float *loss, float *losses, const float *inp, const float *target,
                                int64_t N, ddl_reduction reduction) {
    const char *who = "mse_loss";
    DDL_TRY(check_pair_inputs(who, inp, target, N, 1));
    DDL_TRY(check_loss_outputs(who, loss, losses, N, reduction));
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) {
        double d = (double)inp[i] - (double)target[i];
        if (losses) losses[i] = (float)(d * d);
        total += d * d;
    }
    if (reduction != DDL_REDUCTION_NONE) *loss = reduce_total(total, N, reduction);
    return DDL_OK;
}

ddl_status ddl_mse_loss_backward(float *dinp, float *dtarget, const float *dloss, const float *inp,
                                 const float *target, int64_t N, ddl_reduction reduction) {
    const char *who = "mse_loss_backward";
    DDL_TRY(check_pair_inputs(who, inp, target, N, 1));
    DDL_TRY(check_dloss(who, dloss, N, reduction));
    if (dinp == NULL && dtarget == NULL) return DDL_OK;
    const double scale = reduce_scale(dloss, N, reduction);
    for (int64_t i = 0; i < N; i++) {
        float g = (float)(2.0 * grad_at(dloss, scale, i, reduction)) * (inp[i] - target[i]);
        if (dinp) dinp[i] += g;
        if (dtarget) dtarget[i] -= g;
    }
    return DDL_OK;
}

/* ---- l1_loss -------------------------------------------------------------------------------- */

ddl_status ddl_l1_loss_forward(float *loss, float *losses, const float *inp, const float *target,
                               int64_t N, ddl_reduction reduction) {
    const char *who = "l1_loss";
    DDL_TRY(check_pair_inputs(who, inp, target, N, 1));
    DDL_TRY(check_loss_outputs(who, loss, losses, N, reduction));
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) {
        double d = fabs((double)inp[i] - (double)target[i]);
        if (losses) losses[i] = (float)d;
        total += d;
    }
    if (reduction != DDL_REDUCTION_NONE) *loss = reduce_total(total, N, reduction);
    return DDL_OK;
}

ddl_status ddl_l1_loss_backward(float *dinp, float *dtarget, const float *dloss, const float *inp,
                                const float *target, int64_t N, ddl_reduction reduction) {
    const char *who = "l1_loss_backward";
    DDL_TRY(check_pair_inputs(who, inp, target, N, 1));
    DDL_TRY(check_dloss(who, dloss, N, reduction));
    if (dinp == NULL && dtarget == NULL) return DDL_OK;
    const double scale = reduce_scale(dloss, N, reduction);
    for (int64_t i = 0; i < N; i++) {
        float d = inp[i] - target[i];
        float s = d > 0.0f ? 1.0f : d < 0.0f ? -1.0f : d * 0.0f; /* 0 at 0, NaN stays NaN */
        float g = (float)grad_at(dloss, scale, i, reduction) * s;
        if (dinp) dinp[i] += g;
        if (dtarget) dtarget[i] -= g;
    }
    return DDL_OK;
}
