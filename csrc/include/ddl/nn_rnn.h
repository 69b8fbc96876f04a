/* nn_rnn.h: one-time-step RNN (tanh/relu), LSTM and GRU cells over a batch, forward and backward.
 *
 * Layouts and weight shapes are PyTorch's (nn.RNNCell / nn.LSTMCell / nn.GRUCell, and one layer
 * of one time step of nn.RNN / nn.LSTM / nn.GRU), with G gates of H units each:
 *     RNN  G = 1:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh),  act = tanh or relu
 *     LSTM G = 4:  gates (i, f, g, o) = x W_ih^T + b_ih + h W_hh^T + b_hh
 *                  i, f, o = sigmoid, g = tanh;  c' = f*c + i*g;  h' = o * tanh(c')
 *     GRU  G = 3:  (r, z, n) rows of W;  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
 *                  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *                  n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1-z)*n + z*h
 * with x (B, Din), h and c (B, H), w_ih (G*H, Din), w_hh (G*H, H), b_ih and b_hh (G*H,) or NULL
 * (bias=False). The matrix products are OpenBLAS sgemm over the whole batch.
 *
 * Buffers are contiguous float32, owned by the caller. Forward saves what backward needs into
 * `cache` (ddl_*_cell_cache_floats(B, H) floats; required, it is also the forward's workspace)
 * and backward takes a `scratch` of ddl_*_cell_scratch_floats(B, H) floats (overwritten).
 * Backward ACCUMULATES (+=) into dx, dh, (dc), dw_ih, dw_hh, db_ih, db_hh; any of them may be
 * NULL ("not needed"). The incoming gradients dh_new (and dc_new) may be NULL, meaning zero.
 * Backward leaves `cache` unchanged, so it can run more than once. Outputs and scratch must not
 * alias inputs.
 *
 * Through time (and layers), the caller keeps one cache per step and runs backward in reverse:
 *     for t = T-1 .. 0:  dh_new = dh_out[t] + dh_carry;  dc_new = dc_carry
 *                        zero dh_carry, dc_carry; backward(dx[t], dh_carry, dc_carry, dW..., ...)
 * so dW/db sum over steps and the dh/dc written at step t feed step t-1.
 *
 * Each forward/backward has a `_naive` twin with plain loops in place of sgemm (same
 * arguments) for tests. Errors: DDL_E_VALUE for bad sizes or NULL required buffers (checked
 * before anything is written); sizes must fit BLAS's 32-bit ints (G*H, Din, B <= INT_MAX).
 */
#ifndef DDL_NN_RNN_H
#define DDL_NN_RNN_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DDL_RNN_TANH = 0,
    DDL_RNN_RELU = 1,
} ddl_rnn_nonlinearity;

/* ---- RNN cell (tanh / relu) ----------------------------------------------------------------- */

/* Cache (B, H): h'. Scratch (B, H). Return -1 on negative or overflowing sizes. */
int64_t ddl_rnn_cell_cache_floats(int64_t B, int64_t H);
int64_t ddl_rnn_cell_scratch_floats(int64_t B, int64_t H);

ddl_status ddl_rnn_cell_forward(float *h_new,      // (B, H)
                                float *cache,      // (B, H)
                                const float *x,    // (B, Din)
                                const float *h,    // (B, H)
                                const float *w_ih, // (H, Din)
                                const float *w_hh, // (H, H)
                                const float *b_ih, // (H,) or NULL
                                const float *b_hh, // (H,) or NULL
                                int64_t B, int64_t Din, int64_t H,
                                ddl_rnn_nonlinearity nonlinearity);
ddl_status ddl_rnn_cell_backward(float *dx,           // (B, Din) or NULL
                                 float *dh,           // (B, H) or NULL
                                 float *dw_ih,        // (H, Din) or NULL
                                 float *dw_hh,        // (H, H) or NULL
                                 float *db_ih,        // (H,) or NULL
                                 float *db_hh,        // (H,) or NULL
                                 float *scratch,      // (B, H)
                                 const float *dh_new, // (B, H) or NULL
                                 const float *cache,  // (B, H) from forward
                                 const float *x,      // (B, Din)
                                 const float *h,      // (B, H)
                                 const float *w_ih,   // (H, Din)
                                 const float *w_hh,   // (H, H)
                                 int64_t B, int64_t Din, int64_t H,
                                 ddl_rnn_nonlinearity nonlinearity);

/* ---- LSTM cell ------------------------------------------------------------------------------ */

/* Cache (B, 5H): per row [i f g o] (activated) then tanh(c'). Scratch (B, 4H). */
int64_t ddl_lstm_cell_cache_floats(int64_t B, int64_t H);
int64_t ddl_lstm_cell_scratch_floats(int64_t B, int64_t H);

ddl_status ddl_lstm_cell_forward(float *h_new,      // (B, H)
                                 float *c_new,      // (B, H)
                                 float *cache,      // (B, 5H)
                                 const float *x,    // (B, Din)
                                 const float *h,    // (B, H)
                                 const float *c,    // (B, H)
                                 const float *w_ih, // (4H, Din)
                                 const float *w_hh, // (4H, H)
                                 const float *b_ih, // (4H,) or NULL
                                 const float *b_hh, // (4H,) or NULL
                                 int64_t B, int64_t Din, int64_t H);
ddl_status ddl_lstm_cell_backward(float *dx,           // (B, Din) or NULL
                                  float *dh,           // (B, H) or NULL
                                  float *dc,           // (B, H) or NULL
                                  float *dw_ih,        // (4H, Din) or NULL
                                  float *dw_hh,        // (4H, H) or NULL
                                  float *db_ih,        // (4H,) or NULL
                                  float *db_hh,        // (4H,) or NULL
                                  float *scratch,      // (B, 4H)
                                  const float *dh_new, // (B, H) or NULL
                                  const float *dc_new, // (B, H) or NULL
                                  const float *cache,  // (B, 5H) from forward
                                  const float *x,      // (B, Din)
                                  const float *h,      // (B, H)
                                  const float *c,      // (B, H)
                                  const float *w_ih,   // (4H, Din)
                                  const float *w_hh,   // (4H, H)
                                  int64_t B, int64_t Din, int64_t H);

/* ---- GRU cell ------------------------------------------------------------------------------- */

/* Cache (B, 6H): per row [r z n] (activated), 2H unused, then W_hn h + b_hn. Scratch (B, 6H). */
int64_t ddl_gru_cell_cache_floats(int64_t B, int64_t H);
int64_t ddl_gru_cell_scratch_floats(int64_t B, int64_t H);

ddl_status ddl_gru_cell_forward(float *h_new,      // (B, H)
                                float *cache,      // (B, 6H)
                                const float *x,    // (B, Din)
                                const float *h,    // (B, H)
                                const float *w_ih, // (3H, Din)
                                const float *w_hh, // (3H, H)
                                const float *b_ih, // (3H,) or NULL
                                const float *b_hh, // (3H,) or NULL
                                int64_t B, int64_t Din, int64_t H);
ddl_status ddl_gru_cell_backward(float *dx,           // (B, Din) or NULL
                                 float *dh,           // (B, H) or NULL
                                 float *dw_ih,        // (3H, Din) or NULL
                                 float *dw_hh,        // (3H, H) or NULL
                                 float *db_ih,        // (3H,) or NULL
                                 float *db_hh,        // (3H,) or NULL
                                 float *scratch,      // (B, 6H)
                                 const float *dh_new, // (B, H) or NULL
                                 const float *cache,  // (B, 6H) from forward
                                 const float *x,      // (B, Din)
                                 const float *h,      // (B, H)
                                 const float *w_ih,   // (3H, Din)
                                 const float *w_hh,   // (3H, H)
                                 int64_t B, int64_t Din, int64_t H);

/* ---- fused sequences: one layer, one direction, all T steps -------------------------------- */

/* The whole sequence of one layer in one direction, PyTorch's nn.RNN/LSTM/GRU math:
 *     x (T, B, Din) -> y (T, B, H) with row stride ldy (ldy >= H: a bidirectional layer writes
 *     each direction into its half of a (T, B, 2H) output), h_n and c_n (B, H) of stride ldy.
 * `reverse` runs t = T-1 .. 0 (the backward direction of a bidirectional layer). h0 and c0
 * (B, H) may be NULL (zeros); c0 and c_n are for LSTM only (NULL otherwise).
 * The input projection of all steps is one sgemm (T*B, G*H, Din); each step then adds one
 * sgemm h_{t-1} @ W_hh^T (B, G*H, H) into its slice of the gate buffer and runs the
 * vectorised gate math. The gate buffer is `cache` (ddl_rnn_seq_cache_floats), which keeps
 * the activated gates and states backward needs; backward runs the recurrence in reverse with
 * one sgemm per step, then dW_ih, dW_hh and dx as three sgemms over all steps.
 * Backward ACCUMULATES into dx (T, B, Din), dh0, dc0 (B, H), dw_*, db_* (each may be NULL);
 * dy (T, B, ldy), dh_n, dc_n (B, ldy) may be NULL (zero). It allocates its own workspace
 * (DDL_E_NOMEM when it cannot) and leaves `cache` unchanged. */
typedef enum {
    DDL_RNN_MODE_RNN = 0, /* the same values as ddl_cell_kind */
    DDL_RNN_MODE_LSTM = 1,
    DDL_RNN_MODE_GRU = 2,
} ddl_rnn_mode;

/* Floats of the sequence cache: T*B*H * (1 RNN, 7 LSTM, 5 GRU); -1 on bad or huge sizes. */
int64_t ddl_rnn_seq_cache_floats(ddl_rnn_mode mode, int64_t T, int64_t B, int64_t H);

ddl_status ddl_rnn_seq_forward(float *y,          // (T, B, ldy)
                               float *h_n,        // (B, ldy) or NULL
                               float *c_n,        // (B, ldy) or NULL (LSTM)
                               float *cache,      // ddl_rnn_seq_cache_floats
                               const float *x,    // (T, B, Din)
                               const float *h0,   // (B, H) or NULL
                               const float *c0,   // (B, H) or NULL (LSTM)
                               const float *w_ih, // (G*H, Din)
                               const float *w_hh, // (G*H, H)
                               const float *b_ih, // (G*H,) or NULL
                               const float *b_hh, // (G*H,) or NULL
                               int64_t T, int64_t B, int64_t Din, int64_t H, int64_t ldy,
                               ddl_rnn_mode mode, ddl_rnn_nonlinearity nonlinearity, int reverse);
ddl_status ddl_rnn_seq_backward(float *dx,          // (T, B, Din) or NULL
                                float *dh0,         // (B, H) or NULL
                                float *dc0,         // (B, H) or NULL
                                float *dw_ih,       // (G*H, Din) or NULL
                                float *dw_hh,       // (G*H, H) or NULL
                                float *db_ih,       // (G*H,) or NULL
                                float *db_hh,       // (G*H,) or NULL
                                const float *dy,    // (T, B, ldy) or NULL
                                const float *dh_n,  // (B, ldy) or NULL
                                const float *dc_n,  // (B, ldy) or NULL
                                const float *cache, // from forward
                                const float *x,     // (T, B, Din)
                                const float *h0,    // (B, H) or NULL
                                const float *c0,    // (B, H) or NULL
                                const float *w_ih,  // (G*H, Din)
                                const float *w_hh,  // (G*H, H)
                                int64_t T, int64_t B, int64_t Din, int64_t H, int64_t ldy,
                                ddl_rnn_mode mode, ddl_rnn_nonlinearity nonlinearity, int reverse);

/* ---- naive twins (plain loops, double accumulation; for tests) ------------------------------ */

ddl_status ddl_rnn_cell_forward_naive(float *h_new, float *cache, const float *x, const float *h,
                                      const float *w_ih, const float *w_hh, const float *b_ih,
                                      const float *b_hh, int64_t B, int64_t Din, int64_t H,
                                      ddl_rnn_nonlinearity nonlinearity);
ddl_status ddl_rnn_cell_backward_naive(float *dx, float *dh, float *dw_ih, float *dw_hh,
                                       float *db_ih, float *db_hh, float *scratch,
                                       const float *dh_new, const float *cache, const float *x,
                                       const float *h, const float *w_ih, const float *w_hh,
                                       int64_t B, int64_t Din, int64_t H,
                                       ddl_rnn_nonlinearity nonlinearity);
ddl_status ddl_lstm_cell_forward_naive(float *h_new, float *c_new, float *cache, const float *x,
                                       const float *h, const float *c, const float *w_ih,
                                       const float *w_hh, const float *b_ih, const float *b_hh,
                                       int64_t B, int64_t Din, int64_t H);
ddl_status ddl_lstm_cell_backward_naive(float *dx, float *dh, float *dc, float *dw_ih, float *dw_hh,
                                        float *db_ih, float *db_hh, float *scratch,
                                        const float *dh_new, const float *dc_new,
                                        const float *cache, const float *x, const float *h,
                                        const float *c, const float *w_ih, const float *w_hh,
                                        int64_t B, int64_t Din, int64_t H);
ddl_status ddl_gru_cell_forward_naive(float *h_new, float *cache, const float *x, const float *h,
                                      const float *w_ih, const float *w_hh, const float *b_ih,
                                      const float *b_hh, int64_t B, int64_t Din, int64_t H);
ddl_status ddl_gru_cell_backward_naive(float *dx, float *dh, float *dw_ih, float *dw_hh,
                                       float *db_ih, float *db_hh, float *scratch,
                                       const float *dh_new, const float *cache, const float *x,
                                       const float *h, const float *w_ih, const float *w_hh,
                                       int64_t B, int64_t Din, int64_t H);

#ifdef __cplusplus
}
#endif
#endif /* DDL_NN_RNN_H */
