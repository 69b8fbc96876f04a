"""ddl.distributed: process groups and collectives over Gloo, with PyTorch's API.

    import ddl.distributed as dist
    dist.init_process_group("gloo")          # env:// : RANK, WORLD_SIZE, MASTER_ADDR/PORT
    t = ddl.ones(4) * dist.get_rank()
    dist.all_reduce(t)                       # in place, SUM by default

Every collective runs on the group's communication thread (Gloo calls block), in issue order;
the caller waits with the GIL released, or gets a Work handle with async_op=True. Before any
data moves, all ranks check that they issued the same collective with the same dtype and
size, so a mismatch is an error on every rank instead of a crash or a hang; a dead or silent
peer is a DistributedError naming it. docs/distributed.md has the details.
"""
import contextlib
import hashlib
import logging
import os
import time
import weakref
from datetime import timedelta

import numpy as np

from .. import _C
from .._tensor import Tensor
from .rendezvous import check_rank, local_address_towards, rendezvous
from .store import FileStore, PrefixStore, RedisStore, Store, TCPStore


class DistributedError(RuntimeError):
    """A collective failed: a peer died, closed its connection, or ranks disagreed.

    Besides the message, an error raised by the C core carries what the core recorded where it
    detected the failure (ddl_error_info in csrc/include/ddl/core.h), set on the instance; a
    field the core did not know keeps the class default below:

    rank   -- the rank of the process that reported the failure (this one), or None
    ranks  -- the ranks at fault: dead, missing or disagreeing peers (a tuple); () if none known
    op     -- the collective or store call that failed ("allreduce", "get"), or None
    seq    -- the collective's sequence number in its group, or None
    peer   -- the peer's address ("host:port") where a connection failed, or None
    errno  -- errno of the failing system call (e.g. errno.ECONNRESET), or None
    """

    rank = None
    ranks = ()
    op = None
    seq = None
    peer = None
    errno = None


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective or the rendezvous did not complete within its timeout."""


_C._set_error_types(DistributedError, DistributedTimeoutError)

DEFAULT_TIMEOUT = timedelta(seconds=300)


class ReduceOp:
    SUM = _C.COMM_SUM
    AVG = _C.COMM_AVG
    MIN = _C.COMM_MIN
    MAX = _C.COMM_MAX
    PRODUCT = _C.COMM_PRODUCT
    PRODUCT_ = PRODUCT


_OP_NAMES = {"sum": _C.COMM_SUM, "avg": _C.COMM_AVG, "min": _C.COMM_MIN, "max": _C.COMM_MAX,
             "product": _C.COMM_PRODUCT, "prod": _C.COMM_PRODUCT}


def _op(op):
    if isinstance(op, str):
        try:
            return _OP_NAMES[op.lower()]
        except KeyError:
            raise ValueError(f"unknown reduce op {op!r}") from None
    if op not in range(_C.COMM_NUM_OPS):
        raise ValueError(f"unknown reduce op {op!r}: use ddl.distributed.ReduceOp")
    return int(op)


class Work:
    """Handle of an async collective: wait() raises its error, if any."""

    def __init__(self, handle, result=None, group=None):
        self._handle, self._result, self._group = handle, result, group

    def wait(self, timeout=None):
        ms = -1 if timeout is None else int(_seconds(timeout) * 1000)
        with _global_ranks_in_errors(self._group):
            _C.work_wait(self._handle, ms)
        if self._result is not None:
            self._result()
            self._result = None
        return True

    def is_completed(self):
        return _C.work_done(self._handle)

    def times_us(self):
        """(start, end) of the collective on the comm thread, in ddl._C.now_us() time."""
        return _C.work_times(self._handle)


class _Done(Work):
    def __init__(self):
        pass

    def wait(self, timeout=None):
        return True

    def is_completed(self):
        return True


class ProcessGroup:
    """A set of ranks that run collectives together (the world, or a new_group)."""

    def __init__(self, handle, rank, size, ranks, store, timeout):
        self._handle, self._rank, self._size = handle, rank, size
        self.ranks = list(ranks)  # global ranks, in group order
        self._store, self.timeout = store, timeout
        self._requested = "auto"

    def rank(self):
        return self._rank

    def size(self):
        return self._size

    def group_rank(self, global_rank):
        try:
            return self.ranks.index(global_rank)
        except ValueError:
            raise ValueError(f"rank {global_rank} is not in this group {self.ranks}") from None

    def __repr__(self):
        return f"<ProcessGroup gloo rank {self._rank} of {self._size}>"


class _NonMember:
    """What new_group returns on ranks outside the group (PyTorch's NON_GROUP_MEMBER)."""

    def __repr__(self):
        return "<not a member of this group>"


_subgroups = weakref.WeakSet()  # live new_group groups of this process

GroupMember = type("GroupMember", (), {"WORLD": None, "NON_GROUP_MEMBER": _NonMember()})

_world = None
_world_store = None
_group_count = 0
_bind = (None, None)  # (address, interface) the world's Gloo device uses; subgroups reuse it
_transport = "auto"  # the transport mode the world was made with; subgroups inherit it


# ---- set-up --------------------------------------------------------------------------------


def _seconds(timeout):
    if isinstance(timeout, timedelta):
        return timeout.total_seconds()
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    raise ValueError(f"timeout must be a positive timedelta or number of seconds, got {timeout!r}")


def init_process_group(backend="gloo", init_method=None, timeout=DEFAULT_TIMEOUT,
                       world_size=-1, rank=-1, store=None, group_name="", transport=None):
    """Join the default process group.

    init_method: "env://" (default: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
    "tcp://host:port" (rank 0 serves the store there), "file:///path" (a directory on a
    filesystem every rank sees), "redis://host:port" (a Redis server), or pass a `store`
    (ddl/distributed/rendezvous.py reads the URL). Gloo binds to this machine's address on the
    route to the master; GLOO_SOCKET_IFNAME (or DDL_SOCKET_IFNAME) names a network interface
    instead.

    transport: how the group moves data: "auto" (the default; also DDL_COMM_TRANSPORT) uses
    shared memory when every rank runs on one host (same hostname, boot id and network
    namespace, or the same DDL_HOST_ID) and Gloo over TCP otherwise; "gloo" or "shm" force one
    ("shm" fails when the ranks span hosts). get_backend_info() says which one a group uses.
    """
    global _world, _world_store, _group_count, _bind, _transport
    if _world is not None:
        raise RuntimeError("init_process_group: the default process group is already initialized;"
                           " call destroy_process_group() first")
    if backend in ("nccl", "NCCL", "cpu:gloo,cuda:nccl"):  # GPU scripts, DDL_CUDA_AS_CPU only
        from .._device import cuda_as_cpu, no_gpu_error

        if not cuda_as_cpu():
            raise no_gpu_error(f"init_process_group(backend={backend!r})") from None
        backend = "gloo"
    if backend not in ("gloo", None, "GLOO"):
        raise ValueError(f"init_process_group: backend {backend!r} is not available: ddl "
                         "runs on Gloo (CPU)")
    mode = _transport_mode(transport)
    secs = _seconds(timeout)
    ms = int(secs * 1000)
    if store is None:
        store, rank, world_size, master_addr, master_port = rendezvous(
            init_method, rank, world_size, secs, group_name)
    else:
        check_rank(rank, world_size)
        master_addr, master_port = os.environ.get("MASTER_ADDR", "127.0.0.1"), None
    iface = os.environ.get("DDL_SOCKET_IFNAME") or os.environ.get("GLOO_SOCKET_IFNAME")
    host = None if iface else local_address_towards(master_addr, master_port)
    prefix = f"pg/{group_name or 'default'}"
    _try_store(store.add, f"{prefix}/ddl/join_started", 1)
    try:
        handle = _C.pg_new(store._h(), prefix, rank, world_size, host, iface, ms, mode)
    except Exception:
        _after_failed_join(store, prefix, secs)
        raise
    _world = ProcessGroup(handle, rank, world_size, range(world_size), store, secs)
    _world._requested = mode
    _world_store = store
    _group_count = 0
    _bind = (host, iface)
    _transport = mode
    GroupMember.WORLD = _world
    _set_num_threads_from_env()
    _log_transport_once(_world)


# ---- the transport ---------------------------------------------------------------------------

_TRANSPORTS = ("auto", "gloo", "shm")
_logged = False


def _transport_mode(transport):
    """The transport mode asked for: the argument, else DDL_COMM_TRANSPORT, else "auto"."""
    where = "transport"
    if transport is None:
        transport, where = os.environ.get("DDL_COMM_TRANSPORT") or "auto", "DDL_COMM_TRANSPORT"
    if not isinstance(transport, str) or transport.lower() not in _TRANSPORTS:
        raise ValueError(f"{where}={transport!r}: use one of {', '.join(_TRANSPORTS)}")
    return transport.lower()


def _log_transport_once(g):
    global _logged
    if _logged:
        return
    _logged = True
    info = get_backend_info(g)
    logging.getLogger("ddl.distributed").info(
        "rank %d of %d: transport %s (asked: %s), %d host(s)", g.rank(), g.size(),
        info["transport"], info["requested"], info["hosts"])


def get_backend_info(group=None):
    """How a group moves its data: {"backend": "gloo", "transport": "shm" or "gloo",
    "requested": the mode it was made with ("auto", "gloo", "shm"), "hosts": how many hosts
    its ranks run on}."""
    g = _group(group)
    if g is None:
        raise ValueError("get_backend_info: this rank is not a member of the group")
    name, hosts = _C.pg_transport(g._handle)
    return {"backend": "gloo", "transport": name, "requested": g._requested, "hosts": hosts}


def _try_store(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 (best effort: the store may be gone)
        return None


def _after_failed_join(store, prefix, secs):
    """This rank's join failed. Count it in the store; the process serving the store (rank 0
    with env:// and tcp://) keeps serving until every rank that started joining has failed
    too (at most 5 s), so that each reads the same answer -- which ranks never came, whose
    world size differs -- instead of finding the store gone with rank 0."""
    _try_store(store.add, f"{prefix}/ddl/join_failed", 1)
    if not getattr(store, "is_master", False):
        return
    deadline = time.monotonic() + min(secs, 5.0)
    while time.monotonic() < deadline:
        started = _try_store(store.add, f"{prefix}/ddl/join_started", 0)
        failed = _try_store(store.add, f"{prefix}/ddl/join_failed", 0)
        if started is None or failed is None or failed >= started:
            break
        time.sleep(0.02)
    store.close()


def _set_num_threads_from_env():
    n = os.environ.get("DDL_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        _C.set_num_threads(int(n))


def is_available():
    return True


def is_initialized():
    return _world is not None


def _require():
    if _world is None:
        raise RuntimeError("ddl.distributed: the default process group is not initialized; call "
                           "ddl.distributed.init_process_group() first")
    return _world


def get_rank(group=None):
    if _world is None and group is None:
        return 0
    g = group or _require()
    return -1 if isinstance(g, _NonMember) else g.rank()


def get_world_size(group=None):
    if _world is None and group is None:
        return 1
    g = group or _require()
    return -1 if isinstance(g, _NonMember) else g.size()


def get_backend(group=None):
    _require()
    return "gloo"


def destroy_process_group(group=None):
    """Leave the group (the default one: tear everything down)."""
    global _world, _world_store
    if group is not None and group is not _world:
        if isinstance(group, ProcessGroup) and group._handle is not None:
            _C.pg_free(group._handle)
            group._handle = None
        return
    if _world is None:
        return
    for g in list(_subgroups):  # PyTorch: no collective on any group after the world goes
        if g._handle is not None:
            _C.pg_free(g._handle)
            g._handle = None
    _subgroups.clear()
    _C.pg_free(_world._handle)
    _world._handle = None
    store, _world, _world_store = _world_store, None, None
    GroupMember.WORLD = None
    close = getattr(store, "close", None)
    if close is not None:
        close()


def new_group(ranks=None, timeout=None, backend=None, transport=None):
    """A group of the given global ranks. Every rank of the world must call it (in the same
    order as the other new_group calls); ranks outside get GroupMember.NON_GROUP_MEMBER.
    transport: as for init_process_group (None: the world's mode); the group chooses for
    itself (shared memory when its own ranks share a host)."""
    global _group_count
    world = _require()
    mode = _transport if transport is None else _transport_mode(transport)
    ranks = sorted(set(range(world.size()) if ranks is None else ranks))
    for r in ranks:
        if not 0 <= r < world.size():
            raise ValueError(f"new_group: rank {r} is outside the world [0, {world.size()})")
    _group_count += 1
    me = world.rank()
    if me not in ranks:
        return GroupMember.NON_GROUP_MEMBER
    secs = _seconds(timeout) if timeout is not None else world.timeout
    # the world's address or interface: with tcp:// (no MASTER_ADDR) the route to the master
    # is known only from init_process_group, and a subgroup on another address than its
    # world's would not reach other machines
    host, iface = _bind
    # the members are part of the key prefix: ranks that called new_group in different orders
    # (or skipped one) then wait in different groups, and the join times out naming the
    # missing ranks, instead of ranks of two groups meeting under one prefix
    members = ",".join(map(str, ranks))
    if len(members) > 64:
        members = hashlib.sha1(members.encode()).hexdigest()
    group = ProcessGroup(None, ranks.index(me), len(ranks), ranks, _world_store, secs)
    with _global_ranks_in_errors(group):
        handle = _C.pg_new(_world_store._h(), f"pg/group{_group_count}/{members}",
                           ranks.index(me), len(ranks), host, iface, int(secs * 1000), mode)
    group._handle = handle
    _subgroups.add(group)  # issue 13: destroy_process_group() frees them with the world
    group._requested = mode
    return group


# ---- collectives ----------------------------------------------------------------------------


def _group(group):
    g = group if group is not None else _require()
    if isinstance(g, _NonMember):
        return None
    if g._handle is None:
        raise RuntimeError("this process group was destroyed")
    return g


def _buf(t, who, writable=True):
    """A contiguous ddl tensor sharing memory with t (a Tensor or a NumPy array)."""
    if isinstance(t, Tensor):
        if not t.is_contiguous():
            if not writable:  # an input only (all_gather's, reduce_scatter's): a copy does
                return t.contiguous()
            raise ValueError(f"{who}: tensors must be contiguous (call .contiguous() first)")
        return t
    if isinstance(t, np.ndarray):
        if not (t.flags.c_contiguous and (t.flags.writeable or not writable)):
            raise ValueError(f"{who}: arrays must be C-contiguous and writable")
        return _C.from_buffer(t)
    raise TypeError(f"{who}: expected a ddl Tensor or a NumPy array, got {type(t).__name__}")


def _ms(timeout, g):
    return int(_seconds(timeout) * 1000) if timeout is not None else int(g.timeout * 1000)


@contextlib.contextmanager
def _global_ranks_in_errors(g):
    """Errors from a subgroup name its ranks by their index in the group: say which global
    ranks those are, in the message and in the structured fields (rank, ranks)."""
    try:
        yield
    except DistributedError as e:
        if g is None or g is _world or list(g.ranks) == list(range(len(g.ranks))):
            raise
        new = type(e)(f"{e} [in the group of global ranks {g.ranks}, group rank i is global "
                      f"rank {g.ranks}[i]]")
        new.__dict__.update(e.__dict__)  # op, seq, peer, errno as the core recorded them
        glob = list(g.ranks)
        if e.rank is not None and 0 <= e.rank < len(glob):
            new.rank = glob[e.rank]
        new.ranks = tuple(glob[r] if 0 <= r < len(glob) else r for r in e.ranks)
        raise new from None


def _run(kind, g, a, b, root, op, timeout, async_op, after=None):
    with _global_ranks_in_errors(g):
        h = _C.collective(kind, g._handle, a, b, root, op, _ms(timeout, g), bool(async_op))
    if async_op:
        return Work(h, after, g)
    if after is not None:
        after()
    return None


def _skip(async_op):
    return _Done() if async_op else None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("allreduce", g, _buf(tensor, "all_reduce"), None, 0, _op(op), timeout, async_op)


def broadcast(tensor, src=0, group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("broadcast", g, _buf(tensor, "broadcast"), None, g.group_rank(src), 0, timeout,
                async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False,
                           timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("allgather", g, _buf(output_tensor, "all_gather"),
                _buf(input_tensor, "all_gather", False), 0, 0, timeout, async_op)


def _stacked_like(tensors, who):
    first = tensors[0]
    shape = (len(tensors),) + tuple(first.shape)
    dtype = first.dtype
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(first.shape) or t.dtype != dtype:
            raise ValueError(f"{who}: tensor {i} has shape {tuple(t.shape)} / {t.dtype}; all "
                             f"must match tensor 0's {tuple(first.shape)} / {dtype}")
    code = dtype.code if isinstance(first, Tensor) else {
        np.dtype(np.float32): _C.FLOAT32, np.dtype(np.float64): _C.FLOAT64,
        np.dtype(np.int64): _C.INT64}.get(np.dtype(dtype))
    if code is None:
        raise TypeError(f"{who}: unsupported dtype {dtype}")
    return _C.full(shape, None, code)


def _copy_into(dst, src):
    if isinstance(dst, Tensor):
        with _no_grad():
            dst.copy_(src)
    else:
        dst[...] = src.numpy()


def _one_per_rank(tensors, g, who, name):
    if len(tensors) != g.size():
        raise ValueError(f"{who}: {name} has {len(tensors)} entries for a group of {g.size()}")


def _packed(tensors, who):
    """tensors (Tensors or arrays, one shape and dtype) stacked into one new tensor."""
    packed = _stacked_like(tensors, who)
    for i, t in enumerate(tensors):
        _copy_into(packed[i], t if isinstance(t, Tensor) else _C.from_buffer(t))
    return packed


def _unpack_into(tensors, stacked):
    """A function copying stacked[i] into tensors[i], run once the collective is done."""

    def scatter_back():
        for i, t in enumerate(tensors):
            _copy_into(t, stacked[i])

    return scatter_back


def _no_grad():
    from ..autograd import no_grad

    return no_grad()


def all_gather(tensor_list, tensor, group=None, async_op=False, timeout=None):
    """tensor_list[i] = rank i's tensor."""
    g = _group(group)
    if g is None:
        return _skip(async_op)
    _one_per_rank(tensor_list, g, "all_gather", "tensor_list")
    out = _stacked_like(tensor_list, "all_gather")
    src = _buf(tensor, "all_gather", False)
    return _run("allgather", g, out, src, 0, 0, timeout, async_op,
                _unpack_into(tensor_list, out))


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False,
                          timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("reduce_scatter", g, _buf(output, "reduce_scatter"),
                _buf(input, "reduce_scatter", False), 0, _op(op), timeout, async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False,
                   timeout=None):
    """output = reduction over ranks of their input_list[my rank]."""
    g = _group(group)
    if g is None:
        return _skip(async_op)
    _one_per_rank(input_list, g, "reduce_scatter", "input_list")
    packed = _packed(input_list, "reduce_scatter")
    return _run("reduce_scatter", g, _buf(output, "reduce_scatter"), packed, 0, _op(op), timeout,
                async_op)


def reduce(tensor, dst=0, op=ReduceOp.SUM, group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("reduce", g, _buf(tensor, "reduce"), None, g.group_rank(dst), _op(op), timeout,
                async_op)


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    root = g.group_rank(dst)
    src = _buf(tensor, "gather", False)
    if g.rank() == root:
        if gather_list is None or len(gather_list) != g.size():
            raise ValueError(f"gather: the destination needs a gather_list of {g.size()} tensors")
        out = _stacked_like(gather_list, "gather")
        return _run("gather", g, out, src, root, 0, timeout, async_op,
                    _unpack_into(gather_list, out))
    return _run("gather", g, None, src, root, 0, timeout, async_op)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    root = g.group_rank(src)
    out = _buf(tensor, "scatter")
    packed = None
    if g.rank() == root:
        if scatter_list is None or len(scatter_list) != g.size():
            raise ValueError(f"scatter: the source needs a scatter_list of {g.size()} tensors")
        packed = _packed(scatter_list, "scatter")
    return _run("scatter", g, out, packed, root, 0, timeout, async_op)


def all_to_all_single(output, input, group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("alltoall", g, _buf(output, "all_to_all"), _buf(input, "all_to_all", False), 0,
                0, timeout, async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False,
               timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    n = g.size()
    if len(output_tensor_list) != n or len(input_tensor_list) != n:
        raise ValueError(f"all_to_all: both lists need {n} tensors")
    packed = _packed(input_tensor_list, "all_to_all")
    out = _stacked_like(output_tensor_list, "all_to_all")
    return _run("alltoall", g, out, packed, 0, 0, timeout, async_op,
                _unpack_into(output_tensor_list, out))


def barrier(group=None, async_op=False, timeout=None):
    g = _group(group)
    if g is None:
        return _skip(async_op)
    return _run("barrier", g, None, None, 0, 0, timeout, async_op)


from .launch import launch

__all__ = [
    "DistributedError", "DistributedTimeoutError", "FileStore", "GroupMember", "PrefixStore",
    "ProcessGroup", "RedisStore", "ReduceOp", "Store", "TCPStore", "Work", "all_gather",
    "all_gather_into_tensor", "all_reduce", "all_to_all", "all_to_all_single", "barrier",
    "broadcast", "destroy_process_group", "gather", "get_backend", "get_backend_info",
    "get_rank", "get_world_size",
    "init_process_group", "is_available", "is_initialized", "launch", "new_group", "reduce",
    "reduce_scatter", "reduce_scatter_tensor", "scatter",
]
