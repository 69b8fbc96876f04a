"""Recurrent layers RNN, LSTM and GRU: each time step is one C cell call (sgemm over the
whole batch for the gates), with PyTorch's parameter names, layouts and initialization."""
import math

from .. import _functions as T
from . import functional as F
from . import init
from .module import Module, Parameter


class _RNNBase(Module):
    _gates = 1
    _kind = "r"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None):
        super().__init__()
        if bidirectional:
            raise ValueError(f"{type(self).__name__}: bidirectional=True is not supported")
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError(f"{type(self).__name__}: sizes and num_layers must be positive")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        g = self._gates * hidden_size
        for layer in range(num_layers):
            isz = input_size if layer == 0 else hidden_size
            setattr(self, f"weight_ih_l{layer}", Parameter(T.empty(g, isz, dtype=dtype)))
            setattr(self, f"weight_hh_l{layer}", Parameter(T.empty(g, hidden_size, dtype=dtype)))
            if bias:
                setattr(self, f"bias_ih_l{layer}", Parameter(T.empty(g, dtype=dtype)))
                setattr(self, f"bias_hh_l{layer}", Parameter(T.empty(g, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _layer_params(self, layer):
        get = lambda n: getattr(self, f"{n}_l{layer}") if self.bias or "weight" in n else None
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _step(self, x, h, c, params):
        raise NotImplementedError

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
        h0, c0 = self._initial_state(hx, batch, unbatched, input)
        layer_in = input
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            params = self._layer_params(layer)
            h, c = h0[layer], (c0[layer] if c0 is not None else None)
            outs = []
            for t in range(steps):
                h, c = self._step(layer_in[t], h, c, params)
                outs.append(h)
            h_n.append(h)
            c_n.append(c)
            layer_in = T.stack(outs, 0)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        output = layer_in
        state_h = T.stack(h_n, 0)
        state_c = T.stack(c_n, 0) if c0 is not None else None
        if self.batch_first and not unbatched:
            output = output.transpose(0, 1)
        if unbatched:
            output = output.squeeze(1)
            state_h = state_h.squeeze(1)
            state_c = state_c.squeeze(1) if state_c is not None else None
        return output, (state_h if state_c is None else (state_h, state_c))

    def _initial_state(self, hx, batch, unbatched, like):
        shape = (self.num_layers, batch, self.hidden_size)
        if hx is None:
            z = T.zeros(shape, dtype=like.dtype)
            return z, (z if self._kind == "l" else None)
        hs = hx if self._kind == "l" else (hx, None)
        if self._kind == "l" and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError("LSTM: the initial state must be a tuple (h_0, c_0)")
        h0, c0 = hs[0], hs[1]
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
        return s


class RNN(_RNNBase):
    def __init__(self, *args, nonlinearity="tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(*args, **kwargs)
        self.nonlinearity = nonlinearity

    def _step(self, x, h, c, p):
        cell = F.rnn_tanh_cell if self.nonlinearity == "tanh" else F.rnn_relu_cell
        return cell(x, h, *p), None


class LSTM(_RNNBase):
    _gates = 4
    _kind = "l"

    def _step(self, x, h, c, p):
        return F.lstm_cell(x, h, c, *p)


class GRU(_RNNBase):
    _gates = 3
    _kind = "g"

    def _step(self, x, h, c, p):
        return F.gru_cell(x, h, *p), None
