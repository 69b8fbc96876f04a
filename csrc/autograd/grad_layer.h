/* grad_layer.h: the float32 helpers the layer-op files (grad_nn.c, grad_loss.c, grad_rnn.c)
 * share: argument checks into contiguous copies, and the start of every backward. */
#ifndef DDL_AUTOGRAD_GRAD_LAYER_H
#define DDL_AUTOGRAD_GRAD_LAYER_H

#include "autograd/node.h"

#define F(t) ((float *)ddl_tensor_data(t))
#define FOPT(t) ((t) ? F(t) : NULL)

/* A contiguous float32 tensor for argument `arg` of `who` (new ref); NULL stays NULL. */
static inline ddl_status f32(ddl_tensor **out, const ddl_tensor *t, const char *who,
                             const char *arg) {
    *out = NULL;
    if (!t) return DDL_OK;
    if (t->dtype != DDL_FLOAT32)
        DDL_FAIL(DDL_E_TYPE, "%s: %s must be float32 (ddl's layer kernels are float32), got %s",
                 who, arg, ddl_dtype_name(t->dtype));
    return ddl_tensor_contiguous(out, t);
}

/* A contiguous int64 tensor for argument `arg` of `who` (new ref). */
static inline ddl_status i64(ddl_tensor **out, const ddl_tensor *t, const char *who,
                             const char *arg) {
    if (t->dtype != DDL_INT64)
        DDL_FAIL(DDL_E_TYPE, "%s: %s must be int64, got %s", who, arg, ddl_dtype_name(t->dtype));
    return ddl_tensor_contiguous(out, t);
}

/* Zeroed gradients for the needed inputs (kernels accumulate into them). */
static inline ddl_status zero_grads(ddl_node *n, ddl_tensor **dinp, const int *need) {
    for (int i = 0; i < n->n_inputs; i++)
        if (need[i])
            DDL_TRY(ddl_tensor_zeros(&dinp[i], DDL_FLOAT32, n->in[i].ndim, n->in[i].shape));
    return DDL_OK;
}

/* The start of most backwards here: dout as a contiguous *g (released by the caller, NULL on
 * failure) and zeroed gradients for the needed inputs. */
static inline ddl_status begin_backward(ddl_tensor **g, ddl_node *n, const ddl_tensor *dout,
                                        ddl_tensor **dinp, const int *need) {
    *g = NULL;
    DDL_TRY(ddl_tensor_contiguous(g, dout));
    return zero_grads(n, dinp, need);
}

/* ---- float32 or float64: the ops with kernels in both (conv2d, pooling, the recurrent cells)
 * ---- */

#define D(t) ((double *)ddl_tensor_data(t))
#define DOPT(t) ((t) ? D(t) : NULL)

/* A contiguous tensor for argument `arg` of `who`, which must have dtype dt (the op's input
 * dtype, float32 or float64; new ref); NULL stays NULL. Mixing is a TypeError, as PyTorch. */
static inline ddl_status fdt(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt, const char *who,
                             const char *arg) {
    *out = NULL;
    if (!t) return DDL_OK;
    if (t->dtype != DDL_FLOAT32 && t->dtype != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "%s: %s must be float32 or float64, got %s", who, arg,
                 ddl_dtype_name(t->dtype));
    if (t->dtype != dt)
        DDL_FAIL(DDL_E_TYPE, "%s: %s is %s but the input is %s (float32 and float64 do not mix)",
                 who, arg, ddl_dtype_name(t->dtype), ddl_dtype_name(dt));
    return ddl_tensor_contiguous(out, t);
}

/* Zeroed gradients in each needed input's own dtype. */
static inline ddl_status zero_grads_dt(ddl_node *n, ddl_tensor **dinp, const int *need) {
    for (int i = 0; i < n->n_inputs; i++)
        if (need[i])
            DDL_TRY(ddl_tensor_zeros(&dinp[i], n->in[i].dtype, n->in[i].ndim, n->in[i].shape));
    return DDL_OK;
}

/* t's shape as text in buf (DDL_SHAPE_BUF bytes), for error messages. */
static inline const char *shp(char *buf, const ddl_tensor *t) {
    return ddl_shape_str(buf, DDL_SHAPE_BUF, t->ndim, t->shape);
}

#endif
