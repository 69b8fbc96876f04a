"""The ddl_world pytest plugin (ddl/testing/pytest_plugin.py), run through pytester in a fresh
pytest process: passing and failing ranks, a hang ending with stacks, parametrize and fixtures
inside, xdist, the entry point, and no process or port left behind."""
import os
import socket
import xml.etree.ElementTree as ET

import pytest
import tomllib

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every rank records its pid and the rendezvous port, so the test can check they are gone.
SCENARIOS = '''
import os
import pytest
import ddl
import ddl.distributed as dist

def _record(rank):
    d = os.environ["DDL_WORLD_TRACE"]
    with open(os.path.join(d, f"{os.getpid()}.txt"), "w") as f:
        f.write(os.environ["MASTER_PORT"])

@pytest.fixture
def base():
    return 10.0

@pytest.mark.ddl_world(2, timeout=60)
def test_two_ranks_pass(rank, world_size, base, tmp_path):
    _record(rank)
    assert dist.get_rank() == rank and dist.get_world_size() == world_size == 2
    t = ddl.ones(3) * (rank + base)
    dist.all_reduce(t)
    assert t.tolist() == [21.0] * 3

@pytest.mark.ddl_world(2, timeout=60)
def test_rank1_fails(rank):
    _record(rank)
    t = ddl.ones(2)
    dist.all_reduce(t)
    assert rank != 1, "MARK-rank1-assertion"

@pytest.mark.ddl_world(2, timeout=60)
def test_raises_before_first_collective(rank):
    _record(rank)
    if rank == 1:
        raise ValueError("MARK-early-error")
    dist.all_reduce(ddl.ones(2))

@pytest.mark.ddl_world(2, timeout=4)
def test_deadlock(rank):
    _record(rank)
    if rank == 0:
        dist.barrier()

@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.ddl_world(1, timeout=60)
def test_one_rank(scale, ddl_world):
    assert ddl_world.rank == 0 and ddl_world.world_size == 1
    t = ddl.ones(1) * scale
    dist.all_reduce(t)
    assert t.tolist() == [scale]

def test_rank_needs_the_marker(rank):
    pass

@pytest.fixture
def per_rank(rank):
    return rank

@pytest.mark.ddl_world(2)
def test_fixture_cannot_use_rank(per_rank):
    pass

@pytest.mark.ddl_world(2)
def test_skip_on_every_rank(rank):
    pytest.skip("MARK-skipped")
'''

# parametrize over the world size itself: the marker reads the parameter through a closure
WORLD_SIZES = '''
import pytest
import ddl
import ddl.distributed as dist

def _worlds():
    return [pytest.param(n, marks=pytest.mark.ddl_world(n, timeout=60), id=f"world{n}")
            for n in (1, 2, 4)]

@pytest.mark.parametrize("n", _worlds())
def test_sum_of_ranks(n, rank, world_size):
    assert world_size == n == dist.get_world_size()
    t = ddl.tensor([float(rank)])
    dist.all_reduce(t)
    assert t.tolist() == [n * (n - 1) / 2]
'''

INI = "[pytest]\nfilterwarnings = error\n"


def _env(monkeypatch, pytester):
    trace = pytester.path / "trace"
    trace.mkdir(exist_ok=True)
    tmp = pytester.path / "tmp"
    tmp.mkdir(exist_ok=True)
    monkeypatch.setenv("DDL_WORLD_TRACE", str(trace))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return trace, tmp


def _times(xml_path):
    return {case.get("name"): float(case.get("time"))
            for case in ET.parse(xml_path).getroot().iter("testcase")}


def _assert_nothing_survives(trace, tmp):
    records = list(trace.iterdir())
    assert records, "no rank recorded itself"
    for rec in records:
        pid, port = int(rec.stem), int(rec.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: not even a zombie is left
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("ddl-world-")]


def test_scenarios(pytester, monkeypatch):
    trace, tmp = _env(monkeypatch, pytester)
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(test_scenarios=SCENARIOS)
    result = pytester.runpytest_subprocess("-p", "ddl.testing.pytest_plugin", "-p",
                                           "no:cacheprovider", "--junitxml=out.xml", "-rs")
    result.assert_outcomes(passed=3, failed=3, errors=2, skipped=1)
    out = result.stdout.str()
    lines = result.stdout
    # a failing rank 1: the report names it and shows its traceback with the assertion
    lines.fnmatch_lines(["*_ test_rank1_fails _*", "ddl_world(2): rank 1 of 2 failed*",
                         "*= rank 1 =*", "*assert rank != 1*", "E * MARK-rank1-assertion"])
    # an exception before the first collective: rank 1's error, rank 0 stopped with its stack
    lines.fnmatch_lines(["*_ test_raises_before_first_collective _*",
                         "ddl_world(2): rank 1 of 2 failed; rank(s) ?0? still running*stopped",
                         "*= rank 1 =*", "E * ValueError: MARK-early-error",
                         "*= rank 0: its stack (faulthandler) =*", "*in all_reduce",
                         "*in test_raises_before_first_collective"])
    # a deadlock: every rank's stack, rank 0 in the barrier, rank 1 waiting for the others
    lines.fnmatch_lines(["*_ test_deadlock _*",
                         ("ddl_world(2): timed out after 4 s; rank(s) ?0? of 2 still running; "
                          "rank(s) ?1? passed and were waiting*"),
                         "*= rank 0: its stack (faulthandler) =*", "*in barrier",
                         "*in test_deadlock", "*= rank 1: its stack (faulthandler) =*",
                         "*the rank finished its test and waits for the other ranks*"])
    lines.fnmatch_lines(["*test_rank_needs_the_marker*", "*needs @pytest.mark.ddl_world(N)*"])
    lines.fnmatch_lines(["*fixture 'per_rank' depends on 'rank'*"])
    lines.fnmatch_lines(["SKIPPED*MARK-skipped"])
    assert "MARK-rank1-assertion" not in out.split("test_rank1_fails")[0]
    times = _times(pytester.path / "out.xml")
    # the hang ends at its 4 s timeout, plus the stack dump, however loaded the machine is
    assert 4.0 <= times["test_deadlock"] < 40, times
    # a failure before a collective does not wait for the timeout: the others get a 2 s grace
    assert times["test_raises_before_first_collective"] < 40, times
    _assert_nothing_survives(trace, tmp)


def test_parametrize_world_sizes(pytester, monkeypatch):
    _env(monkeypatch, pytester)
    pytester.makepyfile(test_worlds=WORLD_SIZES)
    result = pytester.runpytest_subprocess("-p", "ddl.testing.pytest_plugin", "-p",
                                           "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_sum_of_ranks?world1? PASSED*",
                                 "*test_sum_of_ranks?world2? PASSED*",
                                 "*test_sum_of_ranks?world4? PASSED*"])


XDIST = '''
import os
import pytest
import ddl
import ddl.distributed as dist

@pytest.mark.parametrize("i", range(6))
@pytest.mark.ddl_world(2, timeout=60)
def test_in_a_worker(i, rank):
    d = os.environ["DDL_WORLD_TRACE"]
    with open(os.path.join(d, f"{os.getpid()}.txt"), "w") as f:
        f.write(os.environ["MASTER_PORT"])
    with open(os.path.join(d, f"worker-{i}-{rank}"), "w") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "none"))
    t = ddl.tensor([float(i + rank)])
    dist.all_reduce(t)
    assert t.tolist() == [2.0 * i + 1]
'''


def test_xdist_two_workers(pytester, monkeypatch):
    pytest.importorskip("xdist", reason="pytest-xdist is in the [test] extra")
    trace, tmp = _env(monkeypatch, pytester)
    pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(test_xdist=XDIST)
    result = pytester.runpytest_subprocess("-p", "ddl.testing.pytest_plugin", "-p", "xdist",
                                           "-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "2")
    result.assert_outcomes(passed=6)
    workers = {p.read_text() for p in trace.glob("worker-*")}
    assert workers == {"gw0", "gw1"}, workers
    ports = {p.read_text() for p in trace.glob("*.txt")}
    assert len(ports) == 6  # one rendezvous port per test, however the workers interleave
    for p in list(trace.glob("worker-*")):
        p.unlink()
    _assert_nothing_survives(trace, tmp)


def test_entry_point_loads_the_plugin(pytester, monkeypatch):
    """The pytest11 entry point of pyproject.toml, installed as a distribution would be
    (a dist-info on sys.path), loads the plugin without -p; -p with it registers it once."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        eps = tomllib.load(f)["project"]["entry-points"]["pytest11"]
    assert eps == {"ddl.testing.pytest_plugin": "ddl.testing.pytest_plugin"}
    site = pytester.path / "site"
    info = site / "ddl_plugin_probe-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ddl-plugin-probe\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    _env(monkeypatch, pytester)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), ROOT,
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_ep='''
import pytest
import ddl.distributed as dist

@pytest.mark.ddl_world(2, timeout=60)
def test_two(rank):
    assert dist.get_rank() == rank
''')
    for extra in ([], ["-p", "ddl.testing.pytest_plugin"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *extra)
        result.assert_outcomes(passed=1)
