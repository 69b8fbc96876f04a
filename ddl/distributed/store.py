"""Rendezvous key-value stores with PyTorch's API: TCPStore, FileStore, PrefixStore.

Ranks use a store to find each other before they talk (the process group puts its addresses
there), and user code may use one on its own as a small shared dictionary::

    from datetime import timedelta
    from ddl.distributed.store import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True)            # rank 0: serves and connects
    other = TCPStore("127.0.0.1", store.port, timeout=timedelta(seconds=30))   # elsewhere
    other.set("answer", "42")
    store.get("answer")                                          # b'42' (waits for the key)
    store.add("counter", 1)                                      # 1, atomically

Each store wraps a handle of the C core (csrc/include/ddl/store.h); every call is one C call with the GIL
released. Keys are str (UTF-8, at most 4096 bytes, no NUL); values str (stored as UTF-8) or
bytes, returned as bytes. `get` and `wait` wait up to the store's timeout for missing keys and
then raise a TimeoutError naming them. docs/store.md describes the wire format and limits.
"""
import math
import os
from datetime import timedelta

from .. import _C

__all__ = ["FileStore", "PrefixStore", "RedisStore", "Store", "TCPStore"]

_DEFAULT_TIMEOUT = timedelta(seconds=300)
_MAX_KEY_BYTES = 4096
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# keys TCPStore uses to count workers joining (they show up in num_keys, as in PyTorch)
_JOINED_KEY = "__ddl/tcpstore/joined"
_READY_KEY = "__ddl/tcpstore/ready"
# key FileStore uses to count ranks done with the directory
_FINISHED_KEY = "__ddl/filestore/finished"


def _timeout_ms(timeout, who):
    """A timedelta (or seconds) as whole milliseconds; -1 for an infinite one."""
    if isinstance(timeout, timedelta):
        secs = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        secs = float(timeout)
    else:
        raise TypeError(f"{who}: timeout must be a datetime.timedelta, got "
                        f"{type(timeout).__name__}")
    if math.isnan(secs) or secs < 0:
        raise ValueError(f"{who}: timeout must be >= 0, got {timeout!r}")
    if math.isinf(secs):
        return -1
    return min(int(secs * 1000), 2**62)


def _key(key, who):
    if not isinstance(key, str):
        raise TypeError(f"{who}: key must be str, got {type(key).__name__}")
    if "\0" in key:
        raise ValueError(f"{who}: key {key!r} contains a NUL character")
    n = len(key.encode("utf-8", "surrogatepass"))
    if n > _MAX_KEY_BYTES:
        raise ValueError(f"{who}: key is {n} bytes long; keys may be at most {_MAX_KEY_BYTES}")
    return key


def _keys(keys, who):
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        raise TypeError(f"{who}: keys must be a list of str, got {type(keys).__name__}")
    if not keys:
        raise ValueError(f"{who}: keys is empty")
    return [_key(k, who) for k in keys]


def _value(value, who, name="value"):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{who}: {name} must be str or bytes, got {type(value).__name__}")


class Store:
    """A key-value store shared by the ranks of a job (PyTorch's torch.distributed.Store).

    Subclasses set `_handle` to a C store handle; all methods below work on any kind."""

    def __init__(self, handle=None, timeout=_DEFAULT_TIMEOUT):
        self._handle = handle
        self._timeout = timedelta(0)
        self._timeout_ms = 0
        self.set_timeout(timeout)

    def _h(self):
        h = self._handle
        if h is None:
            raise RuntimeError(f"{type(self).__name__} is closed (or has no C store behind it)")
        return h

    @property
    def timeout(self):
        """How long get/wait wait for missing keys (and other calls for an answer)."""
        return self._timeout

    def set_timeout(self, timeout):
        ms = _timeout_ms(timeout, "set_timeout")
        if isinstance(timeout, timedelta):
            self._timeout = timeout
        else:
            self._timeout = timedelta.max if ms < 0 else timedelta(milliseconds=ms)
        self._timeout_ms = ms
        if self._handle is not None:
            _C.store_set_timeout(self._handle, ms)

    def set(self, key, value):
        """Set key to value (str or bytes), replacing any value it had."""
        _C.store_set(self._h(), _key(key, "set"), _value(value, "set"))

    def get(self, key):
        """The value of key as bytes, waiting up to the timeout for it to be set."""
        return _C.store_get(self._h(), _key(key, "get"), self._timeout_ms)

    def add(self, key, amount):
        """Atomically add amount to the integer at key (missing = 0); returns the new value."""
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"add: amount must be int, got {type(amount).__name__}")
        if not _INT64_MIN <= amount <= _INT64_MAX:
            raise ValueError(f"add: amount {amount} does not fit in int64")
        return _C.store_add(self._h(), _key(key, "add"), amount)

    def compare_set(self, key, expected_value, desired_value):
        """Set key to desired_value if it holds expected_value (or is missing and expected_value
        is empty); returns the value now stored (PyTorch's semantics: for a missing key and a
        non-empty expected_value, nothing is stored and expected_value comes back)."""
        return _C.store_compare_set(self._h(), _key(key, "compare_set"),
                                    _value(expected_value, "compare_set", "expected_value"),
                                    _value(desired_value, "compare_set", "desired_value"))

    def wait(self, keys, timeout=None):
        """Wait until every key in keys is set; TimeoutError (naming them) after timeout
        (default: the store's)."""
        ms = self._timeout_ms if timeout is None else _timeout_ms(timeout, "wait")
        _C.store_wait(self._h(), _keys(keys, "wait"), ms)

    def check(self, keys):
        """Whether every key in keys is set now (no waiting)."""
        return _C.store_check(self._h(), _keys(keys, "check"))

    def delete_key(self, key):
        """Delete key; whether it existed."""
        return _C.store_delete(self._h(), _key(key, "delete_key"))

    def num_keys(self):
        """Number of keys in the store (including the few a store or group uses itself)."""
        return _C.store_num_keys(self._h())

    def __repr__(self):
        return f"<{type(self).__name__} timeout={self._timeout}>"


class TCPStore(Store):
    """A store served over TCP by one process (the master) to every rank.

    is_master=True starts the server in this process, listening on host_name only ("0.0.0.0"
    for every interface), and connects to it like any client; port 0 picks a free port, read
    back from `.port`. Clients retry connecting until `timeout`, so they may start first.
    With world_size given and wait_for_workers, the master waits (up to timeout) until
    world_size clients, itself included, have connected."""

    def __init__(self, host_name, port, world_size=None, is_master=False,
                 timeout=_DEFAULT_TIMEOUT, wait_for_workers=True):
        if not isinstance(host_name, str) or not host_name:
            raise (TypeError if not isinstance(host_name, str) else ValueError)(
                f"TCPStore: host_name must be a non-empty str, got {host_name!r}")
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"TCPStore: port must be int, got {type(port).__name__}")
        if not (0 if is_master else 1) <= port <= 65535:
            raise ValueError(f"TCPStore: port must be in [{0 if is_master else 1}, 65535], got "
                             f"{port}" + ("" if is_master or port else
                                          " (port 0, any free port, is for the master only)"))
        if world_size is not None and (not isinstance(world_size, int)
                                       or isinstance(world_size, bool)):
            raise TypeError(f"TCPStore: world_size must be int or None, got "
                            f"{type(world_size).__name__}")
        if world_size is not None and world_size < 1 and world_size != -1:
            raise ValueError(f"TCPStore: world_size must be >= 1, got {world_size}")
        if world_size == -1:  # PyTorch's "unknown"
            world_size = None
        ms = _timeout_ms(timeout, "TCPStore")
        self._handle = None
        self._server = None
        if is_master:
            self._server, port = _C.tcpstore_server_start(host_name, port)
        try:
            handle = _C.store_connect_tcp(host_name, port, ms)
        except BaseException:
            self.close()
            raise
        super().__init__(handle, timeout)
        self.host = host_name
        self.port = port
        self.world_size = world_size
        self.is_master = bool(is_master)
        if world_size is not None and wait_for_workers:
            try:
                self._join(world_size)
            except BaseException:
                self.close()
                raise

    def _join(self, world_size):
        if self.add(_JOINED_KEY, 1) == world_size:
            self.set(_READY_KEY, b"1")
        if not self.is_master:
            return
        try:
            self.wait([_READY_KEY])
        except TimeoutError as e:
            joined = int(self.get(_JOINED_KEY)) if self.check([_JOINED_KEY]) else 0
            raise type(e)(f"TCPStore: only {joined} of {world_size} workers connected to "
                          f"{self.host}:{self.port} within {self.timeout}") from None

    def close(self):
        """Disconnect; the master also stops its server (its clients' calls then fail)."""
        self._handle = None  # the C handle goes with the last call using it
        server, self._server = self._server, None
        if server is not None:
            _C.tcpstore_server_stop(server)

    def __repr__(self):
        return (f"<TCPStore {getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}"
                f"{' master' if getattr(self, 'is_master', False) else ''}>")


class FileStore(Store):
    """A store in a directory on a filesystem every rank sees (one file per key).

    Unlike PyTorch's FileStore, file_name names a directory (created if missing). A directory
    used before is fine: keys are overwritten in place. With world_size > 0, the last of the
    world_size stores to close() removes the store's files (as PyTorch removes its file)."""

    def __init__(self, file_name, world_size=-1):
        try:
            path = os.fspath(file_name)
        except TypeError:
            raise TypeError(f"FileStore: file_name must be a path, got "
                            f"{type(file_name).__name__}") from None
        if not isinstance(world_size, int) or isinstance(world_size, bool):
            raise TypeError(f"FileStore: world_size must be int, got {type(world_size).__name__}")
        if world_size == 0 or world_size < -1:
            raise ValueError(f"FileStore: world_size must be -1 (unknown) or >= 1, got "
                             f"{world_size}")
        self._handle = None
        super().__init__(_C.store_open_file(path), _DEFAULT_TIMEOUT)
        self.path = path
        self.world_size = world_size

    def close(self):
        """Stop using the store; with world_size > 0 the last rank to close cleans up."""
        handle, self._handle = self._handle, None
        if handle is None or self.world_size < 1:
            return
        if _C.store_add(handle, _FINISHED_KEY, 1) >= self.world_size:
            _C.store_file_remove(self.path)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 (at exit or on a vanished filesystem: nothing to do)
            pass

    def __repr__(self):
        return f"<FileStore {getattr(self, 'path', '?')!r}>"


class RedisStore(Store):
    """A store on a Redis server (Gloo's RedisStore), for clusters that already run one.

    It offers set, get, wait and check; add, compare_set, delete_key and num_keys raise
    ValueError (Gloo's RedisStore does not implement them)."""

    def __init__(self, host, port=6379, timeout=_DEFAULT_TIMEOUT):
        if not isinstance(host, str) or not host:
            raise ValueError(f"RedisStore: host must be a non-empty str, got {host!r}")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"RedisStore: port must be in [1, 65535], got {port!r}")
        self._handle = None
        super().__init__(_C.store_open_redis(host, port), timeout)
        self.host, self.port = host, port

    def __repr__(self):
        return f"<RedisStore {self.host}:{self.port}>"


class PrefixStore(Store):
    """Every key of `store` prefixed with "<prefix>/" (PyTorch's PrefixStore)."""

    def __init__(self, prefix, store):
        if not isinstance(prefix, str):
            raise TypeError(f"PrefixStore: prefix must be str, got {type(prefix).__name__}")
        if "\0" in prefix:
            raise ValueError("PrefixStore: prefix contains a NUL character")
        if not isinstance(store, Store):
            raise TypeError(f"PrefixStore: store must be a ddl Store, got "
                            f"{type(store).__name__}")
        self._handle = None
        super().__init__(_C.store_prefix(prefix, store._h()), store.timeout)
        self.prefix = prefix
        self.underlying_store = store

    def __repr__(self):
        return f"<PrefixStore {self.prefix!r} of {self.underlying_store!r}>"
