/* ops_reduce.c: ddl_reduce: sum, mean, max, min, argmax, argmin, var, std and prod over dims:
 * the plan, the layout walk and the drivers (the inner kernels are in reduce_kernels.h). */
#include "core/internal.h"
#include "core/reduce_kernels.h"

#include <math.h>
#include <stdlib.h>

/* Shortest row worth a kernel call per row when other reduced dims are walked around it; with
 * shorter rows a contiguous copy (reduced dims last) is cheaper. */
#define MIN_WALKED_ROW 32

static const char *const op_names[DDL_NUM_REDUCE_OPS] = {
    "sum", "mean", "max", "min", "argmax", "argmin", "var", "std", "prod",
};

/* ---- drivers --------------------------------------------------------------------------------- */

typedef struct {
    ddl_reduce_op op;
    ddl_dtype dt, odt;
    int64_t es, oes; /* element sizes of input and output */
    int64_t R;       /* elements reduced into each output */
    double dof;      /* var/std divisor: max(R - correction, 0) */
} plan;

/* num / den for var's divisor: NumPy's NaN (0/0) or inf when the divisor is not positive. */
static double div_dof(double num, double den) {
    if (den > 0) return num / den;
    return num == 0 || isnan(num) ? NAN : INFINITY;
}

static double finish_var(const plan *p, double ss) {
    double v = div_dof(ss, p->dof);
    return p->op == DDL_REDUCE_STD ? sqrt(v) : v;
}

static void store_doubles(char *out, ddl_dtype odt, const double *v, int64_t n) {
    if (odt == DDL_FLOAT32)
        for (int64_t j = 0; j < n; j++) ((float *)out)[j] = (float)v[j];
    else
        memcpy(out, v, (size_t)n * sizeof(double));
}

/* Sum or product (in double) of `nrows` rows of n elements: rows at base + rit offsets. */
static double rows_float(const plan *p, const char *base, ddl_iter *rit, int64_t nrows, int64_t n,
                         int prod) {
    double acc = prod ? 1.0 : -0.0, v;
    for (int64_t r = 0; r < nrows; r++, ddl_iter_next(rit)) {
        const char *x = base + rit->off[0];
        if (prod) {
            SWITCH_FLOAT(p->dt, row_prod, &v, x, n);
            acc *= v;
        } else {
            SWITCH_ALL(p->dt, row_sum, &v, x, n);
            acc += v;
        }
    }
    return acc;
}

/* Row mode. Output k (at kit's offset) reduces `nrows` rows of n contiguous elements, the rows
 * at rit's offsets (rit walks the reduced dims other than the row's; nrows == 1 when none).
 * Both iterators end where they started. */
static void reduce_rows(char *out, const plan *p, const char *x, ddl_iter *kit, int64_t nout,
                        ddl_iter *rit, int64_t nrows, int64_t n) {
    ddl_dtype dt = p->dt;
    for (int64_t k = 0; k < nout; k++, ddl_iter_next(kit)) {
        const char *b = x + kit->off[0];
        char *o = out + k * p->oes;
        switch (p->op) {
        case DDL_REDUCE_SUM:
        case DDL_REDUCE_PROD: {
            int prod = p->op == DDL_REDUCE_PROD;
            if (ddl_dtype_is_float(dt)) {
                ddl_store_elem(o, p->odt, rows_float(p, b, rit, nrows, n, prod));
                break;
            }
            uint64_t acc = prod, v;
            for (int64_t r = 0; r < nrows; r++, ddl_iter_next(rit)) {
                if (prod) {
                    SWITCH_INT(dt, row_iprod, &v, b + rit->off[0], n);
                    acc *= v;
                } else {
                    SWITCH_INT(dt, row_isum, &v, b + rit->off[0], n);
                    acc += v;
                }
            }
            *(int64_t *)o = (int64_t)acc;
            break;
        }
        case DDL_REDUCE_MEAN:
            ddl_store_elem(o, p->odt, rows_float(p, b, rit, nrows, n, 0) / (double)p->R);
            break;
        case DDL_REDUCE_VAR:
        case DDL_REDUCE_STD: {
            double mean = rows_float(p, b, rit, nrows, n, 0) / (double)p->R, ss = 0, v;
            for (int64_t r = 0; r < nrows; r++, ddl_iter_next(rit)) {
                SWITCH_ALL(dt, row_sumsq, &v, b + rit->off[0], n, mean);
                ss += v;
            }
            ddl_store_elem(o, p->odt, finish_var(p, ss));
            break;
        }
        case DDL_REDUCE_MAX:
            for (int64_t r = 0; r < nrows; r++, ddl_iter_next(rit))
                SWITCH_ALL(dt, row_max, o, b + rit->off[0], n, r == 0);
            break;
        case DDL_REDUCE_MIN:
            for (int64_t r = 0; r < nrows; r++, ddl_iter_next(rit))
                SWITCH_ALL(dt, row_min, o, b + rit->off[0], n, r == 0);
            break;
        case DDL_REDUCE_ARGMAX:
        case DDL_REDUCE_ARGMIN: { /* nrows == 1: the value first, then where it first occurs */
            union {
                float f32;
                double f64;
                int64_t i64;
                uint8_t u8;
            } best;
            if (p->op == DDL_REDUCE_ARGMAX) {
                SWITCH_ALL(dt, row_max, (char *)&best, b, n, 1);
            } else {
                SWITCH_ALL(dt, row_min, (char *)&best, b, n, 1);
            }
            SWITCH_ALL(dt, row_find, (int64_t *)o, b, n, (const char *)&best);
            break;
        }
        default: break;
        }
    }
}

/* Column mode. Output block k (kit's offset) is k_cols contiguous outputs, each reducing nr
 * rows `rs` bytes apart. `scratch`: 2 * COL_BLOCK doubles. */
static void reduce_cols(char *out, const plan *p, const char *x, ddl_iter *kit, int64_t nout,
                        int64_t nr, int64_t rs, int64_t k_cols, double *scratch) {
    ddl_dtype dt = p->dt, odt = p->odt;
    for (int64_t k = 0; k < nout; k++, ddl_iter_next(kit)) {
        const char *b = x + kit->off[0];
        for (int64_t j0 = 0; j0 < k_cols; j0 += COL_BLOCK) {
            int64_t kc = k_cols - j0 < COL_BLOCK ? k_cols - j0 : COL_BLOCK;
            const char *xb = b + j0 * p->es;
            char *ob = out + (k * k_cols + j0) * p->oes;
            switch (p->op) {
            case DDL_REDUCE_SUM:
            case DDL_REDUCE_PROD:
                if (ddl_dtype_is_float(dt)) {
                    double *acc = odt == DDL_FLOAT64 ? (double *)ob : scratch;
                    if (p->op == DDL_REDUCE_SUM) {
                        SWITCH_ALL(dt, col_sum, acc, xb, nr, kc, rs);
                    } else {
                        SWITCH_FLOAT(dt, col_prod, acc, xb, nr, kc, rs);
                    }
                    if (acc == scratch) store_doubles(ob, odt, scratch, kc);
                } else if (p->op == DDL_REDUCE_SUM) {
                    SWITCH_INT(dt, col_isum, (uint64_t *)ob, xb, nr, kc, rs);
                } else {
                    SWITCH_INT(dt, col_iprod, (uint64_t *)ob, xb, nr, kc, rs);
                }
                break;
            case DDL_REDUCE_MEAN:
                SWITCH_ALL(dt, col_sum, scratch, xb, nr, kc, rs);
                for (int64_t j = 0; j < kc; j++) scratch[j] /= (double)p->R;
                store_doubles(ob, odt, scratch, kc);
                break;
            case DDL_REDUCE_VAR:
            case DDL_REDUCE_STD: {
                double *mean = scratch, *ss = scratch + COL_BLOCK;
                SWITCH_ALL(dt, col_sum, mean, xb, nr, kc, rs);
                for (int64_t j = 0; j < kc; j++) mean[j] /= (double)p->R;
                SWITCH_ALL(dt, col_sumsq, ss, mean, xb, nr, kc, rs);
                for (int64_t j = 0; j < kc; j++) ss[j] = finish_var(p, ss[j]);
                store_doubles(ob, odt, ss, kc);
                break;
            }
            case DDL_REDUCE_MAX: SWITCH_ALL(dt, col_max, ob, xb, nr, kc, rs); break;
            case DDL_REDUCE_MIN: SWITCH_ALL(dt, col_min, ob, xb, nr, kc, rs); break;
            case DDL_REDUCE_ARGMAX:
                SWITCH_ALL(dt, col_argmax, (int64_t *)ob, scratch, xb, nr, kc, rs);
                break;
            case DDL_REDUCE_ARGMIN:
                SWITCH_ALL(dt, col_argmin, (int64_t *)ob, scratch, xb, nr, kc, rs);
                break;
            default: break;
            }
        }
    }
}

/* ---- layouts -------------------------------------------------------------------------------- */

/* The input seen as groups: size-1 dims dropped, and neighbouring dims merged when both are
 * kept or both reduced and they are contiguous with each other. A merged group walks its
 * elements in the same (row-major) order as the dims it replaces, so flat indices survive. */
typedef struct {
    int n;
    int64_t shape[DDL_MAX_DIMS + 1];
    int64_t stride[DDL_MAX_DIMS + 1]; /* bytes */
    int red[DDL_MAX_DIMS + 1];
} layout;

static void layout_build(layout *L, int ndim, const int64_t *shape, const int64_t *strides,
                         const int *red, int64_t es) {
    int n = 0, nred = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int64_t st = strides[d] * es;
        if (n > 0 && L->red[n - 1] == red[d] && L->stride[n - 1] == st * shape[d]) {
            L->shape[n - 1] *= shape[d];
            L->stride[n - 1] = st;
        } else {
            L->shape[n] = shape[d];
            L->stride[n] = st;
            L->red[n++] = red[d];
        }
    }
    for (int g = 0; g < n; g++) nred += L->red[g];
    if (nred == 0) { /* every reduced dim has size 1: reduce rows of one element */
        L->shape[n] = 1;
        L->stride[n] = es;
        L->red[n++] = 1;
    }
    L->n = n;
}

enum { MODE_ROWS, MODE_COLS, MODE_COPY };

/* Which kernel can walk L in place; for rows and columns also the groups the iterators walk. */
typedef struct {
    int mode;
    int nk, nw; /* kept groups walked; reduced groups walked */
    int64_t kshape[DDL_MAX_DIMS], kst[1][DDL_MAX_DIMS];
    int64_t wshape[DDL_MAX_DIMS], wst[1][DDL_MAX_DIMS];
    int64_t nout, nrows; /* kept / walked reduced elements */
    int64_t n, rs;       /* row length (rows), or columns and row stride */
} pick;

static int64_t reduced_size(const layout *L) {
    int64_t r = 1;
    for (int g = 0; g < L->n; g++)
        if (L->red[g]) r *= L->shape[g];
    return r;
}

static void pick_kernel(pick *k, const layout *L, int64_t es, int is_arg) {
    int nred = 0, row = -1, last_kept = -1;
    for (int g = 0; g < L->n; g++) {
        if (L->red[g]) {
            nred++;
            if (L->stride[g] == es) row = g;
        } else {
            last_kept = g;
        }
    }
    k->nk = k->nw = 0;
    k->nout = k->nrows = 1;
    if (row >= 0 && (nred == 1 || (!is_arg && L->shape[row] >= MIN_WALKED_ROW))) {
        k->mode = MODE_ROWS;
        k->n = L->shape[row];
        for (int g = 0; g < L->n; g++) {
            if (g == row) continue;
            if (L->red[g]) {
                k->wshape[k->nw] = L->shape[g];
                k->wst[0][k->nw++] = L->stride[g];
                k->nrows *= L->shape[g];
            } else {
                k->kshape[k->nk] = L->shape[g];
                k->kst[0][k->nk++] = L->stride[g];
                k->nout *= L->shape[g];
            }
        }
    } else if (nred == 1 && last_kept >= 0 && L->stride[last_kept] == es &&
               !(is_arg && reduced_size(L) > INT32_MAX)) { /* col_arg* keep int32 indices */
        k->mode = MODE_COLS;
        k->n = L->shape[last_kept];
        for (int g = 0; g < L->n; g++) {
            if (g == last_kept) continue;
            if (L->red[g]) {
                k->nrows = L->shape[g];
                k->rs = L->stride[g];
            } else {
                k->kshape[k->nk] = L->shape[g];
                k->kst[0][k->nk++] = L->stride[g];
                k->nout *= L->shape[g];
            }
        }
    } else {
        k->mode = MODE_COPY;
    }
}

/* Run the picked kernel over the tensor at x into out (contiguous). */
static ddl_status run_pick(char *out, const plan *p, const pick *k, const char *x) {
    ddl_iter kit, wit;
    ddl_iter_init(&kit, k->nk, k->kshape, 1, (const int64_t(*)[DDL_MAX_DIMS])k->kst);
    if (k->mode == MODE_ROWS) {
        ddl_iter_init(&wit, k->nw, k->wshape, 1, (const int64_t(*)[DDL_MAX_DIMS])k->wst);
        reduce_rows(out, p, x, &kit, k->nout, &wit, k->nrows, k->n);
        return DDL_OK;
    }
    double *scratch = malloc(2 * COL_BLOCK * sizeof(double));
    if (!scratch) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for scratch", op_names[p->op]);
    reduce_cols(out, p, x, &kit, k->nout, k->nrows, k->rs, k->n, scratch);
    free(scratch);
    return DDL_OK;
}

/* The general case: copy `a` with the kept dims first and the reduced dims last, so that each
 * output reduces one contiguous row. */
static ddl_status reduce_copy(char *out, const plan *p, const ddl_tensor *a, const int *red) {
    int perm[DDL_MAX_DIMS], pred[DDL_MAX_DIMS], n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int d = 0; d < a->ndim; d++)
            if (red[d] == pass) {
                pred[n] = pass;
                perm[n++] = d;
            }
    ddl_tensor *t, *c;
    DDL_TRY(ddl_tensor_permute(&t, a, perm));
    ddl_status st = ddl_tensor_contiguous(&c, t);
    ddl_tensor_release(t);
    if (st) return st;
    layout L;
    pick k;
    layout_build(&L, c->ndim, c->shape, c->strides, pred, p->es);
    pick_kernel(&k, &L, p->es, 1);
    if (k.mode != MODE_ROWS || k.nrows != 1)
        st = ddl_fail(DDL_E_INTERNAL, "%s: a contiguous copy did not give contiguous rows",
                      op_names[p->op]);
    else
        st = run_pick(out, p, &k, ddl_tensor_data(c));
    ddl_tensor_release(c);
    return st;
}

static ddl_dtype result_dtype(ddl_reduce_op op, ddl_dtype dt) {
    switch (op) {
    case DDL_REDUCE_SUM:
    case DDL_REDUCE_PROD: return ddl_dtype_is_float(dt) ? dt : DDL_INT64;
    case DDL_REDUCE_MEAN:
    case DDL_REDUCE_VAR:
    case DDL_REDUCE_STD: return ddl_dtype_is_float(dt) ? dt : DDL_FLOAT32;
    case DDL_REDUCE_ARGMAX:
    case DDL_REDUCE_ARGMIN: return DDL_INT64;
    default: return dt;
    }
}

/* Outputs when nothing is reduced into them (NumPy's: 0, 1, NaN). */
static double empty_value(ddl_reduce_op op) {
    switch (op) {
    case DDL_REDUCE_SUM: return 0.0;
    case DDL_REDUCE_PROD: return 1.0;
    default: return NAN;
    }
}

static ddl_status reduce_into(ddl_tensor *o, const plan *p, const ddl_tensor *a, const int *red,
                              int is_arg) {
    if (p->R == 0) return ddl_fill_(o, empty_value(p->op));
    if (p->R == 1 && !is_arg && p->op != DDL_REDUCE_VAR && p->op != DDL_REDUCE_STD) {
        /* each output is its one input element, converted: a copy */
        ddl_tensor *v;
        DDL_TRY(ddl_tensor_view(&v, o, a->ndim, a->shape));
        ddl_status st = ddl_copy_(v, a);
        ddl_tensor_release(v);
        return st;
    }
    layout L;
    pick k;
    layout_build(&L, a->ndim, a->shape, a->strides, red, p->es);
    pick_kernel(&k, &L, p->es, is_arg);
    if (k.mode == MODE_COPY) return reduce_copy(ddl_tensor_data(o), p, a, red);
    return run_pick(ddl_tensor_data(o), p, &k, ddl_tensor_data(a));
}

ddl_status ddl_reduce(ddl_tensor **out, ddl_reduce_op op, const ddl_tensor *a, int ndims,
                      const int *dims, int keepdim, int64_t correction) {
    char buf[DDL_SHAPE_BUF];
    if (!out || !a) DDL_FAIL(DDL_E_VALUE, "reduce: NULL tensor argument");
    if ((unsigned)op >= DDL_NUM_REDUCE_OPS) DDL_FAIL(DDL_E_VALUE, "reduce: invalid op %d", (int)op);
    const char *name = op_names[op];
    if ((unsigned)a->dtype >= DDL_NUM_DTYPES)
        DDL_FAIL(DDL_E_TYPE, "%s: invalid dtype %d", name, (int)a->dtype);
    if (ddl_dtype_compute(a->dtype) != a->dtype) {
        /* a narrow storage dtype: reduce in int64 / float32; max/min (and the float
         * reductions of float16/bfloat16) cast back, integer sums stay int64 as in PyTorch */
        ddl_tensor *w, *r;
        DDL_TRY(ddl_tensor_to(&w, a, ddl_dtype_compute(a->dtype)));
        ddl_status st = ddl_reduce(&r, op, w, ndims, dims, keepdim, correction);
        ddl_tensor_release(w);
        if (st) return st;
        int back =
            r->dtype == ddl_dtype_compute(a->dtype) && op != DDL_REDUCE_ARGMAX &&
            op != DDL_REDUCE_ARGMIN &&
            (ddl_dtype_is_float(a->dtype) || (op != DDL_REDUCE_SUM && op != DDL_REDUCE_PROD));
        if (!back) {
            *out = r;
            return DDL_OK;
        }
        st = ddl_tensor_to(out, r, a->dtype);
        ddl_tensor_release(r);
        return st;
    }
    if (ndims < 0 || (ndims > 0 && !dims))
        DDL_FAIL(DDL_E_VALUE, "%s: invalid dims (%d of them)", name, ndims);
    int is_arg = op == DDL_REDUCE_ARGMAX || op == DDL_REDUCE_ARGMIN;
    if (is_arg && ndims > 1)
        DDL_FAIL(DDL_E_VALUE, "%s: takes at most one dim, got %d", name, ndims);

    int red[DDL_MAX_DIMS] = {0}, seen[DDL_MAX_DIMS] = {0};
    for (int d = 0; d < a->ndim && ndims == 0; d++) red[d] = 1;
    for (int i = 0; i < ndims; i++) {
        int d;
        DDL_TRY(ddl_norm_dim(&d, dims[i], a->ndim, name));
        if (seen[d]) DDL_FAIL(DDL_E_VALUE, "%s: dim %d appears more than once in dims", name, d);
        seen[d] = 1;
        if (d < a->ndim) red[d] = 1; /* a 0-d tensor accepts dim 0 or -1 and keeps its shape */
    }

    /* R, the count reduced into each output; it can only overflow when the output is empty */
    int64_t R = 1, oshape[DDL_MAX_DIMS], onumel;
    int on = 0, zero = 0, overflow = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (red[d]) {
            if (a->shape[d] == 0)
                zero = 1;
            else if (R > INT64_MAX / a->shape[d])
                overflow = 1;
            else
                R *= a->shape[d];
            if (keepdim) oshape[on++] = 1;
        } else {
            oshape[on++] = a->shape[d];
        }
    }
    if (zero) R = 0, overflow = 0;
    if (R == 0 && (is_arg || op == DDL_REDUCE_MAX || op == DDL_REDUCE_MIN))
        DDL_FAIL(DDL_E_VALUE,
                 "%s: the reduction over a tensor of shape %s is empty, and %s of no elements "
                 "is undefined",
                 name, ddl_shape_str(buf, sizeof buf, a->ndim, a->shape), name);
    DDL_TRY(ddl_shape_numel(&onumel, on, oshape));
    if (overflow && onumel > 0)
        DDL_FAIL(DDL_E_VALUE, "%s: tensor of shape %s has too many elements", name,
                 ddl_shape_str(buf, sizeof buf, a->ndim, a->shape));

    plan p;
    p.op = op;
    p.dt = a->dtype;
    p.odt = result_dtype(op, a->dtype);
    p.es = (int64_t)ddl_dtype_size(p.dt);
    p.oes = (int64_t)ddl_dtype_size(p.odt);
    p.R = R;
    p.dof = (double)R - (double)correction;
    if (!(p.dof > 0)) p.dof = 0;

    ddl_tensor *o;
    DDL_TRY(ddl_tensor_empty(&o, p.odt, on, oshape));
    ddl_status st = onumel ? reduce_into(o, &p, a, red, is_arg) : DDL_OK;
    if (st) {
        ddl_tensor_release(o);
        return st;
    }
    *out = o;
    return DDL_OK;
}
