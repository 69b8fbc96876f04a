"""A real one-node Slurm for the tests (Debian's slurm-wlm + munge): `slurm_factory()` writes a
munge key and a slurm.conf (one node, `localhost`, 2 CPUs, free ports, every state, spool, log
and pid file in a temp dir), starts munged, slurmctld and slurmd in the foreground as children
of the test (each also gets SIGTERM if the test process dies: PR_SET_PDEATHSIG), waits for the
node to be idle, and always stops them and deletes the dir (a killed run's dir is deleted by the
next run). Nothing under /etc, /run or /var is
read or written (SLURM_CONF, AuthInfo=socket=, an empty PlugStackConfig). Needs root (slurmd
starts tasks as the job's user); skips, saying why, without it or the programs."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

PROGRAMS = ("munged", "slurmctld", "slurmd", "srun", "sinfo", "scancel", "setpriv")
CONF = """\
ClusterName=ddltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
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
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=10 State=UP
"""


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
    """One node: `srun(args, **popen_kw)` runs `srun args` against it; `log()` the daemons'
    logs (for failure messages)."""

    def __init__(self, cpus=2):
        _sweep()
        # short (the munge socket's path), naming its owner for _sweep
        self.dir = tempfile.mkdtemp(prefix=f"ddl-slurm-{os.getpid()}-")
        self.procs = []
        self.conf = os.path.join(self.dir, "slurm.conf")
        try:
            self._start(cpus)
        except BaseException:
            self.close()
            raise

    def _path(self, *p):
        return os.path.join(self.dir, *p)

    def _spawn(self, argv, name):
        log = open(self._path(f"{name}.out"), "w")  # noqa: SIM115 (closed in close())
        env = dict(_daemon_env(), SLURM_CONF=self.conf)
        # util-linux's setpriv: SIGTERM when the test process dies (no preexec_fn: threads)
        p = subprocess.Popen(["setpriv", "--pdeathsig", "TERM", *argv], stdout=log,
                             stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        p.log_file = log
        self.procs.append(p)
        return p

    def _start(self, cpus):
        for d in ("munge", "state", "spool"):
            os.mkdir(self._path(d), 0o700)
        key = self._path("munge", "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o400), "wb") as f:
            f.write(os.urandom(1024))
        ctld_port, d_port = _free_ports(2)
        with open(self.conf, "w") as f:
            f.write(CONF.format(dir=self.dir, ctld_port=ctld_port, d_port=d_port, cpus=cpus))
        open(self._path("plugstack.conf"), "w").close()
        m = self._path("munge")
        self._spawn(["munged", "--foreground", "--force", f"--key-file={key}",
                     f"--socket={m}/sock", f"--pid-file={m}/pid", f"--log-file={m}/log",
                     f"--seed-file={m}/seed"], "munged")
        self._wait(lambda: os.path.exists(f"{m}/sock"), 10, "munged's socket")
        self._spawn(["slurmctld", "-D", "-f", self.conf], "slurmctld")
        self._spawn(["slurmd", "-D", "-f", self.conf, "-N", "localhost"], "slurmd")
        self._wait(lambda: self._node_state() == "idle", 30, "the node to be idle")

    def _node_state(self):
        r = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%T"],
                           capture_output=True, text=True, timeout=10, check=False,
                           env=self.client_env())
        return r.stdout.strip()

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[3] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"{timeout} s passed"
                raise RuntimeError(f"test Slurm: waiting for {what}: {why}\n{self.log()}")
            time.sleep(0.2)

    def client_env(self, base=None):
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = self.conf
        return env

    def srun(self, args, env=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(["srun", *args], env=self.client_env(env), **kw)

    def log(self):
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munge/log"):
            try:
                with open(self._path(name)) as f:
                    out.append(f"== {name}\n" + "".join(f.readlines()[-15:]))
            except OSError:
                pass
        return "\n".join(out)

    def close(self):
        """Cancel what still runs, stop the daemons (SIGTERM, then SIGKILL), delete the dir."""
        if self.procs and all(p.poll() is None for p in self.procs):
            subprocess.run(["scancel", "--full", "-u", "root"], env=self.client_env(),
                           capture_output=True, timeout=10, check=False)
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


def slurm_factory():
    """The body of a `slurm` fixture (yield from it): a running one-node Slurm, always stopped
    after the test."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    s = Slurm()
    try:
        yield s
    finally:
        s.close()
