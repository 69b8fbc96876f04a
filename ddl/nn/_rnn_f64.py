"""float64 recurrent cells and sequences as compositions of ddl's differentiable core ops
(matmul, sigmoid, tanh, relu: all with float64 kernels), so a `.double()` RNN/LSTM/GRU (and the
cell modules) trains; the C cell and fused-sequence kernels (_C.rnn_cell, _C.rnn_seq) are
float32. Same gate order and formulas as PyTorch (csrc/include/ddl/nn_rnn.h)."""
from .. import _C
from .. import _functions as T


def _same_dtype(who, ts):
    names = {t.dtype.name for t in ts if t is not None}
    if len(names) > 1:
        raise TypeError(f"{who}: input, state and weights must share one dtype, got "
                        f"{', '.join(sorted(names))} (float32 and float64 do not mix)")


def _proj(x, w, b):
    y = x @ w.transpose(0, 1)
    return y if b is None else y + b


def cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, nl):
    """One step: h' (RNN, GRU) or (h', c') (LSTM), for x (B, Din), h and c (B, H)."""
    _same_dtype("rnn cell", (x, h, c, w_ih, w_hh, b_ih, b_hh))
    gi, gh = _proj(x, w_ih, b_ih), _proj(h, w_hh, b_hh)
    H = h.shape[1]
    if kind == _C.CELL_RNN:
        s = gi + gh
        return s.tanh() if nl == _C.RNN_TANH else s.relu()
    if kind == _C.CELL_LSTM:
        g = gi + gh
        i, f = g[:, :H].sigmoid(), g[:, H:2 * H].sigmoid()
        cand, o = g[:, 2 * H:3 * H].tanh(), g[:, 3 * H:].sigmoid()
        c2 = f * c + i * cand
        return o * c2.tanh(), c2
    r = (gi[:, :H] + gh[:, :H]).sigmoid()
    z = (gi[:, H:2 * H] + gh[:, H:2 * H]).sigmoid()
    n = (gi[:, 2 * H:] + r * gh[:, 2 * H:]).tanh()
    return (1 - z) * n + z * h


def seq(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, nl, reverse):
    """_C.rnn_seq's result for float64: (T + 1 (+1 for LSTM), B, H) = the outputs of every
    step in input order, then h_n (and c_n); h, c None means zeros."""
    steps, batch = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    zero = T.zeros((batch, H), dtype=x.dtype)
    h = zero if h is None else h
    c = zero if c is None and kind == _C.CELL_LSTM else c
    ys = [None] * steps
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        out = cell(kind, x[t], h, c, w_ih, w_hh, b_ih, b_hh, nl)
        h, c = out if kind == _C.CELL_LSTM else (out, c)
        ys[t] = h
    return T.stack(ys + [h] + ([c] if kind == _C.CELL_LSTM else []), 0)
