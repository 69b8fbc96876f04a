"""ddl.Generator: a random generator of its own, next to the global one (ddl.manual_seed).

The C core has one counter-based Philox generator whose whole state is (seed, offset). A
Generator keeps its own (seed, offset) and, for the duration of one draw, installs it as the
global state and restores the global state afterwards (under a lock, so concurrent draws from
Python threads do not mix states). Same seed, same numbers, on any machine.
"""
import os
import threading

from . import _C

_lock = threading.RLock()


class Generator:
    """Generator(device="cpu"); g.manual_seed(s) returns g, as PyTorch's does."""

    _ddl_generator = True

    def __init__(self, device="cpu"):
        from ._device import check

        check(device, "Generator")
        self._state = (int.from_bytes(os.urandom(8), "little") >> 1, 0)
        self._initial = self._state[0]

    def manual_seed(self, seed):
        self._state = (int(seed) & (2**64 - 1), 0)
        self._initial = self._state[0]
        return self

    def seed(self):
        s = int.from_bytes(os.urandom(8), "little") >> 1
        self.manual_seed(s)
        return s

    def initial_seed(self):
        return self._initial

    def get_state(self):
        return self._state

    def set_state(self, state):
        self._state = (int(state[0]), int(state[1]))

    @property
    def device(self):
        from ._device import CPU

        return CPU


class _DefaultGenerator(Generator):
    """ddl.default_generator: the global state itself."""

    def __init__(self):
        pass

    def manual_seed(self, seed):
        _C.manual_seed(int(seed) & (2**64 - 1))
        return self

    def seed(self):
        s = int.from_bytes(os.urandom(8), "little") >> 1
        _C.manual_seed(s)
        return s

    def initial_seed(self):
        return _C.initial_seed()

    def get_state(self):
        return _C.rng_state()

    def set_state(self, state):
        _C.rng_state(int(state[0]), int(state[1]))


default_generator = _DefaultGenerator()


def draw(generator, fn, *args):
    """fn(*args) drawing from `generator` (None or the default: the global state)."""
    if generator is None or isinstance(generator, _DefaultGenerator):
        return fn(*args)
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be a ddl.Generator, got {type(generator).__name__}")
    with _lock:
        saved = _C.rng_state()
        _C.rng_state(*generator._state)
        try:
            return fn(*args)
        finally:
            generator._state = _C.rng_state()
            _C.rng_state(*saved)
