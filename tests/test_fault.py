"""Fault injection (issue 13, marker `fault`): kill -9 and SIGSTOP of each rank of a job,
the store host included, mid-collective; a store flood during a live job. Each asserts the
named error, a time bound, and that nothing is left behind (processes, /dev/shm)."""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.fault

HERE = os.path.dirname(os.path.abspath(__file__))
RING = os.path.join(HERE, "fault_workers", "ring.py")
T = 6.0  # the job's collective timeout (s)
# under the sanitizers (LD_PRELOAD'ed ASan/TSan: every process several times slower) the
# failure path's own store calls and grace periods take longer; 2 s otherwise, for a machine
# busy with other work (1 s was exceeded under a load average of ~10 on 2 cores)
SLACK = 6.0 if "san" in os.environ.get("LD_PRELOAD", "") else 2.0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shm():
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


class Job:
    """WORLD ranks of ring.py on 127.0.0.1, each a direct child of the test."""

    def __init__(self, world=2, steps=0, timeout=T):
        self.port = _free_port()
        self.shm_before = _shm()
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(self.port),
                   WORLD_SIZE=str(world), PYTHONPATH=os.path.dirname(HERE))
        env.pop("DDL_STORE_TOKEN", None)
        self.procs = [subprocess.Popen([sys.executable, RING, str(timeout), str(steps)],
                                       env=dict(env, RANK=str(r)), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
                      for r in range(world)]
        self.lines = [[] for _ in range(world)]
        self.threads = [threading.Thread(target=self._pump, args=(r,), daemon=True)
                        for r in range(world)]
        for t in self.threads:
            t.start()

    def _pump(self, r):
        for line in self.procs[r].stdout:
            self.lines[r].append((time.time(), line.rstrip("\n")))

    def wait_for(self, r, prefix, within):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for t, line in list(self.lines[r]):
                if line.startswith(prefix):
                    return t, line
            if self.procs[r].poll() is not None and not any(
                    ln.startswith(prefix) for _, ln in self.lines[r]):
                time.sleep(0.2)  # let the pump catch up with the last lines
                for t, line in list(self.lines[r]):
                    if line.startswith(prefix):
                        return t, line
                raise AssertionError(f"rank {r} exited {self.procs[r].returncode} without "
                                     f"{prefix!r}: {self.lines[r][-5:]} "
                                     f"{self.procs[r].stderr.read()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError(f"rank {r}: no {prefix!r} within {within} s: {self.lines[r][-5:]}")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)
            p.stdout.close()
            p.stderr.close()
        for t in self.threads:
            t.join(timeout=5)
        assert _shm() <= self.shm_before, f"left in /dev/shm: {_shm() - self.shm_before}"
        with socket.socket() as s:  # the store's port is free again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim, how", [(0, "kill"), (1, "kill"), (0, "stop"), (1, "stop")])
def test_a_rank_killed_or_stopped_mid_collective_is_named_in_time(victim, how):
    job = Job()
    try:
        job.wait_for(0, "OK 20", within=60)
        survivor = 1 - victim
        t_fault = time.time()
        job.procs[victim].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        t_caught, line = job.wait_for(survivor, "CAUGHT", within=4 * T + 30)
        took = t_caught - t_fault
        _, _, kind, msg = line.split(" ", 3)
        assert kind in ("DistributedError", "DistributedTimeoutError"), line
        # a stopped store host (rank 0) within 1.5x the timeout (issue 13: it took 87 s of 20)
        assert took < 1.5 * T + SLACK, f"named after {took:.1f} s: {msg}"
        if victim == 0 and how == "stop":
            assert "store" in msg and "rank 0" in msg, msg
        elif how == "kill":
            assert f"rank(s) {victim}" in msg or f"rank {victim}" in msg or "store" in msg, msg
        assert job.procs[survivor].wait(timeout=30) == 3
    finally:
        job.close()


def _flood(port, stop, stats):
    """Strangers at the store's port: garbage, half frames of 60 MiB, slowloris, floods of
    connections, until stop is set."""
    socks = []
    payloads = [os.urandom(64), struct.pack(">IBI", 60 << 20, 1, 3) + b"key" + b"\0" * (1 << 20),
                b"\x00", b""]
    while not stop.is_set():
        for data in payloads:
            try:
                sk = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                stats["refused"] += 1
                time.sleep(0.01)
                continue
            socks.append(sk)
            try:
                if data:
                    sk.sendall(data)
                stats["sent"] += 1
            except OSError:  # the server cut it off: that is its job
                stats["refused"] += 1
        if len(socks) > 200:
            for sk in socks[:100]:
                sk.close()
            del socks[:100]
    for sk in socks:
        sk.close()


@pytest.mark.timeout(180)
def test_a_store_flood_does_not_disturb_a_live_job():
    job = Job(steps=300, timeout=30)
    stop, stats = threading.Event(), {"sent": 0, "refused": 0}
    flood = threading.Thread(target=_flood, args=(job.port, stop, stats), daemon=True)
    try:
        job.wait_for(0, "OK 1", within=60)
        flood.start()
        for r in range(2):
            job.wait_for(r, "DONE", within=150)
        assert stats["sent"] > 50, stats
        for p in job.procs:
            assert p.wait(timeout=30) == 0
    finally:
        stop.set()
        flood.join(timeout=30)
        job.close()


_TRAINER = """
import sys, numpy as np, ddl
rs = np.random.RandomState(0)
x = rs.randn(256, 8).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int64)
ds = ddl.data.TensorDataset(ddl.tensor(x), ddl.tensor(y))
ddl.manual_seed(0)
model = ddl.nn.Sequential(ddl.nn.Linear(8, 512), ddl.nn.ReLU(), ddl.nn.Linear(512, 2))
opt = ddl.optim.Adam(model.parameters(), lr=0.01)
t = ddl.Trainer(model, opt, ddl.nn.CrossEntropyLoss(), ds, None, batch_size=64, epochs=10**6,
                checkpoint_dir=sys.argv[1], keep_last=2, progress=False)
t.fit()
"""


@pytest.mark.timeout(300)
def test_kill_9_of_a_training_run_keeps_the_last_good_checkpoint(tmp_path):
    """Trainer checkpoints every epoch (keep_last=2); kill -9 at arbitrary points: every time,
    the newest checkpoint loads and at most keep_last + 1 are there. A kill between the
    temporary's link and its rename over the target (Linux has no atomic link-over) may leave
    that one named temporary of the dead process; the next save into the folder removes it."""
    import ddl

    d = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    last_epoch, stale, names_at_kill = 0, [], set()
    for k in range(5):
        p = subprocess.Popen([sys.executable, "-c", _TRAINER, str(d)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not d.exists() or not any(d.glob("*.ddl"))
                                               or set(os.listdir(d)) == names_at_kill):
            time.sleep(0.05)
        if stale:  # this run has saved since the last kill: the dead run's temporary is gone
            assert not set(stale) & set(os.listdir(d)), stale
        time.sleep(0.3 + 0.37 * k)  # somewhere in an epoch or in a save
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        p.stderr.close()
        ckpts = sorted(d.glob("checkpoint-epoch*.ddl"))
        assert 1 <= len(ckpts) <= 3, ckpts
        state = ddl.load(ckpts[-1])
        assert state["epoch"] >= last_epoch  # resumed, never went back
        last_epoch = state["epoch"]
        stale = [f for f in os.listdir(d) if f.startswith(".ddl-save-")]
        assert len(stale) <= 1 and all(f"-{p.pid}-" in f for f in stale), stale
        names_at_kill = set(os.listdir(d))
