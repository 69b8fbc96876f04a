/* logistic.c: logistic-regression margins, loss and gradient over dense or CSR rows
 * (binomial and multinomial), accumulated in float64. The optimizers (L-BFGS, OWL-QN) live in
 * ddl/ml/optimize.py; these kernels are the per-iteration pass over the data. */
#include "core/internal.h"
#include "ddl/ml.h"

#include <math.h>
#include <stdlib.h>

/* A validated view of a ddl_csr. */
typedef struct {
    const int64_t *indptr; /* (n + 1) or NULL: dense */
    const int64_t *indices;
    const void *values; /* float or double */
    int64_t n, d;
    int f32;
} rows;

static int is_vec(const ddl_tensor *t, ddl_dtype dt) {
    return t && t->dtype == dt && t->ndim == 1 && ddl_tensor_is_contiguous(t);
}

static ddl_status view_rows(rows *r, const ddl_csr *x, const char *who) {
    const ddl_tensor *v = x->values;
    if (!v || (v->dtype != DDL_FLOAT32 && v->dtype != DDL_FLOAT64))
        DDL_FAIL(DDL_E_TYPE, "%s: X values must be float32 or float64", who);
    if (!ddl_tensor_is_contiguous(v)) DDL_FAIL(DDL_E_VALUE, "%s: X values must be contiguous", who);
    if (x->n_cols < 0) DDL_FAIL(DDL_E_VALUE, "%s: negative column count", who);
    r->values = ddl_tensor_data(v);
    r->f32 = v->dtype == DDL_FLOAT32;
    r->d = x->n_cols;
    if (!x->indptr) {
        if (v->ndim != 2 || v->shape[1] != x->n_cols)
            DDL_FAIL(DDL_E_VALUE, "%s: dense X must be (n, %lld), got %d dims", who,
                     (long long)x->n_cols, v->ndim);
        r->indptr = r->indices = NULL;
        r->n = v->shape[0];
        return DDL_OK;
    }
    if (!is_vec(x->indptr, DDL_INT64) || x->indptr->shape[0] < 1 || !is_vec(x->indices, DDL_INT64))
        DDL_FAIL(DDL_E_TYPE, "%s: CSR indptr and indices must be contiguous 1-D int64", who);
    int64_t nnz = x->indices->shape[0];
    if (v->ndim != 1 || v->shape[0] != nnz)
        DDL_FAIL(DDL_E_VALUE, "%s: CSR values (%lld) and indices (%lld) differ in length", who,
                 (long long)(v->ndim == 1 ? v->shape[0] : -1), (long long)nnz);
    r->indptr = ddl_tensor_data(x->indptr);
    r->indices = ddl_tensor_data(x->indices);
    r->n = x->indptr->shape[0] - 1;
    if (r->indptr[0] < 0) DDL_FAIL(DDL_E_VALUE, "%s: CSR indptr[0] < 0", who);
    for (int64_t i = 0; i < r->n; i++)
        if (r->indptr[i + 1] < r->indptr[i])
            DDL_FAIL(DDL_E_VALUE, "%s: CSR indptr decreases at row %lld", who, (long long)i);
    if (r->indptr[r->n] > nnz)
        DDL_FAIL(DDL_E_VALUE, "%s: CSR indptr ends at %lld beyond %lld entries", who,
                 (long long)r->indptr[r->n], (long long)nnz);
    for (int64_t p = r->indptr[0]; p < r->indptr[r->n]; p++)
        if ((uint64_t)r->indices[p] >= (uint64_t)r->d)
            DDL_FAIL(DDL_E_INDEX, "%s: column index %lld at entry %lld is outside [0, %lld)", who,
                     (long long)r->indices[p], (long long)p, (long long)r->d);
    return DDL_OK;
}

/* v . w over d elements, four partial sums (no -ffast-math, so the compiler will not split
 * the reduction itself): dot4_f32, dot4_f64. */
#define DEF_DOT4(S, T)                                                                             \
    static inline double dot4_##S(const T *v, const double *w, int64_t d) {                        \
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                                     \
        int64_t j = 0;                                                                             \
        for (; j + 4 <= d; j += 4) {                                                               \
            s0 += v[j] * w[j];                                                                     \
            s1 += v[j + 1] * w[j + 1];                                                             \
            s2 += v[j + 2] * w[j + 2];                                                             \
            s3 += v[j + 3] * w[j + 3];                                                             \
        }                                                                                          \
        for (; j < d; j++) s0 += v[j] * w[j];                                                      \
        return (s0 + s1) + (s2 + s3);                                                              \
    }
DEF_DOT4(f32, float)
DEF_DOT4(f64, double)

/* w . x_i */
static double row_dot(const rows *x, int64_t i, const double *w) {
    if (!x->indptr) {
        int64_t d = x->d;
        if (x->f32) return dot4_f32((const float *)x->values + i * d, w, d);
        return dot4_f64((const double *)x->values + i * d, w, d);
    }
    double s = 0;
    int64_t p = x->indptr[i], e = x->indptr[i + 1];
    const int64_t *col = x->indices;
    if (x->f32)
        for (const float *v = x->values; p < e; p++) s += v[p] * w[col[p]];
    else
        for (const double *v = x->values; p < e; p++) s += v[p] * w[col[p]];
    return s;
}

/* g += a * x_i */
static void row_axpy(double *g, double a, const rows *x, int64_t i) {
    if (!x->indptr) {
        int64_t d = x->d;
        if (x->f32)
            for (const float *v = (const float *)x->values + i * d; d-- > 0;) *g++ += a * *v++;
        else
            for (const double *v = (const double *)x->values + i * d; d-- > 0;) *g++ += a * *v++;
        return;
    }
    int64_t p = x->indptr[i], e = x->indptr[i + 1];
    const int64_t *col = x->indices;
    if (x->f32)
        for (const float *v = x->values; p < e; p++) g[col[p]] += a * v[p];
    else
        for (const double *v = x->values; p < e; p++) g[col[p]] += a * v[p];
}

/* coef (k, d) float64 contiguous; intercept (k) or NULL */
static ddl_status check_params(int64_t *k, const ddl_tensor *coef, const ddl_tensor *intercept,
                               int64_t d, const char *who) {
    if (!coef || coef->dtype != DDL_FLOAT64 || coef->ndim != 2 || !ddl_tensor_is_contiguous(coef))
        DDL_FAIL(DDL_E_TYPE, "%s: coef must be a contiguous (k, d) float64 array", who);
    if (coef->shape[1] != d || coef->shape[0] < 1)
        DDL_FAIL(DDL_E_VALUE, "%s: coef is (%lld, %lld) for %lld features", who,
                 (long long)coef->shape[0], (long long)coef->shape[1], (long long)d);
    *k = coef->shape[0];
    if (intercept && (!is_vec(intercept, DDL_FLOAT64) || intercept->shape[0] != *k))
        DDL_FAIL(DDL_E_VALUE, "%s: intercept must be a contiguous (%lld,) float64 array", who,
                 (long long)*k);
    return DDL_OK;
}

ddl_status ddl_linear_margins(ddl_tensor **out, const ddl_csr *x, const ddl_tensor *coef,
                              const ddl_tensor *intercept) {
    rows r;
    int64_t k;
    DDL_TRY(view_rows(&r, x, "linear_margins"));
    DDL_TRY(check_params(&k, coef, intercept, r.d, "linear_margins"));
    int64_t shape[2] = {r.n, k};
    DDL_TRY(ddl_tensor_empty(out, DDL_FLOAT64, 2, shape));
    double *m = ddl_tensor_data(*out); /* (n, k) */
    const double *w = ddl_tensor_data(coef), *b = intercept ? ddl_tensor_data(intercept) : NULL;
    for (int64_t i = 0; i < r.n; i++)
        for (int64_t c = 0; c < k; c++) m[i * k + c] = row_dot(&r, i, w + c * r.d) + (b ? b[c] : 0);
    return DDL_OK;
}

/* log(1 + e^m) without overflow */
static inline double softplus(double m) { return m > 0 ? m + log1p(exp(-m)) : log1p(exp(m)); }
static inline double sigmoid(double m) {
    if (m >= 0) return 1.0 / (1.0 + exp(-m));
    double e = exp(m);
    return e / (1.0 + e);
}

ddl_status ddl_logistic_loss_grad(double *loss, ddl_tensor *dcoef, ddl_tensor *dintercept,
                                  const ddl_csr *x, const ddl_tensor *y, const ddl_tensor *coef,
                                  const ddl_tensor *intercept, int multinomial) {
    static const char who[] = "logistic_loss_grad";
    rows r;
    int64_t k;
    DDL_TRY(view_rows(&r, x, who));
    DDL_TRY(check_params(&k, coef, intercept, r.d, who));
    if (multinomial ? k < 2 : k != 1)
        DDL_FAIL(DDL_E_VALUE, "%s: a %s model needs %s coefficient rows, got %lld", who,
                 multinomial ? "multinomial" : "binomial", multinomial ? ">= 2" : "1",
                 (long long)k);
    if (!is_vec(y, DDL_FLOAT64) || y->shape[0] != r.n)
        DDL_FAIL(DDL_E_VALUE, "%s: y must be a contiguous (%lld,) float64 array", who,
                 (long long)r.n);
    if (!dcoef || dcoef->dtype != DDL_FLOAT64 || !ddl_tensor_is_contiguous(dcoef) ||
        ddl_tensor_numel(dcoef) != k * r.d)
        DDL_FAIL(DDL_E_VALUE, "%s: dcoef must be a contiguous float64 array of %lld elements", who,
                 (long long)(k * r.d));
    if (dintercept && (!is_vec(dintercept, DDL_FLOAT64) || dintercept->shape[0] != k))
        DDL_FAIL(DDL_E_VALUE, "%s: dintercept must be a contiguous (%lld,) float64 array", who,
                 (long long)k);
    const double *yv = ddl_tensor_data(y);
    int64_t classes = multinomial ? k : 2;
    for (int64_t i = 0; i < r.n; i++)
        if (!(yv[i] >= 0 && yv[i] < (double)classes && yv[i] == floor(yv[i])))
            DDL_FAIL(DDL_E_VALUE, "%s: label %g of row %lld is not a class in [0, %lld)", who,
                     yv[i], (long long)i, (long long)classes);

    const double *w = ddl_tensor_data(coef), *b = intercept ? ddl_tensor_data(intercept) : NULL;
    double *dw = ddl_tensor_data(dcoef), *db = dintercept ? ddl_tensor_data(dintercept) : NULL;
    double total = 0;
    if (!multinomial) {
        double b0 = b ? b[0] : 0;
        for (int64_t i = 0; i < r.n; i++) {
            double m = row_dot(&r, i, w) + b0;
            total += softplus(m) - yv[i] * m;
            double g = sigmoid(m) - yv[i];
            if (g != 0) row_axpy(dw, g, &r, i);
            if (db) db[0] += g;
        }
        *loss = total;
        return DDL_OK;
    }
    double *m = malloc(sizeof(double) * (size_t)k); /* (k) margins of one row */
    if (!m) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory", who);
    for (int64_t i = 0; i < r.n; i++) {
        double top = -INFINITY;
        for (int64_t c = 0; c < k; c++) {
            m[c] = row_dot(&r, i, w + c * r.d) + (b ? b[c] : 0);
            if (m[c] > top) top = m[c];
        }
        double z = 0;
        for (int64_t c = 0; c < k; c++) z += exp(m[c] - top);
        double lse = top + log(z);
        int64_t yi = (int64_t)yv[i];
        total += lse - m[yi];
        for (int64_t c = 0; c < k; c++) {
            double g = exp(m[c] - lse) - (c == yi ? 1.0 : 0.0);
            if (g != 0) row_axpy(dw + c * r.d, g, &r, i);
            if (db) db[c] += g;
        }
    }
    free(m);
    *loss = total;
    return DDL_OK;
}

/* ---- compensated sums (the same total whatever the split of the rows) ----------------------- */

/* hi[j] + lo[j] += v, with the rounding error of the add kept in lo (Knuth's TwoSum): the
 * (hi, lo) pair carries ~106 bits, so adding the same terms in any grouping (one rank, or
 * shards whose pairs are added in rank order) rounds to the same double. */
static inline void acc_add(double *hi, double *lo, int64_t j, double v) {
    double a = hi[j], s = a + v, bv = s - a;
    lo[j] += (a - (s - bv)) + (v - bv);
    hi[j] = s;
}

/* acc_add of a * x_i into columns off + col */
static void row_acc_axpy(double *hi, double *lo, double a, const rows *x, int64_t i) {
    if (!x->indptr) {
        int64_t d = x->d;
        if (x->f32)
            for (int64_t j = 0; j < d; j++)
                acc_add(hi, lo, j, a * ((const float *)x->values)[i * d + j]);
        else
            for (int64_t j = 0; j < d; j++)
                acc_add(hi, lo, j, a * ((const double *)x->values)[i * d + j]);
        return;
    }
    const int64_t *col = x->indices;
    for (int64_t p = x->indptr[i], e = x->indptr[i + 1]; p < e; p++) {
        double v = x->f32 ? ((const float *)x->values)[p] : ((const double *)x->values)[p];
        acc_add(hi, lo, col[p], a * v);
    }
}

/* acc (2, m) float64 contiguous: checked, returns row 0 (hi) and row 1 (lo) */
static ddl_status view_acc(double **hi, double **lo, ddl_tensor *acc, int64_t m, const char *who) {
    if (!acc || acc->dtype != DDL_FLOAT64 || acc->ndim != 2 || acc->shape[0] != 2 ||
        acc->shape[1] != m || !ddl_tensor_is_contiguous(acc))
        DDL_FAIL(DDL_E_VALUE, "%s: acc must be a contiguous (2, %lld) float64 array", who,
                 (long long)m);
    *hi = ddl_tensor_data(acc);
    *lo = *hi + m;
    return DDL_OK;
}

/* weights (n) float64 or NULL; checked finite and >= 0 */
static ddl_status view_weights(const double **w, const ddl_tensor *weights, int64_t n,
                               const char *who) {
    *w = NULL;
    if (!weights) return DDL_OK;
    if (!is_vec(weights, DDL_FLOAT64) || weights->shape[0] != n)
        DDL_FAIL(DDL_E_VALUE, "%s: weights must be a contiguous (%lld,) float64 array", who,
                 (long long)n);
    *w = ddl_tensor_data(weights);
    for (int64_t i = 0; i < n; i++)
        if (!((*w)[i] >= 0 && isfinite((*w)[i])))
            DDL_FAIL(DDL_E_VALUE, "%s: weight %g of row %lld is not a finite number >= 0", who,
                     (*w)[i], (long long)i);
    return DDL_OK;
}

ddl_status ddl_column_moments(ddl_tensor *acc, const ddl_csr *x, const ddl_tensor *weights) {
    static const char who[] = "column_moments";
    rows r;
    double *hi, *lo;
    const double *w;
    DDL_TRY(view_rows(&r, x, who));
    DDL_TRY(view_acc(&hi, &lo, acc, 2 + 2 * r.d, who));
    DDL_TRY(view_weights(&w, weights, r.n, who));
    double *sh = hi + 2, *sl = lo + 2, *qh = hi + 2 + r.d, *ql = lo + 2 + r.d;
    for (int64_t i = 0; i < r.n; i++) {
        double wi = w ? w[i] : 1.0;
        acc_add(hi, lo, 0, wi);
        acc_add(hi, lo, 1, wi * wi);
        if (!r.indptr) {
            for (int64_t j = 0; j < r.d; j++) {
                double v = r.f32 ? ((const float *)r.values)[i * r.d + j]
                                 : ((const double *)r.values)[i * r.d + j];
                acc_add(sh, sl, j, wi * v);
                acc_add(qh, ql, j, wi * v * v);
            }
            continue;
        }
        for (int64_t p = r.indptr[i]; p < r.indptr[i + 1]; p++) {
            double v = r.f32 ? ((const float *)r.values)[p] : ((const double *)r.values)[p];
            acc_add(sh, sl, r.indices[p], wi * v);
            acc_add(qh, ql, r.indices[p], wi * v * v);
        }
    }
    return DDL_OK;
}

ddl_status ddl_logistic_sums(ddl_tensor *acc, const ddl_csr *x, const ddl_tensor *y,
                             const ddl_tensor *weights, const ddl_tensor *coef,
                             const ddl_tensor *intercept, int multinomial) {
    static const char who[] = "logistic_sums";
    rows r;
    int64_t k;
    double *hi, *lo;
    const double *wt;
    DDL_TRY(view_rows(&r, x, who));
    DDL_TRY(check_params(&k, coef, intercept, r.d, who));
    if (multinomial ? k < 2 : k != 1)
        DDL_FAIL(DDL_E_VALUE, "%s: a %s model needs %s coefficient rows, got %lld", who,
                 multinomial ? "multinomial" : "binomial", multinomial ? ">= 2" : "1",
                 (long long)k);
    if (!is_vec(y, DDL_FLOAT64) || y->shape[0] != r.n)
        DDL_FAIL(DDL_E_VALUE, "%s: y must be a contiguous (%lld,) float64 array", who,
                 (long long)r.n);
    DDL_TRY(view_acc(&hi, &lo, acc, 1 + k * r.d + k, who));
    DDL_TRY(view_weights(&wt, weights, r.n, who));
    const double *yv = ddl_tensor_data(y);
    int64_t classes = multinomial ? k : 2;
    for (int64_t i = 0; i < r.n; i++)
        if (!(yv[i] >= 0 && yv[i] < (double)classes && yv[i] == floor(yv[i])))
            DDL_FAIL(DDL_E_VALUE, "%s: label %g of row %lld is not a class in [0, %lld)", who,
                     yv[i], (long long)i, (long long)classes);
    const double *w = ddl_tensor_data(coef), *b = intercept ? ddl_tensor_data(intercept) : NULL;
    double *gh = hi + 1, *gl = lo + 1;                     /* dcoef (k, d) */
    double *bh = hi + 1 + k * r.d, *bl = lo + 1 + k * r.d; /* dintercept (k) */
    if (!multinomial) {
        double b0 = b ? b[0] : 0;
        for (int64_t i = 0; i < r.n; i++) {
            double wi = wt ? wt[i] : 1.0;
            if (wi == 0) continue;
            double m = row_dot(&r, i, w) + b0;
            acc_add(hi, lo, 0, wi * (softplus(m) - yv[i] * m));
            double g = wi * (sigmoid(m) - yv[i]);
            if (g != 0) row_acc_axpy(gh, gl, g, &r, i);
            acc_add(bh, bl, 0, g);
        }
        return DDL_OK;
    }
    double *m = malloc(sizeof(double) * (size_t)k); /* (k) margins of one row */
    if (!m) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory", who);
    for (int64_t i = 0; i < r.n; i++) {
        double wi = wt ? wt[i] : 1.0;
        if (wi == 0) continue;
        double top = -INFINITY;
        for (int64_t c = 0; c < k; c++) {
            m[c] = row_dot(&r, i, w + c * r.d) + (b ? b[c] : 0);
            if (m[c] > top) top = m[c];
        }
        double z = 0;
        for (int64_t c = 0; c < k; c++) z += exp(m[c] - top);
        double lse = top + log(z);
        int64_t yi = (int64_t)yv[i];
        acc_add(hi, lo, 0, wi * (lse - m[yi]));
        for (int64_t c = 0; c < k; c++) {
            double g = wi * (exp(m[c] - lse) - (c == yi ? 1.0 : 0.0));
            if (g != 0) row_acc_axpy(gh + c * r.d, gl + c * r.d, g, &r, i);
            acc_add(bh, bl, c, g);
        }
    }
    free(m);
    return DDL_OK;
}
