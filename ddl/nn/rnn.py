"""Recurrent layers RNN, LSTM and GRU (multi-layer, bidirectional, inter-layer dropout,
batch_first) and the one-step RNNCell, LSTMCell and GRUCell, with PyTorch's parameter names,
layouts and initialization. Each (layer, direction) of a layer module is one fused C op over
the whole sequence (_C.rnn_seq: one input-projection GEMM, one recurrent GEMM per step, a
fused backward through time); a cell module is one C cell call per step. float64 runs as
core-op compositions instead (ddl/nn/_rnn_f64.py)."""
import math

from .. import _C
from .. import _functions as T
from . import _rnn_f64, init
from . import functional as F
from .module import Module, Parameter

_KIND = {"r": _C.CELL_RNN, "l": _C.CELL_LSTM, "g": _C.CELL_GRU}


class _RNNBase(Module):
    _gates = 1
    _kind = "r"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None):
        super().__init__()
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError(f"{type(self).__name__}: sizes and num_layers must be positive")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bool(bidirectional)
        dirs = 2 if bidirectional else 1
        g = self._gates * hidden_size
        for layer in range(num_layers):
            isz = input_size if layer == 0 else hidden_size * dirs
            for sfx in ("", "_reverse")[:dirs]:
                s = f"_l{layer}{sfx}"
                setattr(self, "weight_ih" + s, Parameter(T.empty(g, isz, dtype=dtype)))
                setattr(self, "weight_hh" + s, Parameter(T.empty(g, hidden_size, dtype=dtype)))
                if bias:
                    setattr(self, "bias_ih" + s, Parameter(T.empty(g, dtype=dtype)))
                    setattr(self, "bias_hh" + s, Parameter(T.empty(g, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _params(self, layer, reverse):
        s = f"_l{layer}{'_reverse' if reverse else ''}"
        get = lambda n: getattr(self, n + s) if self.bias or "weight" in n else None
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _nonlinearity(self):
        return _C.RNN_TANH

    def forward(self, input, hx=None):
        name = type(self).__name__
        unbatched = input.ndim == 2
        if unbatched:
            input = input.unsqueeze(1)
        if input.ndim != 3:
            raise ValueError(f"{name}: expected a 2-d or 3-d input, got shape {tuple(input.shape)}")
        if self.batch_first and not unbatched:
            input = input.transpose(0, 1)
        steps, batch, feat = input.shape
        if steps == 0:
            raise ValueError(f"{name}: expected a sequence length > 0, got input of shape "
                             f"{tuple(input.shape)}")
        if feat != self.input_size:
            raise ValueError(f"{name}(input_size={self.input_size}): input of shape "
                             f"{tuple(input.shape)} has {feat} features")
        h0, c0 = self._initial_state(hx, batch, unbatched)
        lstm = self._kind == "l"
        dirs = 2 if self.bidirectional else 1
        kind, nl = _KIND[self._kind], self._nonlinearity()
        layer_in = input
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                h = h0[k] if h0 is not None else None
                c = c0[k] if c0 is not None else None
                ps = self._params(layer, d == 1)
                if F._f64(layer_in, h, c, *ps):  # float64: core ops (the C op is float32)
                    o = _rnn_f64.seq(kind, layer_in, h, c, *ps, nl, d == 1)
                else:
                    o = _C.rnn_seq(kind, layer_in, h, c, *ps, nl, d == 1)
                outs.append(o[:steps])
                h_n.append(o[steps])
                if lstm:
                    c_n.append(o[steps + 1])
            layer_in = outs[0] if dirs == 1 else T.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        output = layer_in
        state_h = T.stack(h_n, 0)
        state_c = T.stack(c_n, 0) if lstm else None
        if self.batch_first and not unbatched:
            output = output.transpose(0, 1)
        if unbatched:
            output = output.squeeze(1)
            state_h = state_h.squeeze(1)
            state_c = state_c.squeeze(1) if state_c is not None else None
        return output, (state_h if state_c is None else (state_h, state_c))

    def _initial_state(self, hx, batch, unbatched):
        dirs = 2 if self.bidirectional else 1
        shape = (self.num_layers * dirs, batch, self.hidden_size)
        if hx is None:
            return None, None
        if self._kind == "l" and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError("LSTM: the initial state must be a tuple (h_0, c_0)")
        h0, c0 = hx if self._kind == "l" else (hx, None)
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        for s, what in ((h0, "h_0"), (c0, "c_0")):
            if s is not None and tuple(s.shape) != shape:
                raise ValueError(f"{type(self).__name__}: {what} of shape {tuple(s.shape)}, "
                                 f"expected {shape}")
        return h0, c0

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(_RNNBase):
    def __init__(self, *args, nonlinearity="tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(*args, **kwargs)
        self.nonlinearity = nonlinearity

    def _nonlinearity(self):
        return _C.RNN_TANH if self.nonlinearity == "tanh" else _C.RNN_RELU


class LSTM(_RNNBase):
    _gates = 4
    _kind = "l"


class GRU(_RNNBase):
    _gates = 3
    _kind = "g"


# ---- cells: one time step ------------------------------------------------------------------------


class _CellBase(Module):
    _gates = 1

    def __init__(self, input_size, hidden_size, bias=True, dtype=None):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"{type(self).__name__}: sizes must be positive")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = self._gates * hidden_size
        self.weight_ih = Parameter(T.empty(g, input_size, dtype=dtype))
        self.weight_hh = Parameter(T.empty(g, hidden_size, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(T.empty(g, dtype=dtype))
            self.bias_hh = Parameter(T.empty(g, dtype=dtype))
        else:
            self.bias_ih = self.bias_hh = None
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _prepare(self, input, hx):
        """(input as 2-d, hx list as 2-d or None, unbatched)."""
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: expected a 1-d or 2-d input, got shape "
                             f"{tuple(input.shape)}")
        unbatched = input.ndim == 1
        if unbatched:
            input = input.unsqueeze(0)
        if input.shape[1] != self.input_size:
            raise ValueError(f"{name}(input_size={self.input_size}): input of shape "
                             f"{tuple(input.shape)} has {input.shape[1]} features")
        batch = input.shape[0]
        if hx is None:
            z = T.zeros((batch, self.hidden_size), dtype=input.dtype)
            return input, None, z, unbatched
        states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
        out = []
        for s in states:
            s = s.unsqueeze(0) if unbatched and s.ndim == 1 else s
            if tuple(s.shape) != (batch, self.hidden_size):
                raise ValueError(f"{name}: hidden state of shape {tuple(s.shape)}, expected "
                                 f"{(batch, self.hidden_size)}")
            out.append(s)
        return input, out, None, unbatched

    def _params(self):
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.bias else s + ", bias=False"


class RNNCell(_CellBase):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got "
                             f"{nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, hs, z, unbatched = self._prepare(input, hx)
        cell = F.rnn_tanh_cell if self.nonlinearity == "tanh" else F.rnn_relu_cell
        h = cell(x, hs[0] if hs else z, *self._params())
        return h.squeeze(0) if unbatched else h


class LSTMCell(_CellBase):
    _gates = 4

    def forward(self, input, hx=None):
        x, hs, z, unbatched = self._prepare(input, hx)
        if hs is not None and len(hs) != 2:
            raise ValueError("LSTMCell: the state must be a tuple (h_0, c_0)")
        h, c = F.lstm_cell(x, *(hs if hs else (z, z)), *self._params())
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


class GRUCell(_CellBase):
    _gates = 3

    def forward(self, input, hx=None):
        x, hs, z, unbatched = self._prepare(input, hx)
        h = F.gru_cell(x, hs[0] if hs else z, *self._params())
        return h.squeeze(0) if unbatched else h
