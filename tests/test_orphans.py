"""No orphaned workers (issue 13): kill -9 of the process that started them takes
ddl.multiprocessing's children (every start method, and spawn from a non-main thread), the
DataLoader's worker processes (in the middle of a fetch) and the Spark runner's ranks (a
barrier task's rank; local mode's launcher and its ranks) within 2 s. ddl.run and
ddl.distributed.launch: tests/test_run_c10d.py."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.test_run import _env, _gone, _wait_for_files

LIMIT = 2.0   # seconds from the parent's death to its children's


def _run_and_kill(tmp_path, body, names, *, settle=0.0, timeout=60):
    """Start `body` as a parent script in tmp_path; once it wrote the pid files `names`, kill -9
    it and return the pids still alive LIMIT s later (all are killed before returning)."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(body))
    env = _env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    errpath = tmp_path / "parent.err"
    with open(errpath, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    pids = []
    try:
        try:
            pids = _wait_for_files([tmp_path / n for n in names], timeout=timeout)
        except AssertionError:
            raise AssertionError("the parent never started its children: "
                                 f"{errpath.read_text()[-3000:]}") from None
        time.sleep(settle)
        assert proc.poll() is None, errpath.read_text()[-3000:]
        assert not any(_gone(p) for p in pids), "a child ended before its parent was killed"
        proc.kill()
        t0 = time.monotonic()
        proc.wait(timeout=10)
        while not all(_gone(p) for p in pids) and time.monotonic() - t0 < LIMIT:
            time.sleep(0.02)
        return [p for p in pids if not _gone(p)]
    finally:
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SLEEPER = """
import os, time

def sleeper(rank, tag="pid"):
    open(f"{tag}{rank}.tmp", "w").write(str(os.getpid()))
    os.replace(f"{tag}{rank}.tmp", f"{tag}{rank}")
    time.sleep(120)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_multiprocessing_children_die_with_their_parent(tmp_path, method):
    (tmp_path / "kids.py").write_text(SLEEPER)
    alive = _run_and_kill(tmp_path, f"""
        import ddl.multiprocessing as mp
        from kids import sleeper
        if __name__ == "__main__":
            mp.spawn(sleeper, nprocs=2, start_method={method!r})
        """, ["pid0", "pid1"])
    assert not alive, f"{method}: children {alive} outlived their kill -9'ed parent by {LIMIT} s"


@pytest.mark.timeout(90)
def test_children_spawned_from_a_thread_outlive_the_thread_but_not_the_parent(tmp_path):
    # PR_SET_PDEATHSIG fires when the starting *thread* ends: here a watch thread does the job
    (tmp_path / "kids.py").write_text(SLEEPER)
    alive = _run_and_kill(tmp_path, """
        import threading, time
        import ddl.multiprocessing as mp
        from kids import sleeper
        if __name__ == "__main__":
            kept = []   # the context (and its queue) must outlive the thread
            t = threading.Thread(target=lambda: kept.append(
                mp.start_processes(sleeper, nprocs=2, join=False)))
            t.start()
            t.join()
            time.sleep(120)
        """, ["pid0", "pid1"], settle=1.0)  # the thread is gone: the children still run
    assert not alive


@pytest.mark.timeout(90)
def test_dataloader_workers_die_with_their_parent_mid_fetch(tmp_path):
    alive = _run_and_kill(tmp_path, """
        import os, time
        from ddl.utils.data import DataLoader, Dataset

        class Slow(Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                open(f"pid{i}.tmp", "w").write(str(os.getpid()))
                os.replace(f"pid{i}.tmp", f"pid{i}")
                time.sleep(120)
                return i

        for batch in DataLoader(Slow(), batch_size=1, num_workers=2):
            pass
        """, ["pid0", "pid1"])
    assert not alive


@pytest.mark.timeout(90)
def test_a_spark_barrier_rank_dies_with_its_task(tmp_path):
    # what barrier_task (ddl/spark/_task.py) starts: `python -m ddl.spark._runner PAYLOAD` with
    # DDL_SPARK_PARENT; rank 0 of 2 serves the store, writes its port, then waits for rank 1
    alive = _run_and_kill(tmp_path, """
        import os, pickle, subprocess, sys, time
        with open("payload.pkl", "wb") as f:
            pickle.dump({"kind": "script", "path": "unused.py", "args": []}, f)
        env = dict(os.environ, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0",
                   DDL_SPARK_MODE="barrier", DDL_SPARK_OUT=os.getcwd(),
                   DDL_SPARK_TIMEOUT="120", DDL_SPARK_PORT_FILE="port",
                   DDL_SPARK_PARENT=str(os.getpid()))
        p = subprocess.Popen([sys.executable, "-m", "ddl.spark._runner", "payload.pkl"],
                             env=env)
        while not os.path.exists("port"):   # the rank is past its start, in the rendezvous
            time.sleep(0.05)
        open("pid0", "w").write(str(p.pid))
        time.sleep(120)
        """, ["pid0"])
    assert not alive


@pytest.mark.timeout(120)
def test_spark_local_mode_launcher_and_ranks_die_with_the_driver(tmp_path):
    (tmp_path / "kids.py").write_text(SLEEPER + """
def rank_sleeper():
    rank = int(os.environ["RANK"])
    open(f"launcher{rank}.tmp", "w").write(str(os.getppid()))   # ddl.run's pid
    os.replace(f"launcher{rank}.tmp", f"launcher{rank}")
    sleeper(rank)
""")
    alive = _run_and_kill(tmp_path, """
        from ddl.spark import Distributor
        from kids import rank_sleeper
        Distributor(num_processes=2, local_mode=True, timeout=120).run(rank_sleeper)
        """, ["pid0", "pid1", "launcher0"], timeout=90)
    assert not alive, f"the launcher or ranks {alive} outlived the driver by {LIMIT} s"


def test_tie_to_parent_exits_when_the_parent_is_already_gone(tmp_path):
    # the child checks its parent after arming the signal: a parent that died first is caught
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os
        from ddl.run import tie_to_parent
        tie_to_parent(os.getppid() + 100000)   # not our parent, and no such process
        print("survived")
        """)], env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "survived" not in r.stdout, r.stderr
