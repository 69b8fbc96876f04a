/* grad_layer_norm.c: the differentiable per-row normalization (LayerNorm, RMSNorm; GroupNorm
 * and InstanceNorm reshape onto it) over the float32 and float64 kernels of nn_layer_norm.c. */
#include "autograd/grad_layer.h"
#include "ddl/autograd.h"
#include "ddl/nn_layer_norm.h"

/* A contiguous float32/float64 copy of t of dtype dt (new ref); NULL stays NULL. */
static ddl_status float_arg(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt, const char *who,
                            const char *arg) {
    *out = NULL;
    if (!t) return DDL_OK;
    if (t->dtype != dt)
        DDL_FAIL(DDL_E_TYPE, "%s: %s is %s but the input is %s (one dtype, as PyTorch)", who, arg,
                 ddl_dtype_name(t->dtype), ddl_dtype_name(dt));
    return ddl_tensor_contiguous(out, t);
}

#define D64(t) ((double *)ddl_tensor_data(t))
#define D64OPT(t) ((t) ? D64(t) : NULL)

/* iargs: M N kind ; saved: x, weight, mean, rstd */
static ddl_status layer_norm_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                      const int *need) {
    const int64_t M = n->iargs[0], N = n->iargs[1];
    ddl_row_norm_kind kind = (ddl_row_norm_kind)n->iargs[2];
    ddl_tensor *g = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    for (int i = 0; i < 3 && !st; i++)
        if (need[i]) st = ddl_tensor_zeros(&dinp[i], n->in[i].dtype, n->in[i].ndim, n->in[i].shape);
    ddl_tensor *x = n->saved[0], *w = n->saved[1], *mean = n->saved[2], *rstd = n->saved[3];
    if (!st && M * N > 0) {
        if (x->dtype == DDL_FLOAT32)
            st = ddl_layer_norm_backward_f32(
                need[0] ? F(dinp[0]) : NULL, need[1] ? F(dinp[1]) : NULL,
                need[2] ? F(dinp[2]) : NULL, F(g), F(x), FOPT(w), F(mean), F(rstd), M, N, kind);
        else
            st = ddl_layer_norm_backward_f64(need[0] ? D64(dinp[0]) : NULL,
                                             need[1] ? D64(dinp[1]) : NULL,
                                             need[2] ? D64(dinp[2]) : NULL, D64(g), D64(x),
                                             D64OPT(w), D64(mean), D64(rstd), M, N, kind);
    }
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_layer_norm(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *weight,
                             const ddl_tensor *bias, int64_t N, double eps,
                             ddl_row_norm_kind kind) {
    const char *who = kind == DDL_ROW_NORM_RMS ? "rms_norm" : "layer_norm";
    char b1[DDL_SHAPE_BUF];
    if ((unsigned)kind >= DDL_NUM_ROW_NORMS)
        DDL_FAIL(DDL_E_VALUE, "layer_norm: unknown kind %d (0 layer, 1 rms)", (int)kind);
    if (x->dtype != DDL_FLOAT32 && x->dtype != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "%s: input must be float32 or float64, got %s", who,
                 ddl_dtype_name(x->dtype));
    int64_t total = ddl_tensor_numel(x);
    if (N <= 0 || total % N)
        DDL_FAIL(DDL_E_VALUE, "%s: input of shape %s does not split into rows of %lld", who,
                 shp(b1, x), (long long)N);
    if ((weight && ddl_tensor_numel(weight) != N) || (bias && ddl_tensor_numel(bias) != N))
        DDL_FAIL(DDL_E_VALUE, "%s: weight and bias must have %lld elements, got shape %s", who,
                 (long long)N, shp(b1, weight && ddl_tensor_numel(weight) != N ? weight : bias));
    if (!(eps >= 0)) DDL_FAIL(DDL_E_VALUE, "%s: eps must be >= 0, got %g", who, eps);
    int64_t M = total / N;
    ddl_dtype dt = x->dtype;
    ddl_tensor *xc = NULL, *wc = NULL, *bc = NULL, *mean = NULL, *rstd = NULL, *o = NULL;
    ddl_status st = float_arg(&xc, x, dt, who, "input");
    if (!st) st = float_arg(&wc, weight, dt, who, "weight");
    if (!st) st = float_arg(&bc, bias, dt, who, "bias");
    if (!st) st = ddl_tensor_empty(&mean, dt, 1, &M);
    if (!st) st = ddl_tensor_empty(&rstd, dt, 1, &M);
    if (!st) st = ddl_tensor_empty(&o, dt, x->ndim, x->shape);
    if (!st && M > 0) {
        if (dt == DDL_FLOAT32)
            st = ddl_layer_norm_forward_f32(F(o), F(mean), F(rstd), F(xc), FOPT(wc), FOPT(bc), M, N,
                                            eps, kind);
        else
            st = ddl_layer_norm_forward_f64(D64(o), D64(mean), D64(rstd), D64(xc), D64OPT(wc),
                                            D64OPT(bc), M, N, eps, kind);
    }
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){.name = kind == DDL_ROW_NORM_RMS ? "RmsNormBackward" : "LayerNormBackward",
                         .backward = layer_norm_backward,
                         .n_inputs = 3,
                         .in = {x, weight, bias},
                         .iargs = {M, N, kind},
                         .dargs = {eps},
                         .save = {xc, wc, mean, rstd},
                         .drop = {xc, wc, bc, mean, rstd}});
}
