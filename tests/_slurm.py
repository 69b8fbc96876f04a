"""A real Slurm for the tests (Debian's slurm-wlm + munge). `Slurm()`: one node `localhost`
(2 CPUs, free ports); `Slurm(cluster)`: one node per host of a namespace cluster (tests/_cluster.py),
slurmctld on host 0, a munged and a slurmd on every host. Either way a munge key and slurm.conf
are written to a temp dir (every state, spool, log and pid file there too), munged, slurmctld
and slurmd run in the foreground as children of the test (each also gets SIGTERM if the test
process dies: setpriv --pdeathsig), the nodes must be idle before the test runs, and they are
always stopped and the dir deleted after it (a killed run's dir is deleted by the next run).
Nothing under /etc, /run or /var is read or written (SLURM_CONF, AuthInfo=socket=, an empty
PlugStackConfig). Needs root (slurmd starts tasks as the job's user); skips, saying why,
without it or the programs.
"""
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

PROGRAMS = ("munged", "slurmctld", "slurmd", "srun", "sinfo", "scancel", "setpriv")
CONF = """\
ClusterName=ddltest
SlurmctldHost={ctld_host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge{node}/sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
PlugStackConfig={dir}/plugstack.conf
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=5
{nodes}
PartitionName=test Nodes=ALL Default=YES MaxTime=10 State=UP
"""




def _cgroup_mounts():
    """Shell commands that mount this machine's cgroup filesystems (v1, v2 or both, as here)
    again under /sys/fs/cgroup: run in a host's private mount namespace (cluster.sh exec),
    where `ip netns exec` left a bare /sys and slurmd would not start."""
    cmds = []
    with open("/proc/self/mounts") as f:
        rows = [ln.split()[:4] for ln in f]
    rows = [r for r in rows if r[1] == "/sys/fs/cgroup" or r[1].startswith("/sys/fs/cgroup/")]
    for src, mp, fstype, opts in sorted(rows, key=lambda r: len(r[1])):
        cmds.append(f"mkdir -p {shlex.quote(mp)} && mount -t {shlex.quote(fstype)} -o "
                    f"{shlex.quote(opts)} {shlex.quote(src)} {shlex.quote(mp)}")
    return " && ".join([*cmds, 'exec "$@"'])


def unavailable():
    """Why a test Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "the test Slurm needs root (slurmd starts tasks as the job's user)"
    missing = [d for d in PROGRAMS if shutil.which(d) is None]
    if missing:
        return (f"the test Slurm needs {', '.join(missing)} "
                "(Debian: apt-get install slurm-wlm munge; setpriv is util-linux)")
    return None


def _free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _sweep():
    """Delete the dirs of test Slurms whose owner is gone (its daemons died with it)."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        parts = name.split("-")
        if name.startswith("ddl-slurm-") and len(parts) == 4 and parts[2].isdigit() \
                and not os.path.exists(f"/proc/{parts[2]}"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _daemon_env():
    # the daemons are not ours: no sanitizer runtime (scripts/sanitize.sh) nor Python paths
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")
            and not k.startswith("SLURM_")}


class Slurm:
    """Slurm on localhost (cluster None) or on every host of a namespace cluster:
    `srun(args, env, **popen_kw)` runs `srun args` on node 0; `log()` the daemons' logs (for
    failure messages); `names` the node names."""

    def __init__(self, cluster=None, cpus=2):
        _sweep()
        # short (the munge socket's path), naming its owner for _sweep
        self.dir = tempfile.mkdtemp(prefix=f"ddl-slurm-{os.getpid()}-")
        self.cluster = cluster
        if cluster is None:
            self.names, self.addrs = ["localhost"], ["127.0.0.1"]
        else:
            self.names = [cluster.hostname(i) for i in range(cluster.n)]
            self.addrs = [cluster.addr(i) for i in range(cluster.n)]
        self.procs = []
        try:
            self._start(cpus)
        except BaseException:
            self.close()
            raise

    def _path(self, *p):
        return os.path.join(self.dir, *p)

    def conf(self, node):
        """Node `node`'s slurm.conf: they differ only in the munge socket (each host has its
        own munged)."""
        return self._path(f"slurm{node}.conf")

    def _on(self, node, argv):
        return argv if self.cluster is None else self.cluster.command(node, argv)

    def _spawn(self, node, argv, name):
        log = open(self._path(f"{name}.out"), "w")  # noqa: SIM115 (closed in close())
        env = dict(_daemon_env(), SLURM_CONF=self.conf(node))
        # util-linux's setpriv: SIGTERM when the test process dies (no preexec_fn: threads)
        p = subprocess.Popen(self._on(node, ["setpriv", "--pdeathsig", "TERM", *argv]),
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        p.log_file, p.name = log, name
        self.procs.append(p)
        return p

    def _start(self, cpus):
        n = len(self.names)
        os.mkdir(self._path("state"), 0o700)
        key = self._path("munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o400), "wb") as f:
            f.write(os.urandom(1024))
        # a namespace cluster's hosts have their own, empty port space
        ports = _free_ports(2) if self.cluster is None else [6817, 6818]
        nodes = "\n".join(f"NodeName={name} NodeAddr={addr} CPUs={cpus} State=UNKNOWN"
                           for name, addr in zip(self.names, self.addrs))
        for i in range(n):
            with open(self.conf(i), "w") as f:
                f.write(CONF.format(dir=self.dir, ctld_host=f"{self.names[0]}({self.addrs[0]})",
                                    ctld_port=ports[0], d_port=ports[1], node=i, nodes=nodes))
        open(self._path("plugstack.conf"), "w").close()
        for i in range(n):
            m = self._path(f"munge{i}")
            os.mkdir(m, 0o700)
            self._spawn(i, ["munged", "--foreground", "--force", f"--key-file={key}",
                            f"--socket={m}/sock", f"--pid-file={m}/pid", f"--log-file={m}/log",
                            f"--seed-file={m}/seed"], f"munged{i}")
            self._wait(lambda m=m: os.path.exists(f"{m}/sock"), 10, f"munged {i}'s socket")
        self._spawn(0, ["slurmctld", "-D", "-f", self.conf(0)], "slurmctld")
        for i in range(n):
            os.mkdir(self._path(f"spool-{self.names[i]}"), 0o700)
            argv = ["slurmd", "-D", "-f", self.conf(i), "-N", self.names[i]]
            if self.cluster is not None:   # `ip netns exec` gave the host a bare /sys: slurmd
                argv = ["sh", "-c", _cgroup_mounts(), "sh", *argv]   # needs cgroups to start
            self._spawn(i, argv, f"slurmd{i}")
        self._wait(lambda: self._node_states() == ["idle"] * n, 30, "the nodes to be idle")

    def _node_states(self):
        r = subprocess.run(self._on(0, ["sinfo", "-h", "-N", "-o", "%T"]), capture_output=True,
                           text=True, timeout=20, check=False, env=self.client_env())
        return r.stdout.split()

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.name for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"{timeout} s passed"
                raise RuntimeError(f"test Slurm: waiting for {what}: {why}\n{self.log()}")
            time.sleep(0.2)

    def client_env(self, base=None):
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = self.conf(0)
        return env

    def srun(self, args, env=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self._on(0, ["srun", *args]), env=self.client_env(env), **kw)

    def log(self):
        out = []
        names = ["slurmctld.log", *(f"slurmd-{n}.log" for n in self.names),
                 *(f"munge{i}/log" for i in range(len(self.names)))]
        for name in names:
            try:
                with open(self._path(name)) as f:
                    out.append(f"== {name}\n" + "".join(f.readlines()[-15:]))
            except OSError:
                pass
        return "\n".join(out)

    def close(self):
        """Cancel what still runs, stop the daemons (SIGTERM, then SIGKILL), delete the dir."""
        if self.procs and all(p.poll() is None for p in self.procs):
            subprocess.run(self._on(0, ["scancel", "--full", "-u", "root"]),
                           env=self.client_env(), capture_output=True, timeout=20, check=False)
        for p in reversed(self.procs):   # slurmd, slurmctld, then munged
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
            p.log_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def slurm_factory(cluster=None):
    """The body of a `slurm` fixture (yield from it): a running Slurm (on localhost, or on the
    hosts of `cluster`), always stopped after the test."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    s = Slurm(cluster)
    try:
        yield s
    finally:
        s.close()
