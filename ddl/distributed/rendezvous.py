"""Rendezvous: from init_process_group's init_method URL (or environment) to a store.

    env://                 RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; rank 0 serves a TCPStore
    tcp://host:port        rank 0 serves a TCPStore there
    file:///path           a FileStore in a directory every rank sees
    redis://host[:port]    a RedisStore (keys prefixed by the job: group_name, DDL_JOB_ID or
                           MASTER_PORT)

`rendezvous` checks the rank and world size it ends with and makes the store; the process
group then joins through it (ddl/distributed/__init__.py).
"""
import os
import socket
import urllib.parse
from datetime import timedelta

from .store import FileStore, PrefixStore, RedisStore, TCPStore

_SCHEMES = "env://, tcp://host:port, file:///path or redis://host:port"


def _env_int(name):
    v = os.environ.get(name)
    if v is None:
        raise ValueError(f"init_process_group(env://): environment variable {name} is not set "
                         "(launch with `python -m ddl.run`, or pass rank= and world_size=)")
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"init_process_group: {name}={v!r} is not an integer") from None


def _parse(init_method, rank, world_size, master_addr):
    """(url, rank, world_size, master_addr, master_port) from init_method and the environment."""
    master_port = None
    url = urllib.parse.urlparse(init_method)
    if url.scheme == "env":
        if rank < 0:
            rank = _env_int("RANK")
        if world_size < 0:
            world_size = _env_int("WORLD_SIZE")
        if "MASTER_ADDR" not in os.environ:
            raise ValueError("init_process_group(env://): MASTER_ADDR is not set")
        master_port = _env_int("MASTER_PORT")
    elif url.scheme == "tcp":
        if not url.hostname or not url.port:
            raise ValueError(f"init_process_group: {init_method!r} needs tcp://host:port")
        master_addr, master_port = url.hostname, url.port
    elif url.scheme == "redis":
        if not url.hostname:
            raise ValueError(f"init_process_group: {init_method!r} needs redis://host[:port]")
        master_addr, master_port = url.hostname, url.port or 6379
    elif url.scheme != "file":
        raise ValueError(f"init_process_group: unknown init_method scheme {url.scheme!r} in "
                         f"{init_method!r} (use {_SCHEMES})")
    if world_size < 0 or rank < 0:
        raise ValueError("init_process_group: rank and world_size are needed with "
                         f"{url.scheme}:// (got rank={rank}, world_size={world_size})")
    return url, rank, world_size, master_addr, master_port


def check_rank(rank, world_size):
    if world_size < 1:
        raise ValueError(f"init_process_group: world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank {rank} is outside [0, {world_size})")


def _store(url, rank, world_size, master_addr, master_port, secs, group_name):
    if url.scheme == "file":
        return FileStore(url.path, world_size)
    if url.scheme == "redis":
        # keys of separate jobs on one Redis server must not collide: group_name (or the
        # DDL_JOB_ID / MASTER_PORT environment) names the job
        job = group_name or os.environ.get("DDL_JOB_ID") or os.environ.get("MASTER_PORT", "0")
        return PrefixStore(f"ddl-job-{job}", RedisStore(master_addr, master_port,
                                                        timedelta(seconds=secs)))
    if not 1 <= master_port <= 65535:
        raise ValueError(f"init_process_group: master port {master_port} is out of range")
    # no wait_for_workers: the process group's own join names the ranks that never come and
    # catches ranks started with different world sizes (the store's count would only say
    # "2 of 3 connected", or be satisfied by the wrong ranks)
    try:
        return TCPStore(master_addr, master_port, world_size, is_master=(rank == 0),
                        timeout=timedelta(seconds=secs), wait_for_workers=False)
    except TimeoutError as e:
        from . import DistributedTimeoutError

        # only a client times out here: nothing listens where rank 0 should serve
        raise DistributedTimeoutError(
            f"init_process_group: rank 0 never came up: nothing served the rendezvous "
            f"store at {master_addr}:{master_port} within {secs:g} s ({e})") from None


def rendezvous(init_method, rank, world_size, secs, group_name):
    """(store, rank, world_size, master_addr, master_port) for init_process_group without a
    store: init_method parsed (None = env://), rank and world size checked, store made."""
    master_addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    url, rank, world_size, master_addr, master_port = _parse(init_method or "env://", rank,
                                                             world_size, master_addr)
    check_rank(rank, world_size)
    store = _store(url, rank, world_size, master_addr, master_port, secs, group_name)
    return store, rank, world_size, master_addr, master_port


def local_address_towards(host, port):
    """The address of this machine's interface on the route to host (for Gloo's device)."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ValueError(f"init_process_group: cannot resolve master address {host!r}: {e}") from None
    addr = infos[0][4][0]
    if addr.startswith("127."):
        return addr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((addr, port or 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"
