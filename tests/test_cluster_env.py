"""init_process_group() started by someone else than ddl.run: Slurm's srun (its variables;
no Slurm daemon here), MPICH/Hydra (PMI_*) and Open MPI's mpirun, for real when it is
installed (marked `mpi`). Also the check of GLOO_SOCKET_IFNAME before Gloo sees it."""
import os
import shutil
import subprocess
import sys

import pytest

import ddl.distributed  # noqa: F401 (loads the module below)
from tests.test_run import _env

rdzv = sys.modules["ddl.distributed.rendezvous"]   # the package exports a function of its name

WORKER = """
import os
import ddl, ddl.distributed as dist
dist.init_process_group()
t = ddl.ones(2) * (dist.get_rank() + 1)
dist.all_reduce(t)
line = f"{dist.get_rank()} {dist.get_world_size()} {os.environ['LOCAL_RANK']} {t.tolist()}"
print(line, flush=True)
with open(f"out{dist.get_rank()}", "w") as f:   # mpirun's output may mix the ranks' lines
    f.write(line)
dist.destroy_process_group()
"""


def read_outs(d, n):
    """The records the ranks wrote to d/out<rank>, by rank."""
    return [(d / f"out{r}").read_text().split(maxsplit=3) for r in range(n)]

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT")


def _clean_env(**extra):
    env = {k: v for k, v in _env().items()
           if k not in _LAUNCH_VARS and not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_"))}
    env.update(extra)
    return env


@pytest.mark.parametrize("nodelist, first", [
    ("node17", "node17"), ("a,b,c", "a"), ("n[07-09,12]", "n07"), ("n[3,5-6],m1", "n3"),
    ("rack[2-3]-n[01-04]", "rack2-n01"), ("gpu-[001-004]", "gpu-001")])
def test_slurm_nodelist_first_host(nodelist, first):
    assert rdzv.expand_first_host(nodelist) == first


def test_slurm_env_is_read():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_JOB_NODELIST": "cn[10-11]",
           "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}
    info = rdzv.launcher_env(env)
    assert info == {"source": "slurm", "rank": 3, "world_size": 8, "local_rank": 1,
                    "local_world_size": 4, "master_addr": "cn10",
                    "master_port": info["master_port"]}
    assert 20000 <= info["master_port"] < 40000
    # the same job, the same port on every rank; another job, (almost surely) another
    assert rdzv.launcher_env(dict(env, SLURM_PROCID="0"))["master_port"] == info["master_port"]
    assert rdzv.launcher_env(dict(env, SLURM_JOB_ID="4243"))["master_port"] != \
        info["master_port"]
    assert rdzv.launcher_env(dict(env, MASTER_PORT="5000", MASTER_ADDR="x"))[
        "master_port"] == 5000


def test_mpi_env_wins_over_an_enclosing_slurm_allocation():
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "cn1",
           "OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
           "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
           "MASTER_ADDR": "10.0.0.1"}
    info = rdzv.launcher_env(env)
    assert (info["source"], info["rank"], info["world_size"], info["local_world_size"],
            info["master_addr"]) == ("mpi", 2, 4, 2, "10.0.0.1")
    assert rdzv.launcher_env({"PMI_RANK": "1", "PMI_SIZE": "2"})["source"] == "pmi"
    assert rdzv.launcher_env({}) is None


def test_mpi_across_hosts_without_master_addr_is_a_clear_error(monkeypatch):
    for k in _LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    import ddl.distributed as dist

    with pytest.raises(ValueError, match="set MASTER_ADDR"):
        dist.init_process_group()
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "x")
    with pytest.raises(ValueError, match="OMPI_COMM_WORLD_RANK='x' is not an integer"):
        dist.init_process_group()


def _run_ranks(tmp_path, envs):
    w = tmp_path / "w.py"
    w.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(w)], env=e, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for e in envs]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outs.append(out.split(maxsplit=3))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return sorted(outs)


@pytest.mark.timeout(90)
def test_a_job_with_slurm_variables_forms_one_world(tmp_path):
    job = str(os.getpid())
    envs = [_clean_env(SLURM_PROCID=str(r), SLURM_NTASKS="2", SLURM_LOCALID=str(r),
                       SLURM_TASKS_PER_NODE="2", SLURM_NODELIST="localhost", SLURM_JOB_ID=job)
            for r in range(2)]
    assert _run_ranks(tmp_path, envs) == [["0", "2", "0", "[3.0, 3.0]\n"],
                                         ["1", "2", "1", "[3.0, 3.0]\n"]]


@pytest.mark.timeout(90)
def test_a_job_with_hydra_variables_forms_one_world(tmp_path):
    envs = [_clean_env(PMI_RANK=str(r), PMI_SIZE="3", MPI_LOCALRANKID=str(r),
                       MPI_LOCALNRANKS="3", PMI_KVSNAME=f"kvs_{os.getpid()}_0")
            for r in range(3)]
    assert [o[:3] for o in _run_ranks(tmp_path, envs)] == [["0", "3", "0"], ["1", "3", "1"],
                                                            ["2", "3", "2"]]


def mpirun_command(np_, *extra):
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(np_),
            "--mca", "btl", "self,tcp", *extra]


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="mpirun not installed (Debian: apt-get install openmpi-bin)")
def test_mpirun_np_4(tmp_path):
    w = tmp_path / "w.py"
    w.write_text(WORKER)
    r = subprocess.run(mpirun_command(4, sys.executable, str(w)), env=_clean_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_outs(tmp_path, 4) == [[str(i), "4", str(i), "[10.0, 10.0]"] for i in range(4)]


def test_socket_ifname_checked_before_gloo(monkeypatch):
    import ddl.distributed as dist

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ddlt-nosuch0")
    with pytest.raises(ValueError, match="'ddlt-nosuch0' is not a network interface of this "
                                         "host"):
        dist.init_process_group(init_method="tcp://127.0.0.1:1", rank=0, world_size=1)
