/* grad_ops.c: the differentiable ops (ddl_ag_*): each forward records a node whose backward
 * sits right below it. Backward functions use the plain ops (grad mode is off in backward). */
#include "autograd/node.h"

#include <math.h>
#include <stdlib.h>
/* dx = a > 0 ? dout : 0 as a vector select (clones for AVX-512, AVX2, baseline) */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),
               optimize("no-trapping-math"))) static void
relu_bwd_f32(float *restrict o, const float *restrict a, const float *restrict g, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = a[i] > 0.0f ? g[i] : 0.0f;
}

/* Finish d(input) for edge e: sum over broadcast dims, cast to the input's dtype. Steals g. */
static ddl_status grad_for(ddl_tensor **out, ddl_tensor *g, const ddl_edge *e) {
    ddl_tensor *s = NULL;
    ddl_status st = ddl_sum_to_shape(&s, g, e->ndim, e->shape);
    ddl_tensor_release(g);
    if (st) return st;
    if (s->dtype == e->dtype) {
        *out = s;
        return DDL_OK;
    }
    st = ddl_tensor_to(out, s, e->dtype);
    ddl_tensor_release(s);
    return st;
}

/* out = a op b, then release a and b (for chaining temporaries in backward formulas). */
static ddl_status bin(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a,
                      const ddl_tensor *b) {
    return ddl_binary(out, op, a, b);
}

static ddl_status bin_s(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a, double s) {
    return ddl_binary_scalar(out, op, a, s, 1, 0);
}

/* out = where(mask, 0, x), broadcast to both shapes, in x's dtype (NaN/inf in x masked off). */
static ddl_status where_zero(ddl_tensor **out, const ddl_tensor *mask, const ddl_tensor *x) {
    ddl_tensor *zero;
    DDL_TRY(ddl_tensor_full(&zero, x->dtype, 0, NULL, 0.0));
    ddl_status st = ddl_where(out, mask, zero, x);
    ddl_tensor_release(zero);
    return st;
}

/* ---- binary ------------------------------------------------------------------------------- */

static const char *binary_node_names[DDL_NUM_BINARY_OPS] = {
    "AddBackward", "SubBackward",     "MulBackward",    "DivBackward",
    "PowBackward", "MaximumBackward", "MinimumBackward"};

ddl_status ddl_ag_binary(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a,
                         const ddl_tensor *b);

static ddl_status binary_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    ddl_binary_op op = (ddl_binary_op)n->iargs[0];
    const ddl_tensor *a = n->saved[0], *b = n->saved[1], *o = n->saved[2];
    ddl_tensor *t = NULL, *u = NULL, *v = NULL;
    ddl_status st = DDL_OK;
    switch (op) {
    case DDL_OP_ADD:
    case DDL_OP_SUB:
        if (need[0]) {
            ddl_tensor_retain((ddl_tensor *)dout);
            st = grad_for(&dinp[0], (ddl_tensor *)dout, &n->in[0]);
        }
        if (!st && need[1]) {
            if (op == DDL_OP_ADD) {
                ddl_tensor_retain((ddl_tensor *)dout);
                t = (ddl_tensor *)dout;
            } else {
                st = ddl_unary(&t, DDL_OP_NEG, dout);
            }
            if (!st) st = grad_for(&dinp[1], t, &n->in[1]);
        }
        return st;
    case DDL_OP_MUL:
        if (need[0] && !(st = bin(&t, DDL_OP_MUL, dout, b))) st = grad_for(&dinp[0], t, &n->in[0]);
        if (!st && need[1] && !(st = bin(&u, DDL_OP_MUL, dout, a)))
            st = grad_for(&dinp[1], u, &n->in[1]);
        return st;
    case DDL_OP_DIV: /* d/da = dout / b ; d/db = -dout * out / b */
        if (need[0] && !(st = bin(&t, DDL_OP_DIV, dout, b))) st = grad_for(&dinp[0], t, &n->in[0]);
        if (!st && need[1]) {
            st = bin(&u, DDL_OP_MUL, dout, o);
            if (!st) st = bin(&v, DDL_OP_DIV, u, b);
            ddl_tensor_release(u);
            u = NULL;
            if (!st) st = ddl_unary(&u, DDL_OP_NEG, v);
            ddl_tensor_release(v);
            if (!st) st = grad_for(&dinp[1], u, &n->in[1]);
        }
        return st;
    case DDL_OP_POW: /* d/da = dout * b * a^(b-1), 0 where b == 0 (a^0 is constant, even at
                      * a = 0 where b * a^(b-1) would be 0 * inf) ;
                      * d/db = dout * out * log(a), 0 where a == 0 and b >= 0 (0 * -inf) */
        if (need[0]) {
            st = bin_s(&t, DDL_OP_SUB, b, 1.0);
            if (!st) st = bin(&u, DDL_OP_POW, a, t);
            ddl_tensor_release(t);
            t = NULL;
            if (!st) st = bin(&t, DDL_OP_MUL, u, b);
            ddl_tensor_release(u);
            u = NULL;
            double bv = 0.0; /* a nonzero scalar exponent (x ** 2) needs no mask */
            if (!st && (ddl_tensor_numel(b) != 1 || ddl_tensor_item(&bv, b, 0) || bv == 0.0)) {
                st = bin_s(&v, DDL_OP_EQ, b, 0.0);
                if (!st) st = where_zero(&u, v, t);
                ddl_tensor_release(v);
                ddl_tensor_release(t);
                v = NULL;
                t = u;
                u = NULL;
            }
            if (!st) st = bin(&u, DDL_OP_MUL, t, dout);
            ddl_tensor_release(t);
            t = NULL;
            if (!st) st = grad_for(&dinp[0], u, &n->in[0]);
            u = NULL;
        }
        if (!st && need[1]) {
            ddl_tensor *m0 = NULL, *m1 = NULL;
            st = ddl_unary(&t, DDL_OP_LOG, a);
            if (!st) st = bin(&u, DDL_OP_MUL, t, o);
            ddl_tensor_release(t);
            t = NULL;
            if (!st) st = bin_s(&m0, DDL_OP_EQ, a, 0.0);
            if (!st) st = bin_s(&m1, DDL_OP_GE, b, 0.0);
            if (!st) st = ddl_where(&v, m1, m0, m1); /* a == 0 and b >= 0, as bool */
            ddl_tensor_release(m0);
            ddl_tensor_release(m1);
            if (!st) st = where_zero(&t, v, u);
            ddl_tensor_release(u);
            ddl_tensor_release(v);
            u = NULL;
            if (!st) st = bin(&u, DDL_OP_MUL, t, dout);
            ddl_tensor_release(t);
            if (!st) st = grad_for(&dinp[1], u, &n->in[1]);
        }
        return st;
    case DDL_OP_MAXIMUM:
    case DDL_OP_MINIMUM: /* the gradient goes to the operand that won (a on ties) */
        if (need[0]) {
            st = bin(&t, op == DDL_OP_MAXIMUM ? DDL_OP_GE : DDL_OP_LE, a, b); /* bool mask */
            if (!st) st = bin(&u, DDL_OP_MUL, dout, t);
            ddl_tensor_release(t);
            t = NULL;
            if (!st) st = grad_for(&dinp[0], u, &n->in[0]);
        }
        if (!st && need[1]) { /* b wins strictly: no -0.0 from negating dout * (mask - 1) */
            st = bin(&t, op == DDL_OP_MAXIMUM ? DDL_OP_LT : DDL_OP_GT, a, b);
            if (!st) st = bin(&v, DDL_OP_MUL, dout, t);
            ddl_tensor_release(t);
            if (!st) st = grad_for(&dinp[1], v, &n->in[1]);
        }
        return st;
    default: return ddl_fail(DDL_E_INTERNAL, "binary op %d has no backward", (int)op);
    }
}

ddl_status ddl_ag_binary(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a,
                         const ddl_tensor *b) {
    DDL_TRY(ddl_binary(out, op, a, b));
    if (op >= DDL_OP_EQ) return DDL_OK; /* comparisons: bool, no gradient */
    ddl_node *n;
    const ddl_tensor *ins[2] = {a, b};
    ddl_status st = ddl_node_record(&n, *out, binary_node_names[op], binary_backward, 2, ins);
    if (!st && n) {
        n->iargs[0] = op;
        if (op != DDL_OP_ADD && op != DDL_OP_SUB) {
            st = ddl_node_save(n, 0, a);
            if (!st) st = ddl_node_save(n, 1, b);
            if (!st && (op == DDL_OP_DIV || op == DDL_OP_POW)) st = ddl_node_save(n, 2, *out);
        }
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

ddl_status ddl_ag_binary_scalar(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a, double s,
                                int scalar_is_float, int reverse) {
    if (!a->requires_grad || ddl_grad_mode_off)
        return ddl_binary_scalar(out, op, a, s, scalar_is_float, reverse);
    ddl_tensor *t;
    DDL_TRY(ddl_tensor_full(&t, a->dtype, 0, NULL, s)); /* a requires grad: it is float */
    ddl_status st = reverse ? ddl_ag_binary(out, op, t, a) : ddl_ag_binary(out, op, a, t);
    ddl_tensor_release(t);
    return st;
}

/* ---- unary -------------------------------------------------------------------------------- */

static const char *unary_node_names[DDL_NUM_UNARY_OPS] = {
    "NegBackward",  "ExpBackward",     "LogBackward",  "SqrtBackward", "AbsBackward",
    "TanhBackward", "SigmoidBackward", "ReluBackward", "SignBackward"};

static ddl_status unary_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                 const int *need) {
    (void)need;
    const ddl_tensor *a = n->saved[0], *o = n->saved[1];
    ddl_tensor *t = NULL, *u = NULL;
    ddl_status st;
    switch ((ddl_unary_op)n->iargs[0]) {
    case DDL_OP_NEG: st = ddl_unary(&t, DDL_OP_NEG, dout); break;
    case DDL_OP_EXP: st = bin(&t, DDL_OP_MUL, dout, o); break;
    case DDL_OP_LOG: st = bin(&t, DDL_OP_DIV, dout, a); break;
    case DDL_OP_SQRT: /* dout * 0.5 / out */
        st = bin(&u, DDL_OP_DIV, dout, o);
        if (!st) st = bin_s(&t, DDL_OP_MUL, u, 0.5);
        break;
    case DDL_OP_ABS:
        st = ddl_unary(&u, DDL_OP_SIGN, a);
        if (!st) st = bin(&t, DDL_OP_MUL, dout, u);
        break;
    case DDL_OP_TANH: /* dout * (1 - out^2) */
        st = bin(&u, DDL_OP_MUL, o, o);
        if (!st) {
            ddl_tensor *w;
            st = ddl_binary_scalar(&w, DDL_OP_SUB, u, 1.0, 1, 1);
            if (!st) st = bin(&t, DDL_OP_MUL, dout, w);
            ddl_tensor_release(w);
        }
        break;
    case DDL_OP_SIGMOID: /* dout * out * (1 - out) */
        st = ddl_binary_scalar(&u, DDL_OP_SUB, o, 1.0, 1, 1);
        if (!st) {
            ddl_tensor *w;
            st = bin(&w, DDL_OP_MUL, u, o);
            if (!st) st = bin(&t, DDL_OP_MUL, dout, w);
            ddl_tensor_release(w);
        }
        break;
    case DDL_OP_RELU:
        if (a->dtype == DDL_FLOAT32 && dout->dtype == DDL_FLOAT32 && ddl_tensor_is_contiguous(a) &&
            ddl_tensor_is_contiguous(dout) && ddl_tensor_numel(a) == ddl_tensor_numel(dout)) {
            st = ddl_tensor_empty(&t, DDL_FLOAT32, a->ndim, a->shape);
            if (!st)
                relu_bwd_f32((float *)ddl_tensor_data(t), (const float *)ddl_tensor_data(a),
                             (const float *)ddl_tensor_data(dout), ddl_tensor_numel(a));
            break;
        }
        st = ddl_binary_scalar(&u, DDL_OP_GT, a, 0.0, 1, 0);
        if (!st) st = bin(&t, DDL_OP_MUL, dout, u);
        break;
    case DDL_OP_SIGN: st = bin_s(&t, DDL_OP_MUL, dout, 0.0); break;
    default: st = ddl_fail(DDL_E_INTERNAL, "unary op without backward");
    }
    ddl_tensor_release(u);
    if (st) return st;
    return grad_for(&dinp[0], t, &n->in[0]);
}

ddl_status ddl_ag_unary(ddl_tensor **out, ddl_unary_op op, const ddl_tensor *a) {
    DDL_TRY(ddl_unary(out, op, a));
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, unary_node_names[op], unary_backward, 1, &a);
    if (!st && n) {
        n->iargs[0] = op;
        st = ddl_node_save(n, 0, a);
        if (!st) st = ddl_node_save(n, 1, *out);
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

/* ---- reductions --------------------------------------------------------------------------- */

/* dout viewed with the reduced dims kept (size 1), from iargs: [op, mask of reduced dims]. */
static ddl_status keepdim_view(ddl_tensor **out, const ddl_tensor *dout, const ddl_edge *e,
                               int64_t mask) {
    int64_t shape[DDL_MAX_DIMS];
    for (int d = 0; d < e->ndim; d++) shape[d] = (mask >> d) & 1 ? 1 : e->shape[d];
    return ddl_tensor_reshape(out, dout, e->ndim, shape);
}

static ddl_status reduce_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    (void)need;
    ddl_reduce_op op = (ddl_reduce_op)n->iargs[0];
    int64_t mask = n->iargs[1], correction = n->iargs[2], count = n->iargs[3];
    const ddl_edge *e = &n->in[0];
    const ddl_tensor *a = n->saved[0], *o = n->saved[1];
    ddl_tensor *g = NULL, *t = NULL, *u = NULL, *ok = NULL;
    ddl_status st = keepdim_view(&g, dout, e, mask);
    if (st) return st;
    switch (op) {
    case DDL_REDUCE_SUM: st = ddl_tensor_expand(&t, g, e->ndim, e->shape); break;
    case DDL_REDUCE_MEAN:
        st = bin_s(&u, DDL_OP_DIV, g, (double)count);
        if (!st) st = ddl_tensor_expand(&t, u, e->ndim, e->shape);
        break;
    case DDL_REDUCE_MAX:
    case DDL_REDUCE_MIN: { /* split evenly among the elements equal to the extreme */
        st = keepdim_view(&ok, o, e, mask);
        ddl_tensor *m = NULL, *cnt = NULL;
        int dims[DDL_MAX_DIMS], nd = 0;
        for (int d = 0; d < e->ndim; d++)
            if ((mask >> d) & 1) dims[nd++] = d;
        if (!st) st = bin(&m, DDL_OP_EQ, a, ok);
        if (!st) st = ddl_reduce(&cnt, DDL_REDUCE_SUM, m, nd, dims, 1, 0);
        if (!st) st = bin(&u, DDL_OP_DIV, g, cnt);
        if (!st) st = bin(&t, DDL_OP_MUL, m, u);
        ddl_tensor_release(m);
        ddl_tensor_release(cnt);
        break;
    }
    case DDL_REDUCE_VAR:
    case DDL_REDUCE_STD: { /* var: dout * 2 (a - mean) / (N - c); std: that / (2 std) */
        int dims[DDL_MAX_DIMS], nd = 0;
        for (int d = 0; d < e->ndim; d++)
            if ((mask >> d) & 1) dims[nd++] = d;
        ddl_tensor *mean = NULL, *dev = NULL;
        st = ddl_reduce(&mean, DDL_REDUCE_MEAN, a, nd, dims, 1, 0);
        if (!st) st = bin(&dev, DDL_OP_SUB, a, mean);
        double k = (op == DDL_REDUCE_VAR ? 2.0 : 1.0) / (double)(count - correction);
        if (!st) st = bin_s(&u, DDL_OP_MUL, g, k);
        if (!st && op == DDL_REDUCE_STD) {
            ddl_tensor *u2;
            st = keepdim_view(&ok, o, e, mask);
            if (!st && !(st = bin(&u2, DDL_OP_DIV, u, ok))) {
                ddl_tensor_release(u);
                u = u2;
            }
        }
        if (!st) st = bin(&t, DDL_OP_MUL, dev, u);
        ddl_tensor_release(mean);
        ddl_tensor_release(dev);
        break;
    }
    case DDL_REDUCE_PROD: { /* d/da_i = dout * (product of the others), zeros included: with z
                          * zeros in the group and p1 the product of its nonzero elements,
                          * z == 0: p1 / a_i ; z == 1: p1 at the zero, 0 elsewhere ; z > 1: 0 */
        int dims[DDL_MAX_DIMS], nd = 0;
        for (int d = 0; d < e->ndim; d++)
            if ((mask >> d) & 1) dims[nd++] = d;
        ddl_tensor *z = NULL, *a1 = NULL, *p1 = NULL, *cnt = NULL, *c = NULL, *x = NULL, *y = NULL;
        st = bin_s(&z, DDL_OP_EQ, a, 0.0);        /* bool */
        if (!st) st = bin(&a1, DDL_OP_ADD, a, z); /* zeros -> 1 */
        if (!st) st = ddl_reduce(&p1, DDL_REDUCE_PROD, a1, nd, dims, 1, 0);
        if (!st) st = ddl_reduce(&cnt, DDL_REDUCE_SUM, z, nd, dims, 1, 0);
        if (!st) st = bin_s(&c, DDL_OP_EQ, cnt, 0.0);
        if (!st) st = bin(&x, DDL_OP_DIV, p1, a1);
        if (!st) st = bin(&u, DDL_OP_MUL, x, c); /* no zeros */
        ddl_tensor_release(c);
        ddl_tensor_release(x);
        c = x = NULL;
        if (!st) st = bin_s(&c, DDL_OP_EQ, cnt, 1.0);
        if (!st) st = bin(&x, DDL_OP_MUL, p1, c);
        if (!st) st = bin(&y, DDL_OP_MUL, x, z); /* one zero */
        ddl_tensor_release(x);
        x = NULL;
        if (!st) st = bin(&x, DDL_OP_ADD, u, y);
        if (!st) st = bin(&t, DDL_OP_MUL, x, g);
        ddl_tensor_release(z);
        ddl_tensor_release(a1);
        ddl_tensor_release(p1);
        ddl_tensor_release(cnt);
        ddl_tensor_release(c);
        ddl_tensor_release(x);
        ddl_tensor_release(y);
        break;
    }
    default: st = ddl_fail(DDL_E_INTERNAL, "reduction without backward");
    }
    ddl_tensor_release(g);
    ddl_tensor_release(u);
    ddl_tensor_release(ok);
    if (st) return st;
    return grad_for(&dinp[0], t, e);
}

static const char *reduce_node_names[DDL_NUM_REDUCE_OPS] = {
    "SumBackward", "MeanBackward", "MaxBackward", "MinBackward", NULL,
    NULL,          "VarBackward",  "StdBackward", "ProdBackward"};

ddl_status ddl_ag_reduce(ddl_tensor **out, ddl_reduce_op op, const ddl_tensor *a, int ndims,
                         const int *dims, int keepdim, int64_t correction) {
    DDL_TRY(ddl_reduce(out, op, a, ndims, dims, keepdim, correction));
    if (!reduce_node_names[op]) return DDL_OK;
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, reduce_node_names[op], reduce_backward, 1, &a);
    if (!st && n) {
        int64_t mask = 0, count = 1;
        for (int i = 0; i < ndims; i++) {
            int d;
            ddl_norm_dim(&d, dims[i], a->ndim, "reduce"); /* validated by ddl_reduce */
            mask |= (int64_t)1 << d;
        }
        if (ndims == 0) mask = ((int64_t)1 << a->ndim) - 1;
        for (int d = 0; d < a->ndim; d++)
            if ((mask >> d) & 1) count *= a->shape[d];
        n->iargs[0] = op;
        n->iargs[1] = mask;
        n->iargs[2] = correction;
        n->iargs[3] = count;
        st = ddl_node_save(n, 0, a);
        if (!st) st = ddl_node_save(n, 1, *out);
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

/* ---- matmul ------------------------------------------------------------------------------- */

/* x viewed as at least 2-D: (k) -> (1, k) when left, (k, 1) when right. */
static ddl_status as_matrix(ddl_tensor **out, const ddl_tensor *x, int left) {
    if (x->ndim >= 2) {
        ddl_tensor_retain((ddl_tensor *)x);
        *out = (ddl_tensor *)x;
        return DDL_OK;
    }
    return ddl_tensor_unsqueeze(out, x, left ? 0 : 1);
}

/* d(operand) = lhs @ rhs (one side transposed by the caller), summed over the broadcast
 * batch dims to the operand's matrix shape `m`, then shaped as the original operand `x0`. */
static ddl_status matmul_operand_grad(ddl_tensor **out, const ddl_tensor *lhs,
                                      const ddl_tensor *rhs, const ddl_edge *edge,
                                      const ddl_tensor *m, const ddl_tensor *x0) {
    ddl_tensor *u = NULL, *t = NULL;
    DDL_TRY(ddl_matmul(&u, lhs, rhs));
    ddl_edge e = *edge;
    e.ndim = m->ndim;
    memcpy(e.shape, m->shape, sizeof e.shape);
    ddl_status st = grad_for(&t, u, &e);
    if (!st) st = ddl_tensor_reshape(out, t, x0->ndim, x0->shape);
    ddl_tensor_release(t);
    return st;
}

static ddl_status matmul_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    const ddl_tensor *a0 = n->saved[0], *b0 = n->saved[1];
    ddl_tensor *a = NULL, *b = NULL, *g = NULL, *t = NULL;
    ddl_status st = as_matrix(&a, a0, 1);
    if (!st) st = as_matrix(&b, b0, 0);
    if (!st) { /* dout with the dims matmul dropped for 1-D operands put back */
        ddl_tensor *g1 = NULL;
        st = a0->ndim == 1
                 ? ddl_tensor_unsqueeze(&g1, dout, dout->ndim - (b0->ndim == 1 ? 0 : 1))
                 : (ddl_tensor_retain((ddl_tensor *)dout), g1 = (ddl_tensor *)dout, DDL_OK);
        if (!st && b0->ndim == 1)
            st = ddl_tensor_unsqueeze(&g, g1, g1->ndim);
        else if (!st) {
            g = g1;
            g1 = NULL;
        }
        ddl_tensor_release(g1);
    }
    if (!st && need[0]) { /* da = g @ b^T */
        st = ddl_tensor_transpose(&t, b, -1, -2);
        if (!st) st = matmul_operand_grad(&dinp[0], g, t, &n->in[0], a, a0);
        ddl_tensor_release(t);
        t = NULL;
    }
    if (!st && need[1]) { /* db = a^T @ g */
        st = ddl_tensor_transpose(&t, a, -1, -2);
        if (!st) st = matmul_operand_grad(&dinp[1], t, g, &n->in[1], b, b0);
        ddl_tensor_release(t);
    }
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_matmul(ddl_tensor **out, const ddl_tensor *a, const ddl_tensor *b) {
    DDL_TRY(ddl_matmul(out, a, b));
    ddl_node *n;
    const ddl_tensor *ins[2] = {a, b};
    ddl_status st = ddl_node_record(&n, *out, "MatmulBackward", matmul_backward, 2, ins);
    if (!st && n) {
        st = ddl_node_save(n, 0, a);
        if (!st) st = ddl_node_save(n, 1, b);
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

/* ---- shape ops ---------------------------------------------------------------------------- */

static ddl_status reshape_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                   const int *need) {
    (void)need;
    const ddl_edge *e = &n->in[0];
    if (n->iargs[0] == DDL_SHAPE_EXPAND) {
        ddl_tensor_retain((ddl_tensor *)dout);
        return grad_for(&dinp[0], (ddl_tensor *)dout, e);
    }
    return ddl_tensor_reshape(&dinp[0], dout, e->ndim, e->shape);
}

ddl_status ddl_ag_reshape(ddl_tensor **out, ddl_shape_op op, const ddl_tensor *t, int ndim,
                          const int64_t *shape) {
    switch (op) {
    case DDL_SHAPE_VIEW: DDL_TRY(ddl_tensor_view(out, t, ndim, shape)); break;
    case DDL_SHAPE_RESHAPE: DDL_TRY(ddl_tensor_reshape(out, t, ndim, shape)); break;
    case DDL_SHAPE_EXPAND: DDL_TRY(ddl_tensor_expand(out, t, ndim, shape)); break;
    default:
        DDL_FAIL(DDL_E_VALUE, "reshape: unknown shape op %d (DDL_SHAPE_VIEW, _RESHAPE, _EXPAND)",
                 (int)op);
    }
    ddl_node *n;
    ddl_status st =
        ddl_node_record(&n, *out, op == DDL_SHAPE_EXPAND ? "ExpandBackward" : "ViewBackward",
                        reshape_backward, 1, &t);
    if (!st && n) n->iargs[0] = op;
    if (st) ddl_tensor_release(*out);
    return st;
}

static ddl_status permute_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                   const int *need) {
    (void)need;
    int inv[DDL_MAX_DIMS];
    for (int i = 0; i < n->in[0].ndim; i++) inv[n->iargs[i]] = i;
    return ddl_tensor_permute(&dinp[0], dout, inv);
}

ddl_status ddl_ag_permute(ddl_tensor **out, const ddl_tensor *t, const int *dims) {
    DDL_TRY(ddl_tensor_permute(out, t, dims));
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, "PermuteBackward", permute_backward, 1, &t);
    if (!st && n)
        for (int i = 0; i < t->ndim; i++) {
            int d;
            ddl_norm_dim(&d, dims[i], t->ndim, "permute");
            n->iargs[i] = d;
        }
    if (st) ddl_tensor_release(*out);
    return st;
}

static ddl_status to_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                              const int *need) {
    (void)need;
    return ddl_tensor_to(&dinp[0], dout, n->in[0].dtype);
}

ddl_status ddl_ag_to(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt) {
    DDL_TRY(ddl_tensor_to(out, t, dt));
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, "ToCopyBackward", to_backward, 1, &t);
    if (st) ddl_tensor_release(*out);
    return st;
}

/* slice (iargs[0] = 's': dim, start, stop, step) and select ('i': dim, index): the gradient
 * is zeros of the input's shape with dout written through the same view. */
static ddl_status index_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                 const int *need) {
    (void)need;
    const ddl_edge *e = &n->in[0];
    ddl_tensor *z, *v = NULL;
    DDL_TRY(ddl_tensor_zeros(&z, e->dtype, e->ndim, e->shape));
    ddl_status st = n->iargs[0] == 's' ? ddl_tensor_slice(&v, z, (int)n->iargs[1], n->iargs[2],
                                                          n->iargs[3], n->iargs[4])
                                       : ddl_tensor_select(&v, z, (int)n->iargs[1], n->iargs[2]);
    if (!st) st = ddl_copy_(v, dout);
    ddl_tensor_release(v);
    if (st)
        ddl_tensor_release(z);
    else
        dinp[0] = z;
    return st;
}

ddl_status ddl_ag_slice(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t start, int64_t stop,
                        int64_t step) {
    DDL_TRY(ddl_tensor_slice(out, t, dim, start, stop, step));
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, "SliceBackward", index_backward, 1, &t);
    if (!st && n) {
        n->iargs[0] = 's';
        n->iargs[1] = dim;
        n->iargs[2] = start;
        n->iargs[3] = stop;
        n->iargs[4] = step;
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

ddl_status ddl_ag_select(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t index) {
    DDL_TRY(ddl_tensor_select(out, t, dim, index));
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, "SelectBackward", index_backward, 1, &t);
    if (!st && n) {
        n->iargs[0] = 'i';
        n->iargs[1] = dim;
        n->iargs[2] = index;
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

/* cat: the gradient of each input is its slice of dout along dim (iargs[0] = dim). */
static ddl_status cat_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                               const int *need) {
    int dim = (int)n->iargs[0];
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        int64_t len = n->in[i].shape[dim];
        if (need[i]) {
            ddl_tensor *v;
            DDL_TRY(ddl_tensor_slice(&v, dout, dim, at, at + len, 1));
            ddl_status st = ddl_tensor_to(&dinp[i], v, n->in[i].dtype);
            ddl_tensor_release(v);
            DDL_TRY(st);
        }
        at += len;
    }
    return DDL_OK;
}

static ddl_status cat_small(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    DDL_TRY(ddl_cat(out, n, ts, dim));
    ddl_node *node;
    ddl_status st = ddl_node_record(&node, *out, "CatBackward", cat_backward, n, ts);
    if (!st && node) ddl_norm_dim(&dim, dim, ts[0]->ndim, "cat"), node->iargs[0] = dim;
    if (st) ddl_tensor_release(*out);
    return st;
}

ddl_status ddl_ag_cat(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    int any = 0;
    for (int i = 0; i < n; i++) any |= ts[i]->requires_grad;
    if (!any || ddl_grad_mode_off || n <= DDL_NODE_MAX_INPUTS) return cat_small(out, n, ts, dim);
    /* a node takes at most DDL_NODE_MAX_INPUTS inputs: join groups, then join the groups */
    int groups = (n + DDL_NODE_MAX_INPUTS - 1) / DDL_NODE_MAX_INPUTS;
    ddl_tensor **parts = calloc((size_t)groups, sizeof *parts);
    if (!parts) DDL_FAIL(DDL_E_NOMEM, "cat: out of memory");
    ddl_status st = DDL_OK;
    for (int g = 0; g < groups && !st; g++) {
        int k = n - g * DDL_NODE_MAX_INPUTS;
        if (k > DDL_NODE_MAX_INPUTS) k = DDL_NODE_MAX_INPUTS;
        st = cat_small(&parts[g], k, ts + g * DDL_NODE_MAX_INPUTS, dim);
    }
    if (!st) st = ddl_ag_cat(out, groups, (const ddl_tensor *const *)parts, dim);
    for (int g = 0; g < groups; g++) ddl_tensor_release(parts[g]);
    free(parts);
    return st;
}

ddl_status ddl_ag_stack(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    int d;
    DDL_TRY(ddl_stack_check(&d, n, ts, dim));
    ddl_tensor **u = calloc((size_t)n, sizeof *u);
    if (!u) DDL_FAIL(DDL_E_NOMEM, "stack: out of memory");
    ddl_status st = DDL_OK;
    int64_t shape[DDL_MAX_DIMS];
    for (int i = 0; i < n && !st; i++) {
        const ddl_tensor *t = ts[i];
        for (int k = 0, j = 0; k <= t->ndim; k++) shape[k] = k == d ? 1 : t->shape[j++];
        st = ddl_ag_reshape(&u[i], DDL_SHAPE_VIEW, t, t->ndim + 1, shape);
    }
    if (!st) st = ddl_ag_cat(out, n, (const ddl_tensor *const *)u, d);
    for (int i = 0; i < n; i++) ddl_tensor_release(u[i]);
    free(u);
    return st;
}

/* ---- copies, clamp, where --------------------------------------------------------------- */

ddl_status ddl_ag_contiguous(ddl_tensor **out, const ddl_tensor *t, int force_copy) {
    if (!force_copy && ddl_tensor_is_contiguous(t)) {
        ddl_tensor_retain((ddl_tensor *)t);
        *out = (ddl_tensor *)t;
        return DDL_OK;
    }
    return ddl_ag_to(out, t, t->dtype); /* a copy whose backward passes dout through */
}

/* the gradient flows where lo <= a <= hi (inclusive, as PyTorch) */
static ddl_status clamp_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                 const int *need) {
    (void)need;
    const ddl_tensor *a = n->saved[0];
    ddl_tensor *m = NULL, *k = NULL, *t = NULL, *u = NULL;
    ddl_status st = ddl_tensor_full(&m, DDL_BOOL, a->ndim, a->shape, 1.0);
    if (!st && n->iargs[0]) {
        st = ddl_binary_scalar(&k, DDL_OP_GE, a, n->dargs[0], 1, 0);
        if (!st) st = ddl_binary(&t, DDL_OP_MUL, m, k);
        ddl_tensor_release(m);
        ddl_tensor_release(k);
        m = t, k = t = NULL;
    }
    if (!st && n->iargs[1]) {
        st = ddl_binary_scalar(&k, DDL_OP_LE, a, n->dargs[1], 1, 0);
        if (!st) st = ddl_binary(&t, DDL_OP_MUL, m, k);
        ddl_tensor_release(m);
        ddl_tensor_release(k);
        m = t, t = NULL;
    }
    if (!st) st = ddl_binary(&u, DDL_OP_MUL, dout, m);
    ddl_tensor_release(m);
    if (st) return st;
    return grad_for(&dinp[0], u, &n->in[0]);
}

ddl_status ddl_ag_clamp(ddl_tensor **out, const ddl_tensor *a, int has_lo, double lo, int has_hi,
                        double hi) {
    DDL_TRY(ddl_clamp(out, a, has_lo, lo, has_hi, hi));
    ddl_node *n;
    ddl_status st = ddl_node_record(&n, *out, "ClampBackward", clamp_backward, 1, &a);
    if (!st && n) {
        n->iargs[0] = has_lo, n->iargs[1] = has_hi;
        n->dargs[0] = lo, n->dargs[1] = hi;
        st = ddl_node_save(n, 0, a);
    }
    if (st) ddl_tensor_release(*out);
    return st;
}

/* d a = where(cond, dout, 0), d b = where(cond, 0, dout), each summed to its input's shape */
static ddl_status where_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                 const int *need) {
    const ddl_tensor *cond = n->saved[0];
    ddl_tensor *zero;
    DDL_TRY(ddl_tensor_zeros(&zero, dout->dtype, 0, NULL));
    ddl_status st = DDL_OK;
    for (int i = 1; i <= 2 && !st; i++) {
        if (!need[i]) continue;
        ddl_tensor *g = NULL;
        st = i == 1 ? ddl_where(&g, cond, dout, zero) : ddl_where(&g, cond, zero, dout);
        if (!st) st = grad_for(&dinp[i], g, &n->in[i]);
    }
    ddl_tensor_release(zero);
    return st;
}

ddl_status ddl_ag_where(ddl_tensor **out, const ddl_tensor *cond, const ddl_tensor *a,
                        const ddl_tensor *b) {
    DDL_TRY(ddl_where(out, cond, a, b));
    ddl_node *n;
    const ddl_tensor *ins[3] = {NULL, a, b};
    ddl_status st = ddl_node_record(&n, *out, "WhereBackward", where_backward, 3, ins);
    if (!st && n) st = ddl_node_save(n, 0, cond);
    if (st) ddl_tensor_release(*out);
    return st;
}
