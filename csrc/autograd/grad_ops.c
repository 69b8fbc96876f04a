/* grad_ops.c: the differentiable tensor math (ddl_ag_*: binary, unary, reductions, matmul,
 * clamp, where): each forward records a node whose backward sits right below it. Backward
 * functions use the plain ops (grad mode is off in backward). Shape ops are in grad_shape.c. */
#include "autograd/node.h"

/* dx = a > 0 ? dout : 0 as a vector select (clones for AVX-512, AVX2, baseline) */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),
               optimize("no-trapping-math"))) static void
relu_bwd_f32(float *restrict o, const float *restrict a, const float *restrict g, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = a[i] > 0.0f ? g[i] : 0.0f;
}

/* out = a op b and out = a op s, short for the chains of backward formulas */
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
            st = ddl_edge_grad(&dinp[0], (ddl_tensor *)dout, &n->in[0]);
        }
        if (!st && need[1]) {
            if (op == DDL_OP_ADD) {
                ddl_tensor_retain((ddl_tensor *)dout);
                t = (ddl_tensor *)dout;
            } else {
                st = ddl_unary(&t, DDL_OP_NEG, dout);
            }
            if (!st) st = ddl_edge_grad(&dinp[1], t, &n->in[1]);
        }
        return st;
    case DDL_OP_MUL:
        if (need[0] && !(st = bin(&t, DDL_OP_MUL, dout, b)))
            st = ddl_edge_grad(&dinp[0], t, &n->in[0]);
        if (!st && need[1] && !(st = bin(&u, DDL_OP_MUL, dout, a)))
            st = ddl_edge_grad(&dinp[1], u, &n->in[1]);
        return st;
    case DDL_OP_DIV: /* d/da = dout / b ; d/db = -dout * out / b */
        if (need[0] && !(st = bin(&t, DDL_OP_DIV, dout, b)))
            st = ddl_edge_grad(&dinp[0], t, &n->in[0]);
        if (!st && need[1]) {
            st = bin(&u, DDL_OP_MUL, dout, o);
            if (!st) st = bin(&v, DDL_OP_DIV, u, b);
            ddl_tensor_release(u);
            u = NULL;
            if (!st) st = ddl_unary(&u, DDL_OP_NEG, v);
            ddl_tensor_release(v);
            if (!st) st = ddl_edge_grad(&dinp[1], u, &n->in[1]);
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
            if (!st) st = ddl_edge_grad(&dinp[0], u, &n->in[0]);
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
            if (!st) st = ddl_edge_grad(&dinp[1], u, &n->in[1]);
        }
        return st;
    case DDL_OP_MAXIMUM:
    case DDL_OP_MINIMUM: /* the gradient goes to the operand that won (a on ties) */
        if (need[0]) {
            st = bin(&t, op == DDL_OP_MAXIMUM ? DDL_OP_GE : DDL_OP_LE, a, b); /* bool mask */
            if (!st) st = bin(&u, DDL_OP_MUL, dout, t);
            ddl_tensor_release(t);
            t = NULL;
            if (!st) st = ddl_edge_grad(&dinp[0], u, &n->in[0]);
        }
        if (!st && need[1]) { /* b wins strictly: no -0.0 from negating dout * (mask - 1) */
            st = bin(&t, op == DDL_OP_MAXIMUM ? DDL_OP_LT : DDL_OP_GT, a, b);
            if (!st) st = bin(&v, DDL_OP_MUL, dout, t);
            ddl_tensor_release(t);
            if (!st) st = ddl_edge_grad(&dinp[1], v, &n->in[1]);
        }
        return st;
    default: return ddl_fail(DDL_E_INTERNAL, "binary op %d has no backward", (int)op);
    }
}

ddl_status ddl_ag_binary(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a,
                         const ddl_tensor *b) {
    if (op >= DDL_OP_EQ) return ddl_binary(out, op, a, b); /* comparisons: bool, no gradient */
    ddl_tensor *o = NULL;
    DDL_TRY(ddl_binary(&o, op, a, b)); /* a valid op: names[op] exists */
    int operands = op != DDL_OP_ADD && op != DDL_OP_SUB,
        result = op == DDL_OP_DIV || op == DDL_OP_POW;
    return ddl_node_finish(
        out, DDL_OK, o,
        &(ddl_node_spec){.name = binary_node_names[op],
                         .backward = binary_backward,
                         .n_inputs = 2,
                         .in = {a, b},
                         .iargs = {op},
                         .save = {operands ? a : NULL, operands ? b : NULL, result ? o : NULL}});
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
    "NegBackward",  "ExpBackward",  "LogBackward",     "SqrtBackward",
    "AbsBackward",  "TanhBackward", "SigmoidBackward", "ReluBackward",
    "SignBackward", "SinBackward",  "CosBackward"};

static ddl_status unary_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                 const int *need) {
    (void)need;
    const ddl_tensor *a = n->saved[0], *o = n->saved[1];
    ddl_tensor *t = NULL, *u = NULL, *u2 = NULL;
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
    case DDL_OP_SIN: /* dout * cos(a) */
        st = ddl_unary(&u, DDL_OP_COS, a);
        if (!st) st = bin(&t, DDL_OP_MUL, dout, u);
        break;
    case DDL_OP_COS: /* -dout * sin(a) */
        st = ddl_unary(&u, DDL_OP_SIN, a);
        if (!st) st = bin(&t, DDL_OP_MUL, dout, u);
        if (!st) st = ddl_unary(&u2, DDL_OP_NEG, t);
        if (!st) {
            ddl_tensor_release(t);
            t = u2;
            u2 = NULL;
        }
        break;
    default: st = ddl_fail(DDL_E_INTERNAL, "unary op without backward");
    }
    ddl_tensor_release(u);
    ddl_tensor_release(u2);
    if (st) {
        ddl_tensor_release(t);
        return st;
    }
    return ddl_edge_grad(&dinp[0], t, &n->in[0]);
}

ddl_status ddl_ag_unary(ddl_tensor **out, ddl_unary_op op, const ddl_tensor *a) {
    ddl_tensor *o = NULL;
    DDL_TRY(ddl_unary(&o, op, a)); /* a valid op: names[op] exists */
    return ddl_node_finish(out, DDL_OK, o,
                           &(ddl_node_spec){.name = unary_node_names[op],
                                            .backward = unary_backward,
                                            .n_inputs = 1,
                                            .in = {a},
                                            .iargs = {op},
                                            .save = {a, o}});
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
    return ddl_edge_grad(&dinp[0], t, e);
}

static const char *reduce_node_names[DDL_NUM_REDUCE_OPS] = {
    "SumBackward", "MeanBackward", "MaxBackward", "MinBackward", NULL,
    NULL,          "VarBackward",  "StdBackward", "ProdBackward"};

ddl_status ddl_ag_reduce(ddl_tensor **out, ddl_reduce_op op, const ddl_tensor *a, int ndims,
                         const int *dims, int keepdim, int64_t correction) {
    ddl_tensor *o = NULL;
    DDL_TRY(ddl_reduce(&o, op, a, ndims, dims, keepdim, correction)); /* a valid op */
    if (!reduce_node_names[op]) { /* no gradient (argmax, argmin) */
        *out = o;
        return DDL_OK;
    }
    int64_t mask = 0, count = 1;
    for (int i = 0; i < ndims; i++) {
        int d;
        ddl_norm_dim(&d, dims[i], a->ndim, "reduce"); /* validated by ddl_reduce */
        mask |= (int64_t)1 << d;
    }
    if (ndims == 0) mask = ((int64_t)1 << a->ndim) - 1;
    for (int d = 0; d < a->ndim; d++)
        if ((mask >> d) & 1) count *= a->shape[d];
    return ddl_node_finish(out, DDL_OK, o,
                           &(ddl_node_spec){.name = reduce_node_names[op],
                                            .backward = reduce_backward,
                                            .n_inputs = 1,
                                            .in = {a},
                                            .iargs = {op, mask, correction, count},
                                            .save = {a, o}});
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
    ddl_status st = ddl_edge_grad(&t, u, &e);
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
    ddl_tensor *o = NULL;
    ddl_status st = ddl_matmul(&o, a, b);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "MatmulBackward",
                                            .backward = matmul_backward,
                                            .n_inputs = 2,
                                            .in = {a, b},
                                            .save = {a, b}});
}

/* ---- clamp, where ------------------------------------------------------------------------- */

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
    return ddl_edge_grad(&dinp[0], u, &n->in[0]);
}

ddl_status ddl_ag_clamp(ddl_tensor **out, const ddl_tensor *a, int has_lo, double lo, int has_hi,
                        double hi) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_clamp(&o, a, has_lo, lo, has_hi, hi);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "ClampBackward",
                                            .backward = clamp_backward,
                                            .n_inputs = 1,
                                            .in = {a},
                                            .iargs = {has_lo, has_hi},
                                            .dargs = {lo, hi},
                                            .save = {a}});
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
        if (!st) st = ddl_edge_grad(&dinp[i], g, &n->in[i]);
    }
    ddl_tensor_release(zero);
    return st;
}

ddl_status ddl_ag_where(ddl_tensor **out, const ddl_tensor *cond, const ddl_tensor *a,
                        const ddl_tensor *b) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_where(&o, cond, a, b);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "WhereBackward",
                                            .backward = where_backward,
                                            .n_inputs = 3,
                                            .in = {NULL, a, b},
                                            .save = {cond}});
}
