/* grad_attention.c: differentiable scaled dot-product attention over the fused (or, for
 * tests and benchmarks, the naive) kernels of nn_attention.c; the mask is a constant.
 * Inputs are read in their own layout when the feature dim is unit-stride (a (B, L, H, D)
 * projection viewed as (B, H, L, D) needs no copy); the output and the gradients then take
 * that (B, L, H, .) layout too, viewed as (B, H, L, .), as PyTorch's CPU flash kernel does, so
 * the head merge after it (transpose + reshape) is a view. */
#include "autograd/grad_layer.h"
#include "ddl/autograd.h"
#include "ddl/nn_attention.h"

#define D64(t) ((double *)ddl_tensor_data(t))

/* iargs: B H L S D E causal naive mstride[4] ; dargs[0] scale ;
 * saved: q k v out lse mask */
static void dims_of(ddl_sdpa_dims *d, const ddl_node *n) {
    const int64_t *a = n->iargs;
    *d = (ddl_sdpa_dims){.B = a[0],
                         .H = a[1],
                         .L = a[2],
                         .S = a[3],
                         .D = a[4],
                         .E = a[5],
                         .scale = n->dargs[0],
                         .causal = (int)a[6]};
    for (int i = 0; i < 4; i++) d->mstride[i] = a[8 + i];
}

/* The (b, h, row) strides of a 4-d tensor whose last dim is unit-stride, or 0 if it is
 * not such a layout (then the caller makes it contiguous). Dims of size 1 may carry any
 * stride: they are given harmless ones. */
static int layout_of(ddl_sdpa_strides *s, const ddl_tensor *t) {
    const int64_t *n = t->shape, *st = t->strides;
    if (n[3] > 1 && st[3] != 1) return 0;
    *s = (ddl_sdpa_strides){.b = n[0] > 1 ? st[0] : 0,
                            .h = n[1] > 1 ? st[1] : 0,
                            .r = n[2] > 1 ? st[2] : (n[3] > 0 ? n[3] : 1)};
    if (s->b < 0 || s->h < 0 || s->r < (n[3] > 0 ? n[3] : 1) || s->r > 2147483647) return 0;
    if (s->b == 0 && s->h == 0 && s->r == 0) s->r = 1; /* never the "contiguous" marker */
    return 1;
}

/* t itself (retained) when the kernels can read its layout, else a contiguous copy. */
static ddl_status readable(ddl_tensor **out, ddl_sdpa_strides *s, const ddl_tensor *t) {
    if (layout_of(s, t)) {
        *out = ddl_tensor_retain((ddl_tensor *)t);
        return DDL_OK;
    }
    DDL_TRY(ddl_tensor_contiguous(out, t));
    layout_of(s, *out);
    return DDL_OK;
}

/* heads inner to rows (b, l, h, .) in memory: the layout new buffers of this call take */
static int heads_inner(const ddl_sdpa_strides *s, const ddl_tensor *t) {
    return t->shape[1] > 1 && t->shape[2] > 1 && s->h < s->r;
}

/* A new (B, H, rows, F) tensor (zeroed or not): stored as (B, rows, H, F) when blhf. */
static ddl_status new_bhrf(ddl_tensor **out, ddl_dtype dt, const int64_t *shape, int blhf,
                           int zero) {
    if (!blhf) return (zero ? ddl_tensor_zeros : ddl_tensor_empty)(out, dt, 4, shape);
    const int64_t mem[4] = {shape[0], shape[2], shape[1], shape[3]};
    ddl_tensor *m = NULL;
    DDL_TRY((zero ? ddl_tensor_zeros : ddl_tensor_empty)(&m, dt, 4, mem));
    ddl_status st = ddl_tensor_transpose(out, m, 1, 2);
    ddl_tensor_release(m);
    return st;
}

static ddl_status sdpa_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                const int *need) {
    ddl_sdpa_dims d;
    dims_of(&d, n);
    ddl_tensor *g = NULL, *const *s = n->saved;
    ddl_status st = readable(&g, &d.dout, dout);
    layout_of(&d.q, s[0]), layout_of(&d.k, s[1]), layout_of(&d.v, s[2]), layout_of(&d.out, s[3]);
    ddl_sdpa_strides *gl[3] = {&d.dq, &d.dk, &d.dv}, *il[3] = {&d.q, &d.k, &d.v};
    for (int i = 0; i < 3 && !st; i++)
        if (need[i]) {
            st = new_bhrf(&dinp[i], n->in[i].dtype, n->in[i].shape, heads_inner(il[i], s[i]), 1);
            if (!st) layout_of(gl[i], dinp[i]);
        }
    const void *mask = s[5] ? ddl_tensor_data(s[5]) : NULL;
    if (!st) {
        if (s[0]->dtype == DDL_FLOAT64)
            st = ddl_sdpa_backward_f64(need[0] ? D64(dinp[0]) : NULL, need[1] ? D64(dinp[1]) : NULL,
                                       need[2] ? D64(dinp[2]) : NULL, D64(g), D64(s[3]), D64(s[4]),
                                       D64(s[0]), D64(s[1]), D64(s[2]), mask, &d);
        else
            st = (n->iargs[7] ? ddl_sdpa_backward_naive_f32 : ddl_sdpa_backward_f32)(
                need[0] ? F(dinp[0]) : NULL, need[1] ? F(dinp[1]) : NULL,
                need[2] ? F(dinp[2]) : NULL, F(g), F(s[3]), F(s[4]), F(s[0]), F(s[1]), F(s[2]),
                mask, &d);
    }
    ddl_tensor_release(g);
    return st;
}

static ddl_status same_float(const ddl_tensor *t, ddl_dtype dt, const char *name) {
    if (t->dtype != dt)
        DDL_FAIL(DDL_E_TYPE, "scaled_dot_product_attention: %s is %s but query is %s", name,
                 ddl_dtype_name(t->dtype), ddl_dtype_name(dt));
    return DDL_OK;
}

ddl_status ddl_ag_sdpa(ddl_tensor **out, const ddl_tensor *q, const ddl_tensor *k,
                       const ddl_tensor *v, const ddl_tensor *mask, double scale, int causal,
                       int naive) {
    const char *who = "scaled_dot_product_attention";
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF], b3[DDL_SHAPE_BUF];
    ddl_dtype dt = q->dtype;
    if (dt != DDL_FLOAT32 && dt != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "%s: query must be float32 or float64, got %s", who,
                 ddl_dtype_name(dt));
    DDL_TRY(same_float(k, dt, "key"));
    DDL_TRY(same_float(v, dt, "value"));
    if (mask) DDL_TRY(same_float(mask, dt, "attn_mask (as an additive float mask)"));
    if (naive && dt != DDL_FLOAT32) DDL_FAIL(DDL_E_VALUE, "%s: the naive kernel is float32", who);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || k->shape[0] != q->shape[0] ||
        v->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] || v->shape[1] != q->shape[1] ||
        k->shape[3] != q->shape[3] || v->shape[2] != k->shape[2])
        DDL_FAIL(DDL_E_VALUE,
                 "%s: expected query (B, H, L, D), key (B, H, S, D), value (B, H, S, E), got %s, "
                 "%s, %s",
                 who, shp(b1, q), shp(b2, k), shp(b3, v));
    ddl_sdpa_dims d = {.B = q->shape[0],
                       .H = q->shape[1],
                       .L = q->shape[2],
                       .S = k->shape[2],
                       .D = q->shape[3],
                       .E = v->shape[3],
                       .scale = scale,
                       .causal = causal != 0};
    const int64_t full[4] = {d.B, d.H, d.L, d.S};
    if (mask) {
        int lead = 4 - mask->ndim, ok = mask->ndim <= 4;
        for (int i = 0; ok && i < mask->ndim; i++)
            ok = mask->shape[i] == full[lead + i] || mask->shape[i] == 1;
        if (!ok)
            DDL_FAIL(DDL_E_VALUE,
                     "%s: attn_mask of shape %s does not broadcast to (B, H, L, S) = %s", who,
                     shp(b1, mask), ddl_shape_str(b2, sizeof b2, 4, full));
        ddl_broadcast_strides(d.mstride, mask, 4, full);
    }
    int64_t lshape[3] = {d.B, d.H, d.L}, oshape[4] = {d.B, d.H, d.L, d.E};
    ddl_tensor *t[3] = {NULL, NULL, NULL}, *lse = NULL, *o = NULL;
    ddl_status st = DDL_OK;
    const ddl_tensor *src[3] = {q, k, v};
    ddl_sdpa_strides *lay[3] = {&d.q, &d.k, &d.v};
    for (int i = 0; i < 3 && !st; i++) st = readable(&t[i], lay[i], src[i]);
    if (!st) st = ddl_tensor_empty(&lse, dt, 3, lshape);
    if (!st) st = new_bhrf(&o, dt, oshape, heads_inner(&d.q, t[0]), 0);
    if (!st) layout_of(&d.out, o);
    const void *m = mask ? ddl_tensor_data(mask) : NULL;
    if (!st) {
        if (dt == DDL_FLOAT64)
            st = ddl_sdpa_forward_f64(D64(o), D64(lse), D64(t[0]), D64(t[1]), D64(t[2]), m, &d);
        else
            st = (naive ? ddl_sdpa_forward_naive_f32
                        : ddl_sdpa_forward_f32)(F(o), F(lse), F(t[0]), F(t[1]), F(t[2]), m, &d);
    }
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){.name = "ScaledDotProductAttentionBackward",
                         .backward = sdpa_backward,
                         .n_inputs = 3,
                         .in = {q, k, v},
                         .iargs = {d.B, d.H, d.L, d.S, d.D, d.E, d.causal, naive != 0, d.mstride[0],
                                   d.mstride[1], d.mstride[2], d.mstride[3]},
                         .dargs = {scale},
                         .save = {t[0], t[1], t[2], o, lse, mask},
                         .drop = {t[0], t[1], t[2], lse}});
}
