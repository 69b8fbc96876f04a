"""The pytest side of scripts/cluster.sh: a `make_cluster` fixture that builds N namespace
hosts (10.213.0.1.. on a rate-limited switch), runs commands on them, and always tears the
cluster down, killing whatever still runs in it. Tests that use it are marked `cluster` and
skip, saying why, without root or the tools (ip, tc, unshare). A test module defines

    @pytest.fixture
    def make_cluster():
        yield from cluster_factory()
"""
import os
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "cluster.sh")
_counter = [0]


def unavailable():
    """Why a namespace cluster cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the namespace cluster needs root"
    missing = [t for t in ("ip", "tc", "unshare") if shutil.which(t) is None]
    if missing:
        return f"the namespace cluster needs {', '.join(missing)} (Debian: iproute2, util-linux)"
    probe = f"ddlt-{os.getpid()}xprobe-h0"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        return f"cannot make network namespaces here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


class Cluster:
    """N hosts; host i is at addr(i); popen/run start commands there."""

    def __init__(self, n, rate="1gbit"):
        _counter[0] += 1
        self.tag = f"{os.getpid()}x{_counter[0]}"
        self.n = n
        self.procs = []
        subprocess.run([SCRIPT, "sweep"], capture_output=True, check=False, timeout=60)
        r = subprocess.run([SCRIPT, "up", self.tag, str(n), rate], capture_output=True,
                           text=True, check=False, timeout=60)
        if r.returncode != 0:
            self.close()
            raise RuntimeError(f"cluster.sh up failed: {r.stderr}")

    @staticmethod
    def addr(i):
        return f"10.213.0.{i + 1}"

    def hostname(self, i):
        return f"ddlt-{self.tag}-h{i}"

    def command(self, i, argv):
        return [SCRIPT, "exec", self.tag, str(i), *argv]

    def popen(self, i, argv, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        p = subprocess.Popen(self.command(i, argv), **kw)
        self.procs.append(p)
        return p

    def link(self, i, state):
        subprocess.run([SCRIPT, "link", self.tag, str(i), state], check=True, timeout=30)

    def pids(self):
        """Processes still running in any host of the cluster."""
        out = []
        for i in range(self.n):
            r = subprocess.run(["ip", "netns", "pids", f"ddlt-{self.tag}-h{i}"],
                               capture_output=True, text=True, check=False)
            out += [int(p) for p in r.stdout.split()]
        return out

    def wait_empty(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pids():
                return True
            time.sleep(0.1)
        return not self.pids()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        subprocess.run([SCRIPT, "down", self.tag], capture_output=True, check=False,
                       timeout=60)


def cluster_factory():
    """The body of a `make_cluster` fixture (yield from it): make(n, rate) -> Cluster, every
    cluster torn down after the test, and checked to be gone."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    made = []

    def make(n=2, rate="1gbit"):
        c = Cluster(n, rate)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              check=False).stdout
    assert not [ln for ln in leftover.splitlines()
                if any(ln.startswith(f"ddlt-{c.tag}-") for c in made)], leftover
