/* ops_elementwise.c: broadcasting binary and unary ops, clamp and where. */
#include "core/internal.h"
#include "core/vmath.h"

#include <math.h>
#include <stdlib.h>

/* KERNEL: every kernel below is compiled for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and the
 * baseline, and the loader picks one for the CPU (gcc's target_clones, through an ifunc). The
 * clones do the same IEEE operations (no FMA contraction under -std=c11; vmath.h calls fma
 * explicitly), so results are bit-identical on every x86-64 CPU; tests/c/test_vmath.c checks
 * that for the vmath kernels. no-trapping-math lets gcc if-convert, and so vectorize, their
 * selects; it changes no result (ddl does not read the floating-point exception flags).
 * VMATH: whether the float32 exp/tanh/sigmoid use vmath.h. Without clones or a native FMA,
 * vmath's fma() calls would be library calls, slower than libm's expf/tanhf, so those builds
 * keep libm. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) &&           \
    defined(__ELF__) && !defined(DDL_NO_CLONES)
#define KERNEL                                                                                     \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),                   \
                   optimize("no-trapping-math")))
#define VMATH 1
#elif defined(__GNUC__) && !defined(__clang__)
#define KERNEL __attribute__((optimize("no-trapping-math")))
#if defined(FP_FAST_FMA) && defined(FP_FAST_FMAF)
#define VMATH 1
#else
#define VMATH 0
#endif
#else
#define KERNEL
#define VMATH 0
#endif

static const char *binary_names[DDL_NUM_BINARY_OPS] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
static const char *unary_names[DDL_NUM_UNARY_OPS] = {"neg",  "exp",     "log",  "sqrt", "abs",
                                                     "tanh", "sigmoid", "relu", "sign"};

static int is_compare(ddl_binary_op op) { return op >= DDL_OP_EQ; }

/* ---- binary kernels ---------------------------------------------------------------------- */
/* A kernel processes one row of n elements; so/sa/sb are byte strides. The contiguous and
 * scalar cases get their own loops so gcc vectorizes them. */
typedef void (*binary_kernel)(char *o, const char *a, const char *b, int64_t n, int64_t so,
                              int64_t sa, int64_t sb);

#define DEFINE_BINARY(NAME, T, OT, EXPR)                                                           \
    KERNEL static void NAME(char *o, const char *a, const char *b, int64_t n, int64_t so,          \
                            int64_t sa, int64_t sb) {                                              \
        if (so == sizeof(OT) && sa == sizeof(T) && sb == sizeof(T)) {                              \
            OT *restrict po = (OT *)o;                                                             \
            const T *restrict pa = (const T *)a, *restrict pb = (const T *)b;                      \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = pa[i], y = pb[i];                                                            \
                po[i] = (OT)(EXPR);                                                                \
            }                                                                                      \
        } else if (so == sizeof(OT) && sa == sizeof(T) && sb == 0) {                               \
            OT *restrict po = (OT *)o;                                                             \
            const T *restrict pa = (const T *)a;                                                   \
            const T y = *(const T *)b;                                                             \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = pa[i];                                                                       \
                po[i] = (OT)(EXPR);                                                                \
            }                                                                                      \
        } else if (so == sizeof(OT) && sa == 0 && sb == sizeof(T)) {                               \
            OT *restrict po = (OT *)o;                                                             \
            const T *restrict pb = (const T *)b;                                                   \
            const T x = *(const T *)a;                                                             \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T y = pb[i];                                                                       \
                po[i] = (OT)(EXPR);                                                                \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = *(const T *)(a + i * sa), y = *(const T *)(b + i * sb);                      \
                *(OT *)(o + i * so) = (OT)(EXPR);                                                  \
            }                                                                                      \
        }                                                                                          \
    }

static inline int64_t ipow(int64_t base, int64_t e) {
    if (e < 0) return base == 1 ? 1 : base == -1 ? (e & 1 ? -1 : 1) : 0;
    int64_t r = 1;
    while (e) {
        if (e & 1) r *= base;
        base *= base;
        e >>= 1;
    }
    return r;
}
/* NaN-propagating max/min, as NumPy's maximum/minimum (x NaN: x; y NaN: the compare fails). */
#define FMAX(x, y) ((x) != (x) || (x) > (y) ? (x) : (y))
#define FMIN(x, y) ((x) != (x) || (x) < (y) ? (x) : (y))

#define DEFINE_ARITH(SUF, T)                                                                       \
    DEFINE_BINARY(add_##SUF, T, T, x + y)                                                          \
    DEFINE_BINARY(sub_##SUF, T, T, x - y)                                                          \
    DEFINE_BINARY(mul_##SUF, T, T, x *y)                                                           \
    DEFINE_BINARY(eq_##SUF, T, uint8_t, x == y)                                                    \
    DEFINE_BINARY(ne_##SUF, T, uint8_t, x != y)                                                    \
    DEFINE_BINARY(lt_##SUF, T, uint8_t, x < y)                                                     \
    DEFINE_BINARY(le_##SUF, T, uint8_t, x <= y)                                                    \
    DEFINE_BINARY(gt_##SUF, T, uint8_t, x > y)                                                     \
    DEFINE_BINARY(ge_##SUF, T, uint8_t, x >= y)                                                    \
    DEFINE_BINARY(max_##SUF, T, T, FMAX(x, y))                                                     \
    DEFINE_BINARY(min_##SUF, T, T, FMIN(x, y))

DEFINE_ARITH(f32, float)
DEFINE_ARITH(f64, double)
DEFINE_ARITH(i64, int64_t)
DEFINE_BINARY(div_f32, float, float, x / y)
DEFINE_BINARY(div_f64, double, double, x / y)
DEFINE_BINARY(pow_f32, float, float, powf(x, y))
DEFINE_BINARY(pow_f64, double, double, pow(x, y))
DEFINE_BINARY(pow_i64, int64_t, int64_t, ipow(x, y))

/* [op][0: float32, 1: float64, 2: int64]; NULL: not defined for that dtype. */
static const binary_kernel binary_kernels[DDL_NUM_BINARY_OPS][3] = {
    [DDL_OP_ADD] = {add_f32, add_f64, add_i64},     [DDL_OP_SUB] = {sub_f32, sub_f64, sub_i64},
    [DDL_OP_MUL] = {mul_f32, mul_f64, mul_i64},     [DDL_OP_DIV] = {div_f32, div_f64, NULL},
    [DDL_OP_POW] = {pow_f32, pow_f64, pow_i64},     [DDL_OP_MAXIMUM] = {max_f32, max_f64, max_i64},
    [DDL_OP_MINIMUM] = {min_f32, min_f64, min_i64}, [DDL_OP_EQ] = {eq_f32, eq_f64, eq_i64},
    [DDL_OP_NE] = {ne_f32, ne_f64, ne_i64},         [DDL_OP_LT] = {lt_f32, lt_f64, lt_i64},
    [DDL_OP_LE] = {le_f32, le_f64, le_i64},         [DDL_OP_GT] = {gt_f32, gt_f64, gt_i64},
    [DDL_OP_GE] = {ge_f32, ge_f64, ge_i64},
};

static int kernel_slot(ddl_dtype dt) { return dt == DDL_FLOAT32 ? 0 : dt == DDL_FLOAT64 ? 1 : 2; }

/* The dtype the op computes in for operands of dtypes (a, b). Bool arithmetic computes in
 * int64; true division of integers computes in float32 (PyTorch's rules). */
static ddl_dtype compute_dtype(ddl_binary_op op, ddl_dtype a, ddl_dtype b) {
    ddl_dtype c = ddl_promote(a, b);
    if (c == DDL_BOOL) c = DDL_INT64;
    if (op == DDL_OP_DIV && !ddl_dtype_is_float(c)) c = DDL_FLOAT32;
    return c;
}

/* Convert t to dtype dt if needed; *owned gets a new reference either way. */
static ddl_status as_dtype(ddl_tensor **owned, const ddl_tensor *t, ddl_dtype dt) {
    if (t->dtype == dt) {
        ddl_tensor_retain((ddl_tensor *)t);
        *owned = (ddl_tensor *)t;
        return DDL_OK;
    }
    return ddl_tensor_to(owned, t, dt);
}

/* t in dtype dt without a new reference: *use is t itself when it has dt (*owned = NULL), else a
 * converted copy that *owned holds for the caller to release. (A retain/release pair is two
 * atomic updates: a visible share of a small op.) */
static ddl_status with_dtype(const ddl_tensor **use, ddl_tensor **owned, const ddl_tensor *t,
                             ddl_dtype dt) {
    *owned = NULL;
    *use = t;
    if (t->dtype == dt) return DDL_OK;
    DDL_TRY(ddl_tensor_to(owned, t, dt));
    *use = *owned;
    return DDL_OK;
}

/* Run kernel k over out = a op b where a and b already have the compute dtype and are
 * broadcast-compatible with out's shape. */
static void run_binary(binary_kernel k, ddl_tensor *out, const ddl_tensor *a, const ddl_tensor *b) {
    int nd = out->ndim;
    int64_t shape[DDL_MAX_DIMS], st[3][DDL_MAX_DIMS], tmp[DDL_MAX_DIMS];
    int64_t es_o = (int64_t)ddl_dtype_size(out->dtype), es = (int64_t)ddl_dtype_size(a->dtype);
    if (ddl_tensor_numel(out) == 0) return;
    for (int d = 0; d < nd; d++) {
        shape[d] = out->shape[d];
        st[0][d] = out->strides[d] * es_o;
    }
    ddl_broadcast_strides(tmp, a, nd, out->shape);
    for (int d = 0; d < nd; d++) st[1][d] = tmp[d] * es;
    ddl_broadcast_strides(tmp, b, nd, out->shape);
    for (int d = 0; d < nd; d++) st[2][d] = tmp[d] * es;
    nd = ddl_coalesce(nd, shape, 3, st);
    char *po = ddl_tensor_data(out);
    const char *pa = ddl_tensor_data(a), *pb = ddl_tensor_data(b);
    if (nd == 0) {
        k(po, pa, pb, 1, es_o, es, es);
        return;
    }
    int64_t inner = shape[nd - 1], rows = ddl_tensor_numel(out) / inner;
    ddl_iter it;
    ddl_iter_init(&it, nd - 1, shape, 3, (const int64_t(*)[DDL_MAX_DIMS])st);
    for (int64_t r = 0; r < rows; r++, ddl_iter_next(&it))
        k(po + it.off[0], pa + it.off[1], pb + it.off[2], inner, st[0][nd - 1], st[1][nd - 1],
          st[2][nd - 1]);
}

ddl_status ddl_binary(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a,
                      const ddl_tensor *b) {
    if ((unsigned)op >= DDL_NUM_BINARY_OPS) DDL_FAIL(DDL_E_VALUE, "unknown binary op %d", op);
    int nd;
    int64_t shape[DDL_MAX_DIMS];
    DDL_TRY(
        ddl_broadcast_shapes(&nd, shape, a->ndim, a->shape, b->ndim, b->shape, binary_names[op]));
    /* the result dtype follows promotion over the storage dtypes; the kernel runs in their
     * compute dtypes (int64, float32) and a narrower result is cast back */
    ddl_dtype rdt = compute_dtype(op, a->dtype, b->dtype);
    ddl_dtype cdt = compute_dtype(op, ddl_dtype_compute(a->dtype), ddl_dtype_compute(b->dtype));
    if (ddl_dtype_compute(rdt) != cdt) cdt = ddl_dtype_compute(rdt);
    binary_kernel k = binary_kernels[op][kernel_slot(cdt)];
    const ddl_tensor *ua, *ub;
    ddl_tensor *ca = NULL, *cb = NULL, *o = NULL;
    ddl_status st = with_dtype(&ua, &ca, a, cdt);
    if (!st) st = with_dtype(&ub, &cb, b, cdt);
    if (!st) st = ddl_tensor_empty(&o, is_compare(op) ? DDL_BOOL : cdt, nd, shape);
    if (!st) run_binary(k, o, ua, ub);
    if (!st && !is_compare(op) && rdt != cdt) {
        ddl_tensor *n = NULL;
        st = ddl_tensor_to(&n, o, rdt);
        ddl_tensor_release(o);
        o = n;
    }
    if (!st) *out = o;
    ddl_tensor_release(ca);
    ddl_tensor_release(cb);
    return st;
}

ddl_status ddl_binary_(ddl_tensor *a, ddl_binary_op op, const ddl_tensor *b) {
    if ((unsigned)op >= DDL_NUM_BINARY_OPS) DDL_FAIL(DDL_E_VALUE, "unknown binary op %d", op);
    if (is_compare(op))
        DDL_FAIL(DDL_E_VALUE, "%s_: comparisons have no in-place form", binary_names[op]);
    /* PyTorch's rule: the result may narrow within floats (float32 += float64), but never
     * turn float into int or int into bool; the op then runs in a's dtype */
    ddl_dtype cdt = compute_dtype(op, a->dtype, b->dtype);
    if (cdt != a->dtype && (a->dtype == DDL_BOOL || ddl_dtype_is_float(cdt)) &&
        !(ddl_dtype_is_float(cdt) && ddl_dtype_is_float(a->dtype)))
        DDL_FAIL(DDL_E_TYPE, "%s_: result type %s can't be cast to the %s tensor updated in place",
                 binary_names[op], ddl_dtype_name(cdt), ddl_dtype_name(a->dtype));
    int nd;
    int64_t shape[DDL_MAX_DIMS];
    DDL_TRY(
        ddl_broadcast_shapes(&nd, shape, a->ndim, a->shape, b->ndim, b->shape, binary_names[op]));
    if (ddl_dtype_compute(a->dtype) != a->dtype && nd == a->ndim &&
        !memcmp(shape, a->shape, sizeof(int64_t) * (size_t)nd) &&
        !ddl_tensor_has_internal_overlap(a)) {
        /* a narrow storage dtype: compute out of place, then cast into a */
        ddl_tensor *r;
        DDL_TRY(ddl_binary(&r, op, a, b));
        ddl_status st = ddl_copy_(a, r);
        ddl_tensor_release(r);
        return st;
    }
    if (nd != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)nd)) {
        char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
        DDL_FAIL(DDL_E_VALUE, "%s_: the result shape %s differs from the in-place target's %s",
                 binary_names[op], ddl_shape_str(b1, sizeof b1, nd, shape),
                 ddl_shape_str(b2, sizeof b2, a->ndim, a->shape));
    }
    if (ddl_tensor_has_internal_overlap(a))
        DDL_FAIL(DDL_E_VALUE,
                 "%s_: elements of the tensor updated in place share memory (an expanded "
                 "view); clone() it first",
                 binary_names[op]);
    ddl_tensor *cb;
    /* b overlapping a in another layout (a += a.T) is read from a copy, as in NumPy */
    if (b->dtype == a->dtype && ddl_tensor_may_overlap(a, b) && !ddl_tensor_same_view(a, b))
        DDL_TRY(ddl_tensor_clone(&cb, b));
    else
        DDL_TRY(as_dtype(&cb, b, a->dtype));
    run_binary(binary_kernels[op][kernel_slot(a->dtype)], a, a, cb);
    ddl_tensor_release(cb);
    return DDL_OK;
}

/* A 0-d tensor on the stack: the scalar operand of one ddl_binary call, without the three
 * allocations of ddl_tensor_full (a third of a small op's time). ddl_binary only borrows its
 * operands (a reference it takes is given back before it returns), so nothing outlives it. */
typedef struct {
    ddl_tensor t;
    ddl_storage s;
    double value; /* any dtype's element fits */
} stack_scalar;

static ddl_tensor *stack_scalar_init(stack_scalar *sc, ddl_dtype dt, double v) {
    memset(sc, 0, sizeof *sc);
    sc->s.refcount = 1;
    sc->s.data = &sc->value;
    sc->s.nbytes = ddl_dtype_size(dt);
    sc->t.refcount = 1;
    sc->t.dtype = dt;
    sc->t.storage = &sc->s;
    ddl_store_elem(&sc->value, dt, v);
    return &sc->t;
}

/* The dtype of a Python-style scalar next to tensor a (see ddl.h for the rule). */
static ddl_dtype scalar_dtype(const ddl_tensor *a, double s, int is_float) {
    ddl_dtype dt = a->dtype;
    if (is_float && !ddl_dtype_is_float(dt))
        dt = DDL_FLOAT32;
    else if (!is_float && dt == DDL_BOOL && s != 0.0 && s != 1.0)
        dt = DDL_INT64;
    return dt;
}

ddl_status ddl_binary_scalar(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a, double s,
                             int scalar_is_float, int reverse) {
    stack_scalar sc;
    ddl_dtype dt = scalar_dtype(a, s, scalar_is_float);
    /* a comparison takes the scalar exactly (int8 > 200 is false, not a wrapped -56) */
    if (is_compare(op)) dt = ddl_dtype_compute(dt);
    ddl_tensor *t = stack_scalar_init(&sc, dt, s);
    return reverse ? ddl_binary(out, op, t, a) : ddl_binary(out, op, a, t);
}

ddl_status ddl_binary_scalar_(ddl_tensor *a, ddl_binary_op op, double s) {
    stack_scalar sc;
    return ddl_binary_(a, op, stack_scalar_init(&sc, a->dtype, s));
}

/* ---- unary kernels ---------------------------------------------------------------------- */

typedef void (*unary_kernel)(char *o, const char *a, int64_t n, int64_t so, int64_t sa);

#define DEFINE_UNARY(NAME, T, EXPR)                                                                \
    KERNEL static void NAME(char *o, const char *a, int64_t n, int64_t so, int64_t sa) {           \
        if (so == sizeof(T) && sa == sizeof(T)) {                                                  \
            T *restrict po = (T *)o;                                                               \
            const T *restrict pa = (const T *)a;                                                   \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = pa[i];                                                                       \
                po[i] = (T)(EXPR);                                                                 \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) {                                                      \
                T x = *(const T *)(a + i * sa);                                                    \
                *(T *)(o + i * so) = (T)(EXPR);                                                    \
            }                                                                                      \
        }                                                                                          \
    }

#define DEFINE_UNARY_FLOAT(SUF, T, LOG, SQRT, FABS, SIN, COS)                                      \
    DEFINE_UNARY(neg_##SUF, T, -x)                                                                 \
    DEFINE_UNARY(log_##SUF, T, LOG(x))                                                             \
    DEFINE_UNARY(sqrt_##SUF, T, SQRT(x))                                                           \
    DEFINE_UNARY(abs_##SUF, T, FABS(x))                                                            \
    DEFINE_UNARY(relu_##SUF, T, x > 0 ? x : (x != x ? x : 0))                                      \
    DEFINE_UNARY(sign_##SUF, T, x > 0 ? 1 : x < 0 ? -1 : x)                                        \
    DEFINE_UNARY(sin_##SUF, T, SIN(x))                                                             \
    DEFINE_UNARY(cos_##SUF, T, COS(x))

DEFINE_UNARY_FLOAT(f32, float, logf, sqrtf, fabsf, sinf, cosf)
DEFINE_UNARY_FLOAT(f64, double, log, sqrt, fabs, sin, cos)
/* float64 keeps libm (correctly rounded but for rare cases); float32 uses vmath.h (see there
 * for its accuracy), libm's expf/tanhf where vmath would be slower than them. */
DEFINE_UNARY(exp_f64, double, exp(x))
DEFINE_UNARY(tanh_f64, double, tanh(x))
DEFINE_UNARY(sigmoid_f64, double, x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)))
#if VMATH
DEFINE_UNARY(exp_f32, float, vm_exp_f32(x))
DEFINE_UNARY(tanh_f32, float, vm_tanh_f32(x))
DEFINE_UNARY(sigmoid_f32, float, vm_sigmoid_f32(x))
#else
DEFINE_UNARY(exp_f32, float, expf(x))
DEFINE_UNARY(tanh_f32, float, tanhf(x))
DEFINE_UNARY(sigmoid_f32, float, x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x)))
#endif
DEFINE_UNARY(neg_i64, int64_t, -x)
DEFINE_UNARY(abs_i64, int64_t, x < 0 ? -x : x)
DEFINE_UNARY(relu_i64, int64_t, x > 0 ? x : 0)
DEFINE_UNARY(sign_i64, int64_t, x > 0 ? 1 : x < 0 ? -1 : 0)

static const unary_kernel unary_kernels[DDL_NUM_UNARY_OPS][3] = {
    [DDL_OP_NEG] = {neg_f32, neg_f64, neg_i64},
    [DDL_OP_EXP] = {exp_f32, exp_f64, NULL},
    [DDL_OP_LOG] = {log_f32, log_f64, NULL},
    [DDL_OP_SQRT] = {sqrt_f32, sqrt_f64, NULL},
    [DDL_OP_ABS] = {abs_f32, abs_f64, abs_i64},
    [DDL_OP_TANH] = {tanh_f32, tanh_f64, NULL},
    [DDL_OP_SIGMOID] = {sigmoid_f32, sigmoid_f64, NULL},
    [DDL_OP_RELU] = {relu_f32, relu_f64, relu_i64},
    [DDL_OP_SIGN] = {sign_f32, sign_f64, sign_i64},
    [DDL_OP_SIN] = {sin_f32, sin_f64, NULL},
    [DDL_OP_COS] = {cos_f32, cos_f64, NULL},
};

static void run_unary(unary_kernel k, ddl_tensor *out, const ddl_tensor *a) {
    int nd = out->ndim;
    int64_t shape[DDL_MAX_DIMS], st[2][DDL_MAX_DIMS];
    int64_t es = (int64_t)ddl_dtype_size(out->dtype);
    if (ddl_tensor_numel(out) == 0) return;
    for (int d = 0; d < nd; d++) {
        shape[d] = out->shape[d];
        st[0][d] = out->strides[d] * es;
        st[1][d] = a->strides[d] * es;
    }
    nd = ddl_coalesce(nd, shape, 2, st);
    char *po = ddl_tensor_data(out);
    const char *pa = ddl_tensor_data(a);
    if (nd == 0) {
        k(po, pa, 1, es, es);
        return;
    }
    int64_t inner = shape[nd - 1], rows = ddl_tensor_numel(out) / inner;
    ddl_iter it;
    ddl_iter_init(&it, nd - 1, shape, 2, (const int64_t(*)[DDL_MAX_DIMS])st);
    for (int64_t r = 0; r < rows; r++, ddl_iter_next(&it))
        k(po + it.off[0], pa + it.off[1], inner, st[0][nd - 1], st[1][nd - 1]);
}

/* The dtype a unary op computes in: integer and bool inputs to float functions go to float32,
 * bool goes to int64 for the integer ones. */
static ddl_dtype unary_dtype(ddl_unary_op op, ddl_dtype dt) {
    if (ddl_dtype_is_float(dt)) return dt;
    return unary_kernels[op][2] ? DDL_INT64 : DDL_FLOAT32;
}

ddl_status ddl_unary(ddl_tensor **out, ddl_unary_op op, const ddl_tensor *a) {
    if ((unsigned)op >= DDL_NUM_UNARY_OPS) DDL_FAIL(DDL_E_VALUE, "unknown unary op %d", op);
    if (ddl_dtype_compute(a->dtype) != a->dtype) {
        /* a narrow storage dtype: compute in int64 / float32; cast back when the result kind
         * (integer or float) is a's */
        ddl_tensor *w, *r;
        DDL_TRY(ddl_tensor_to(&w, a, ddl_dtype_compute(a->dtype)));
        ddl_status st = ddl_unary(&r, op, w);
        ddl_tensor_release(w);
        if (st) return st;
        if (ddl_dtype_is_float(r->dtype) != ddl_dtype_is_float(a->dtype)) {
            *out = r;
            return DDL_OK;
        }
        st = ddl_tensor_to(out, r, a->dtype);
        ddl_tensor_release(r);
        return st;
    }
    ddl_dtype cdt = unary_dtype(op, a->dtype);
    const ddl_tensor *ua;
    ddl_tensor *ca, *o;
    DDL_TRY(with_dtype(&ua, &ca, a, cdt));
    ddl_status st = ddl_tensor_empty(&o, cdt, a->ndim, a->shape);
    if (!st) {
        run_unary(unary_kernels[op][kernel_slot(cdt)], o, ua);
        *out = o;
    }
    ddl_tensor_release(ca);
    return st;
}

ddl_status ddl_unary_(ddl_tensor *a, ddl_unary_op op) {
    if ((unsigned)op >= DDL_NUM_UNARY_OPS) DDL_FAIL(DDL_E_VALUE, "unknown unary op %d", op);
    if (ddl_dtype_compute(a->dtype) != a->dtype) {
        if (unary_dtype(op, ddl_dtype_compute(a->dtype)) != ddl_dtype_compute(a->dtype))
            DDL_FAIL(DDL_E_TYPE,
                     "%s_: result type %s can't be cast to the %s tensor updated in place",
                     unary_names[op], ddl_dtype_name(unary_dtype(op, a->dtype)),
                     ddl_dtype_name(a->dtype));
        if (ddl_tensor_has_internal_overlap(a))
            DDL_FAIL(DDL_E_VALUE,
                     "%s_: elements of the tensor updated in place share memory (an expanded "
                     "view); clone() it first",
                     unary_names[op]);
        ddl_tensor *r;
        DDL_TRY(ddl_unary(&r, op, a));
        ddl_status st = ddl_copy_(a, r);
        ddl_tensor_release(r);
        return st;
    }
    if (unary_dtype(op, a->dtype) != a->dtype)
        DDL_FAIL(DDL_E_TYPE, "%s_: result type %s can't be cast to the %s tensor updated in place",
                 unary_names[op], ddl_dtype_name(unary_dtype(op, a->dtype)),
                 ddl_dtype_name(a->dtype));
    if (ddl_tensor_has_internal_overlap(a))
        DDL_FAIL(DDL_E_VALUE,
                 "%s_: elements of the tensor updated in place share memory (an expanded "
                 "view); clone() it first",
                 unary_names[op]);
    run_unary(unary_kernels[op][kernel_slot(a->dtype)], a, a);
    return DDL_OK;
}

/* ---- clamp, where ------------------------------------------------------------------------ */

#define CLAMP_LOOP(T)                                                                              \
    do {                                                                                           \
        T *restrict p = (T *)ddl_tensor_data(o);                                                   \
        const T l = (T)lo, h = (T)hi;                                                              \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T x = p[i];                                                                            \
            if (has_lo && x < l) x = l;                                                            \
            if (has_hi && x > h) x = h;                                                            \
            p[i] = x;                                                                              \
        }                                                                                          \
    } while (0)

ddl_status ddl_clamp(ddl_tensor **out, const ddl_tensor *a, int has_lo, double lo, int has_hi,
                     double hi) {
    if (!has_lo && !has_hi) DDL_FAIL(DDL_E_VALUE, "clamp: at least one of min or max is needed");
    ddl_dtype rdt = a->dtype == DDL_BOOL ? DDL_INT64 : a->dtype, dt = ddl_dtype_compute(rdt);
    ddl_tensor *o;
    DDL_TRY(ddl_tensor_to(&o, a, dt));
    int64_t n = ddl_tensor_numel(o);
    if (dt == DDL_FLOAT32)
        CLAMP_LOOP(float);
    else if (dt == DDL_FLOAT64)
        CLAMP_LOOP(double);
    else
        CLAMP_LOOP(int64_t);
    if (rdt != dt) { /* a narrow storage dtype: cast back */
        ddl_tensor *r;
        ddl_status st = ddl_tensor_to(&r, o, rdt);
        ddl_tensor_release(o);
        DDL_TRY(st);
        o = r;
    }
    *out = o;
    return DDL_OK;
}

ddl_status ddl_where(ddl_tensor **out, const ddl_tensor *cond, const ddl_tensor *a,
                     const ddl_tensor *b) {
    int nab, nd;
    int64_t ab[DDL_MAX_DIMS], shape[DDL_MAX_DIMS]; /* separate: out must not alias an input */
    DDL_TRY(ddl_broadcast_shapes(&nab, ab, a->ndim, a->shape, b->ndim, b->shape, "where"));
    DDL_TRY(ddl_broadcast_shapes(&nd, shape, cond->ndim, cond->shape, nab, ab, "where"));
    ddl_dtype dt = ddl_promote(a->dtype, b->dtype);
    ddl_tensor *c = NULL, *x = NULL, *y = NULL, *o = NULL;
    /* materialize the three operands at the output shape and dtype, then one flat loop */
    ddl_status st = ddl_tensor_empty(&c, DDL_BOOL, nd, shape);
    if (!st) st = ddl_copy_(c, cond);
    if (!st) st = ddl_tensor_empty(&x, dt, nd, shape);
    if (!st) st = ddl_copy_(x, a);
    if (!st) st = ddl_tensor_empty(&y, dt, nd, shape);
    if (!st) st = ddl_copy_(y, b);
    if (!st) st = ddl_tensor_empty(&o, dt, nd, shape);
    if (!st) {
        int64_t n = ddl_tensor_numel(o);
        size_t es = ddl_dtype_size(dt);
        const uint8_t *pc = ddl_tensor_data(c);
        const char *px = ddl_tensor_data(x), *py = ddl_tensor_data(y);
        char *po = ddl_tensor_data(o);
        for (int64_t i = 0; i < n; i++)
            memcpy(po + (size_t)i * es, (pc[i] ? px : py) + (size_t)i * es, es);
        *out = o;
    }
    ddl_tensor_release(c);
    ddl_tensor_release(x);
    ddl_tensor_release(y);
    return st;
}
