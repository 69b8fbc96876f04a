"""The command line of ddl.run (torchrun's flags and spellings), the checks of its values
(ports, addresses that must resolve, the network interface of GLOO_SOCKET_IFNAME /
DDL_SOCKET_IFNAME) and the address helpers they need. Standard library only."""
import argparse
import fcntl
import ipaddress
import os
import socket
import struct


def _usable_cores():
    # the CPUs this process may run on (taskset, cgroup cpusets), not the machine's total
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _interface_address(name):
    """The IPv4 address of network interface name (SIOCGIFADDR); ValueError naming the
    interfaces there are when it does not exist or has no IPv4 address."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        have = ", ".join(n for _, n in socket.if_nameindex())
        raise ValueError(f"network interface {name!r} does not exist (this host has: {have})") \
            from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise ValueError(f"network interface {name!r} has no IPv4 address") from None
    return socket.inet_ntoa(raw[20:24])


def _check_host(text, what):
    """text if it is an IPv4 address or a name that resolves; ValueError otherwise."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} is not a host name or address")
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    try:
        socket.getaddrinfo(text, None, socket.AF_INET)
    except socket.gaierror as e:
        raise ValueError(f"{what} {text!r} does not resolve ({e.strerror})") from None
    return text


def _endpoint(text, default_port):
    """(host, port) from 'host[:port]'."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--rdzv-endpoint {text!r}: the port must be in [1, 65535]")
    return _check_host(host, "--rdzv-endpoint host"), int(port)


def _typed(convert, expected):
    """An argparse type: convert(text), or a usage error saying what was expected."""
    def parse(text):
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


_int = _typed(int, "an integer")
_seconds = _typed(float, "seconds")


def _parse_nnodes(text):
    lo, sep, hi = text.partition(":")
    lo, hi = int(lo), int(hi if sep else lo)
    if lo < 1 or hi < lo:
        raise ValueError(text)
    return lo, hi


_nnodes = _typed(_parse_nnodes, "N or MIN:MAX with 1 <= MIN <= MAX")
_nproc = _typed(lambda text: _usable_cores() if text == "auto" else int(text),
                "an integer or 'auto'")


def _parser():
    p = argparse.ArgumentParser(
        prog="ddlrun",
        description="Launch a ddl training script on one or more CPU worker processes per "
                    "node, with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and friends set "
                    "for ddl.distributed.init_process_group('gloo').",
        epilog="Everything after the script (or -m module) is passed to it unchanged.")
    p.add_argument("--nproc-per-node", "--nproc_per_node", type=_nproc, default=1,
                   metavar="N|auto",
                   help="worker processes on this node (default 1; auto = usable CPU cores)")
    p.add_argument("--nnodes", type=_nnodes, default=(1, 1), metavar="N|MIN:MAX",
                   help="number of nodes (launcher invocations) in the job (default 1); "
                        "MIN:MAX under c10d: start with the nodes there once MIN came and "
                        "no one else for last_call_timeout s (the size then stays fixed)")
    p.add_argument("--node-rank", "--node_rank", type=_int, default=None,
                   help="this node's index in [0, nnodes) (default 0; under c10d assigned "
                        "on arrival and this flag is ignored)")
    p.add_argument("--master-addr", "--master_addr", default=None,
                   help="address of the node running rank 0 (default 127.0.0.1; static only)")
    p.add_argument("--master-port", "--master_port", type=_int, default=None,
                   help="port of rank 0's store (default: a free port; required when "
                        "nnodes > 1; static only)")
    p.add_argument("--rdzv-backend", "--rdzv_backend", choices=("static", "c10d"),
                   default="static",
                   help="static: fixed node ranks and MASTER_ADDR:PORT (default); c10d: the "
                        "launchers meet at --rdzv-endpoint, node ranks assigned on arrival, "
                        "a failure anywhere restarts (or stops) every node's workers")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint", default=None, metavar="HOST[:PORT]",
                   help="c10d: where the launchers meet (the launcher on HOST serves it; "
                        "port 29400 by default); static: MASTER_ADDR:MASTER_PORT")
    p.add_argument("--rdzv-id", "--rdzv_id", default="none", metavar="ID",
                   help="job id: launchers with the same id form one job (default 'none')")
    p.add_argument("--rdzv-conf", "--rdzv_conf", default="", metavar="K=V,...",
                   help="join_timeout (s, default 600), last_call_timeout (s, default 30); "
                        "other keys are accepted and ignored")
    p.add_argument("--local-addr", "--local_addr", default=None, metavar="ADDR",
                   help="this node's address for the other nodes (default: the address of "
                        "DDL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, else the one on the route to "
                        "the endpoint)")
    p.add_argument("--monitor-interval", "--monitor_interval", type=_seconds, default=0.1,
                   metavar="SECONDS",
                   help="how often other nodes' failures are polled under c10d (default 0.1)")
    p.add_argument("--start-method", "--start_method", default="spawn",
                   choices=("spawn", "fork", "forkserver"),
                   help="accepted for torchrun compatibility; workers are always new processes")
    p.add_argument("--standalone", action="store_true",
                   help="single node on 127.0.0.1 with a free port")
    p.add_argument("--max-restarts", "--max_restarts", type=_int, default=0,
                   help="restart the worker group up to N times after a failure (default 0; "
                        "under c10d every node's group, together)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="grace period between SIGTERM and SIGKILL when stopping workers "
                        "(default 10)")
    p.add_argument("--no-prefix", "--no_prefix", action="store_true",
                   help="pass worker output through without the [rankN]: prefix")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-m", "--module", action="store_true",
                      help="run the target as a module, like python -m")
    mode.add_argument("--no-python", "--no_python", action="store_true",
                      help="run the target as an executable instead of with Python")
    p.add_argument("script", nargs="?", metavar="script.py | -m module",
                   help="the training script (or module with -m)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="args",
                   help="arguments for the script")
    return p


def parse(argv):
    """The launcher's arguments from argv; a usage error (exit 2) names a bad flag."""
    p = _parser()
    args = p.parse_args(argv)
    if args.script is None:
        p.error("missing the script to run (script.py args... or -m module args...)")
    if args.nproc_per_node < 1:
        p.error(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
    args.min_nodes, args.max_nodes = args.nnodes
    if args.rdzv_backend == "c10d":
        _parse_c10d(p, args)
    else:
        if args.min_nodes != args.max_nodes:
            p.error(f"--nnodes {args.min_nodes}:{args.max_nodes}: a range needs "
                    "--rdzv-backend c10d")
        args.nnodes = args.max_nodes
        if args.rdzv_endpoint is not None:   # torchrun's static backend: the master
            if args.master_addr is not None or args.master_port is not None:
                p.error("give either --rdzv-endpoint or --master-addr/--master-port")
            try:
                args.master_addr, args.master_port = _endpoint(args.rdzv_endpoint, 29500)
            except ValueError as e:
                p.error(str(e))
        if args.node_rank is None:
            args.node_rank = 0
        if not 0 <= args.node_rank < args.nnodes:
            p.error(f"--node-rank must be in [0, {args.nnodes}), got {args.node_rank}")
        if args.standalone and args.nnodes != 1:
            p.error("--standalone runs a single node; drop --nnodes or --standalone")
        if args.nnodes > 1 and args.master_port is None:
            p.error("--master-port is required when --nnodes > 1 (every node must agree on "
                    "it), or use --rdzv-backend c10d --rdzv-endpoint HOST:PORT")
        if args.master_port is not None and not 1 <= args.master_port <= 65535:
            p.error(f"--master-port must be in [1, 65535], got {args.master_port}")
        if args.master_addr is not None:
            try:
                _check_host(args.master_addr, "--master-addr")
            except ValueError as e:
                p.error(str(e))
    if args.monitor_interval <= 0:
        p.error(f"--monitor-interval must be > 0, got {args.monitor_interval}")
    try:
        _check_ifname()
    except ValueError as e:
        p.error(str(e))
    if args.max_restarts < 0:
        p.error(f"--max-restarts must be >= 0, got {args.max_restarts}")
    if args.timeout < 0:
        p.error(f"--timeout must be >= 0, got {args.timeout}")
    if args.master_addr is None:
        args.master_addr = "127.0.0.1"
    if not args.module and not args.no_python and not os.path.isfile(args.script):
        p.error(f"script not found: {args.script}")
    if args.script_args[:1] == ["--"]:
        args.script_args = args.script_args[1:]
    return args


def _check_ifname():
    for var in ("DDL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        name = os.environ.get(var)
        if name:
            try:
                return _interface_address(name)
            except ValueError as e:
                raise ValueError(f"{var}: {e}") from None
    return None


def _rdzv_conf(p, text):
    conf = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--rdzv-conf: expected key=value, got {item!r}")
        conf[key.strip()] = value.strip()
    out = {}
    for key, default in (("join_timeout", 600.0), ("last_call_timeout", 30.0)):
        try:
            out[key] = float(conf.get(key, default))
        except ValueError:
            p.error(f"--rdzv-conf: {key} must be seconds, got {conf[key]!r}")
        if out[key] < 0:
            p.error(f"--rdzv-conf: {key} must be >= 0, got {out[key]}")
    return out


def _parse_c10d(p, args):
    if args.rdzv_endpoint is None:
        p.error("--rdzv-backend c10d needs --rdzv-endpoint HOST[:PORT] (where the launchers "
                "meet)")
    if args.master_addr is not None or args.master_port is not None or args.standalone:
        p.error("--master-addr/--master-port/--standalone are for the static backend; under "
                "c10d node 0's launcher picks the workers' master address and port")
    try:
        args.rdzv_host, args.rdzv_port = _endpoint(args.rdzv_endpoint, 29400)
    except ValueError as e:
        p.error(str(e))
    conf = _rdzv_conf(p, args.rdzv_conf)
    args.join_timeout, args.last_call = conf["join_timeout"], conf["last_call_timeout"]
    args.nnodes = args.max_nodes    # until the rendezvous says how many came
    args.node_rank = 0
    try:
        if args.local_addr is not None:
            _check_host(args.local_addr, "--local-addr")
        else:
            from .distributed.rendezvous import local_address_towards

            args.local_addr = _check_ifname() or local_address_towards(
                args.rdzv_host, args.rdzv_port, "--rdzv-endpoint")
    except ValueError as e:
        p.error(str(e))
