/* grad_rnn.c: the differentiable recurrent cells (one time step) and fused sequences on top of
 * the float32 kernels of nn_rnn.c; the forward records a node whose backward sits below it. */
#include "autograd/grad_layer.h"
#include "ddl/autograd.h"
#include "ddl/nn_rnn.h"

/* ---- recurrent cells ------------------------------------------------------------------------- */

/* inputs: x h c w_ih w_hh b_ih b_hh ; iargs: kind (ddl_cell_kind) B I H nonlinearity precision ;
 * saved: x h c w_ih w_hh cache */
static ddl_status cell_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                const int *need) {
    int64_t kind = n->iargs[0], B = n->iargs[1], I = n->iargs[2], H = n->iargs[3];
    ddl_tensor *g = NULL, *dh_new = NULL, *dc_new = NULL, *scratch = NULL, *tmp = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st && kind == DDL_CELL_LSTM) { /* the output is [h', c'] side by side: split dout */
        st = ddl_tensor_slice(&tmp, g, 1, 0, H, 1);
        if (!st) st = ddl_tensor_clone(&dh_new, tmp);
        ddl_tensor_release(tmp);
        tmp = NULL;
        if (!st) st = ddl_tensor_slice(&tmp, g, 1, H, 2 * H, 1);
        if (!st) st = ddl_tensor_clone(&dc_new, tmp);
        ddl_tensor_release(tmp);
    } else if (!st) {
        dh_new = g;
        ddl_tensor_retain(g);
    }
    int64_t ns = kind == DDL_CELL_LSTM  ? ddl_lstm_cell_scratch_floats(B, H)
                 : kind == DDL_CELL_GRU ? ddl_gru_cell_scratch_floats(B, H)
                                        : ddl_rnn_cell_scratch_floats(B, H);
    if (ns < 1) ns = 1;
    if (!st) st = ddl_tensor_empty(&scratch, DDL_FLOAT32, 1, &ns);
    if (!st) st = zero_grads(n, dinp, need);
    float *d[7];
    for (int i = 0; i < 7; i++) d[i] = need[i] ? F(dinp[i]) : NULL;
    ddl_tensor *const *s = n->saved;
    int prec = ddl_gemm_precision_override; /* the GEMM precision its forward ran in */
    ddl_gemm_precision_override = (int)n->iargs[5];
    if (!st && kind == DDL_CELL_LSTM)
        st = ddl_lstm_cell_backward(d[0], d[1], d[2], d[3], d[4], d[5], d[6], F(scratch), F(dh_new),
                                    F(dc_new), F(s[5]), F(s[0]), F(s[1]), F(s[2]), F(s[3]), F(s[4]),
                                    B, I, H);
    else if (!st && kind == DDL_CELL_GRU)
        st = ddl_gru_cell_backward(d[0], d[1], d[3], d[4], d[5], d[6], F(scratch), F(dh_new),
                                   F(s[5]), F(s[0]), F(s[1]), F(s[3]), F(s[4]), B, I, H);
    else if (!st)
        st = ddl_rnn_cell_backward(d[0], d[1], d[3], d[4], d[5], d[6], F(scratch), F(dh_new),
                                   F(s[5]), F(s[0]), F(s[1]), F(s[3]), F(s[4]), B, I, H,
                                   (ddl_rnn_nonlinearity)n->iargs[4]);
    ddl_gemm_precision_override = prec;
    ddl_tensor_release(g);
    ddl_tensor_release(dh_new);
    ddl_tensor_release(dc_new);
    ddl_tensor_release(scratch);
    return st;
}

ddl_status ddl_ag_rnn_cell(ddl_tensor **out, ddl_cell_kind kind, const ddl_tensor *x,
                           const ddl_tensor *h, const ddl_tensor *c, const ddl_tensor *w_ih,
                           const ddl_tensor *w_hh, const ddl_tensor *b_ih, const ddl_tensor *b_hh,
                           ddl_rnn_nonlinearity nonlinearity) {
    static const char *names[DDL_NUM_CELL_KINDS] = {"rnn_cell", "lstm_cell", "gru_cell"};
    static const char *node_names[DDL_NUM_CELL_KINDS] = {"RnnCellBackward", "LstmCellBackward",
                                                         "GruCellBackward"};
    if ((unsigned)kind >= DDL_NUM_CELL_KINDS)
        DDL_FAIL(DDL_E_VALUE, "rnn_cell: unknown kind %d (a ddl_cell_kind)", (int)kind);
    if (kind == DDL_CELL_RNN && nonlinearity != DDL_RNN_TANH && nonlinearity != DDL_RNN_RELU)
        DDL_FAIL(DDL_E_VALUE, "rnn_cell: unknown nonlinearity %d (0 tanh, 1 relu)",
                 (int)nonlinearity);
    const char *who = names[kind];
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF], b3[DDL_SHAPE_BUF];
    int64_t gates = kind == DDL_CELL_LSTM ? 4 : kind == DDL_CELL_GRU ? 3 : 1;
    if (x->ndim != 2 || h->ndim != 2 || w_ih->ndim != 2 || w_hh->ndim != 2)
        DDL_FAIL(DDL_E_VALUE, "%s: expected 2-D input, hidden state and weights", who);
    int64_t B = x->shape[0], I = x->shape[1], H = h->shape[1];
    if (h->shape[0] != B || w_ih->shape[0] != gates * H || w_ih->shape[1] != I ||
        w_hh->shape[0] != gates * H || w_hh->shape[1] != H)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input %s, hidden %s do not match weight_ih %s (expected (%lld, %lld))", who,
                 shp(b1, x), shp(b2, h), shp(b3, w_ih), (long long)(gates * H), (long long)I);
    if ((kind == DDL_CELL_LSTM) != (c != NULL))
        DDL_FAIL(DDL_E_VALUE, "%s: a cell state is needed by (and only by) LSTM", who);
    if (c && (c->ndim != 2 || c->shape[0] != B || c->shape[1] != H))
        DDL_FAIL(DDL_E_VALUE, "%s: cell state %s should be (%lld, %lld)", who, shp(b1, c),
                 (long long)B, (long long)H);
    const ddl_tensor *bs[2] = {b_ih, b_hh};
    for (int i = 0; i < 2; i++)
        if (bs[i] && ddl_tensor_numel(bs[i]) != gates * H)
            DDL_FAIL(DDL_E_VALUE, "%s: bias of shape %s for %lld gates", who, shp(b1, bs[i]),
                     (long long)(gates * H));
    ddl_tensor *t[7] = {0}, *cache = NULL, *o = NULL;
    const ddl_tensor *ins[7] = {x, h, c, w_ih, w_hh, b_ih, b_hh};
    static const char *arg[7] = {"input",     "hx",      "cx",     "weight_ih",
                                 "weight_hh", "bias_ih", "bias_hh"};
    ddl_status st = DDL_OK;
    for (int i = 0; i < 7 && !st; i++) st = f32(&t[i], ins[i], who, arg[i]);
    int64_t nc = kind == DDL_CELL_LSTM  ? ddl_lstm_cell_cache_floats(B, H)
                 : kind == DDL_CELL_GRU ? ddl_gru_cell_cache_floats(B, H)
                                        : ddl_rnn_cell_cache_floats(B, H);
    if (nc < 1) nc = 1;
    int64_t oshape[2] = {B, kind == DDL_CELL_LSTM ? 2 * H : H};
    if (!st) st = ddl_tensor_empty(&cache, DDL_FLOAT32, 1, &nc);
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, 2, oshape);
    if (!st && kind == DDL_CELL_LSTM) {
        ddl_tensor *hn = NULL, *cn = NULL; /* h' and c' are written to scratch, then packed */
        st = ddl_tensor_empty(&hn, DDL_FLOAT32, 2, h->shape);
        if (!st) st = ddl_tensor_empty(&cn, DDL_FLOAT32, 2, h->shape);
        if (!st)
            st = ddl_lstm_cell_forward(F(hn), F(cn), F(cache), F(t[0]), F(t[1]), F(t[2]), F(t[3]),
                                       F(t[4]), FOPT(t[5]), FOPT(t[6]), B, I, H);
        ddl_tensor *half = NULL;
        if (!st) st = ddl_tensor_slice(&half, o, 1, 0, H, 1);
        if (!st) st = ddl_copy_(half, hn);
        ddl_tensor_release(half);
        half = NULL;
        if (!st) st = ddl_tensor_slice(&half, o, 1, H, 2 * H, 1);
        if (!st) st = ddl_copy_(half, cn);
        ddl_tensor_release(half);
        ddl_tensor_release(hn);
        ddl_tensor_release(cn);
    } else if (!st && kind == DDL_CELL_GRU) {
        st = ddl_gru_cell_forward(F(o), F(cache), F(t[0]), F(t[1]), F(t[3]), F(t[4]), FOPT(t[5]),
                                  FOPT(t[6]), B, I, H);
    } else if (!st) {
        st = ddl_rnn_cell_forward(F(o), F(cache), F(t[0]), F(t[1]), F(t[3]), F(t[4]), FOPT(t[5]),
                                  FOPT(t[6]), B, I, H, nonlinearity);
    }
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){.name = node_names[kind],
                         .backward = cell_backward,
                         .n_inputs = 7,
                         .in = {x, h, c, w_ih, w_hh, b_ih, b_hh},
                         .iargs = {kind, B, I, H, nonlinearity, ddl_gemm_precision()},
                         .save = {t[0], t[1], t[2], t[3], t[4], cache},
                         .drop = {t[0], t[1], t[2], t[3], t[4], t[5], t[6], cache}});
}

/* ---- fused sequences ------------------------------------------------------------------------- */

/* inputs: x h c w_ih w_hh b_ih b_hh ; iargs: kind T B I H nonlinearity reverse precision ;
 * saved: x h c w_ih w_hh cache */
static ddl_status seq_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                               const int *need) {
    const int64_t *a = n->iargs;
    int64_t kind = a[0], T = a[1], B = a[2], I = a[3], H = a[4];
    ddl_tensor *g = NULL;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    float *d[7];
    for (int i = 0; i < 7; i++) d[i] = need[i] ? F(dinp[i]) : NULL;
    ddl_tensor *const *s = n->saved;
    int prec = ddl_gemm_precision_override; /* the GEMM precision its forward ran in */
    ddl_gemm_precision_override = (int)a[7];
    if (!st) {
        const float *dy = F(g); // (T + S, B, H)
        st = ddl_rnn_seq_backward(d[0], d[1], d[2], d[3], d[4], d[5], d[6], dy, dy + T * B * H,
                                  kind == DDL_CELL_LSTM ? dy + (T + 1) * B * H : NULL, F(s[5]),
                                  F(s[0]), FOPT(s[1]), FOPT(s[2]), F(s[3]), F(s[4]), T, B, I, H, H,
                                  (ddl_rnn_mode)kind, (ddl_rnn_nonlinearity)a[5], (int)a[6]);
    }
    ddl_gemm_precision_override = prec;
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_rnn_seq(ddl_tensor **out, ddl_cell_kind kind, const ddl_tensor *x,
                          const ddl_tensor *h, const ddl_tensor *c, const ddl_tensor *w_ih,
                          const ddl_tensor *w_hh, const ddl_tensor *b_ih, const ddl_tensor *b_hh,
                          ddl_rnn_nonlinearity nonlinearity, int reverse) {
    static const char *names[DDL_NUM_CELL_KINDS] = {"rnn", "lstm", "gru"};
    static const char *node_names[DDL_NUM_CELL_KINDS] = {"RnnBackward", "LstmBackward",
                                                         "GruBackward"};
    if ((unsigned)kind >= DDL_NUM_CELL_KINDS)
        DDL_FAIL(DDL_E_VALUE, "rnn_seq: unknown kind %d (a ddl_cell_kind)", (int)kind);
    if (kind == DDL_CELL_RNN && nonlinearity != DDL_RNN_TANH && nonlinearity != DDL_RNN_RELU)
        DDL_FAIL(DDL_E_VALUE, "rnn_seq: unknown nonlinearity %d (0 tanh, 1 relu)",
                 (int)nonlinearity);
    const char *who = names[kind];
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    int64_t gates = kind == DDL_CELL_LSTM ? 4 : kind == DDL_CELL_GRU ? 3 : 1;
    if (x->ndim != 3 || w_ih->ndim != 2 || w_hh->ndim != 2)
        DDL_FAIL(DDL_E_VALUE, "%s: expected a 3-D input (T, B, I) and 2-D weights, got %s", who,
                 shp(b1, x));
    int64_t T = x->shape[0], B = x->shape[1], I = x->shape[2], H = w_hh->shape[1];
    if (H < 1 || w_hh->shape[0] != gates * H || w_ih->shape[0] != gates * H || w_ih->shape[1] != I)
        DDL_FAIL(DDL_E_VALUE, "%s: input %s does not match weight_ih %s (expected (%lld, %lld))",
                 who, shp(b1, x), shp(b2, w_ih), (long long)(gates * H), (long long)I);
    if (c && kind != DDL_CELL_LSTM) DDL_FAIL(DDL_E_VALUE, "%s: a cell state is only for LSTM", who);
    const ddl_tensor *st2[2] = {h, c};
    for (int i = 0; i < 2; i++)
        if (st2[i] && (st2[i]->ndim != 2 || st2[i]->shape[0] != B || st2[i]->shape[1] != H))
            DDL_FAIL(DDL_E_VALUE, "%s: %s of shape %s, expected (%lld, %lld)", who,
                     i ? "c_0" : "h_0", shp(b1, st2[i]), (long long)B, (long long)H);
    const ddl_tensor *bs[2] = {b_ih, b_hh};
    for (int i = 0; i < 2; i++)
        if (bs[i] && ddl_tensor_numel(bs[i]) != gates * H)
            DDL_FAIL(DDL_E_VALUE, "%s: bias of shape %s for %lld gates", who, shp(b1, bs[i]),
                     (long long)(gates * H));
    ddl_tensor *t[7] = {0}, *cache = NULL, *o = NULL;
    const ddl_tensor *ins[7] = {x, h, c, w_ih, w_hh, b_ih, b_hh};
    static const char *arg[7] = {"input",     "h_0",     "c_0",    "weight_ih",
                                 "weight_hh", "bias_ih", "bias_hh"};
    ddl_status st = DDL_OK;
    for (int i = 0; i < 7 && !st; i++) st = f32(&t[i], ins[i], who, arg[i]);
    int64_t nc = ddl_rnn_seq_cache_floats((ddl_rnn_mode)kind, T, B, H);
    if (!st && nc < 0) st = ddl_fail(DDL_E_VALUE, "%s: sizes too large", who);
    if (nc < 1) nc = 1;
    int64_t S = kind == DDL_CELL_LSTM ? 2 : 1, oshape[3] = {T + S, B, H};
    if (!st) st = ddl_tensor_empty(&cache, DDL_FLOAT32, 1, &nc);
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, 3, oshape);
    if (!st) {
        float *y = F(o);
        st = ddl_rnn_seq_forward(y, y + T * B * H, S == 2 ? y + (T + 1) * B * H : NULL, F(cache),
                                 F(t[0]), FOPT(t[1]), FOPT(t[2]), F(t[3]), F(t[4]), FOPT(t[5]),
                                 FOPT(t[6]), T, B, I, H, H, (ddl_rnn_mode)kind, nonlinearity,
                                 reverse != 0);
    }
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){
            .name = node_names[kind],
            .backward = seq_backward,
            .n_inputs = 7,
            .in = {x, h, c, w_ih, w_hh, b_ih, b_hh},
            .iargs = {kind, T, B, I, H, nonlinearity, reverse != 0, ddl_gemm_precision()},
            .save = {t[0], t[1], t[2], t[3], t[4], cache},
            .drop = {t[0], t[1], t[2], t[3], t[4], t[5], t[6], cache}});
}
