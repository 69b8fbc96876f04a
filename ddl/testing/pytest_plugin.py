"""The ddl pytest plugin: `@pytest.mark.ddl_world(N)` runs a test function on N ranks.

    import pytest
    import ddl
    import ddl.distributed as dist

    @pytest.mark.ddl_world(2, timeout=30)
    def test_sum(rank, world_size):
        t = ddl.ones(3) * (rank + 1)
        dist.all_reduce(t)
        assert t.tolist() == [3.0, 3.0, 3.0]

Each rank is a process forked from the pytest process after the test's fixtures are set up,
with an initialised default process group (Gloo on 127.0.0.1, rendezvous through a store on a
port the kernel picked); the test passes only if every rank passes. A failing rank's
traceback is the report; a hang fails after `timeout` seconds (default 120) with every rank's
stack. Fixtures and parametrize work as usual: their values reach the ranks by fork. The
`rank`, `world_size` and `ddl_world` fixtures give the rank's place; fixtures are set up once,
before the fork, so a fixture cannot itself depend on `rank` (read it in the test).

Registered through the `pytest11` entry point; without it, `pytest -p ddl.testing.pytest_plugin`
or `pytest_plugins = ["ddl.testing.pytest_plugin"]` in a conftest.py. ddl/testing/_world.py
runs the ranks; docs/testing.md is the guide.
"""
import inspect
import math

import pytest

from ._world import run_world

DEFAULT_TIMEOUT = 120.0
_RANK_FIXTURES = ("rank", "world_size", "ddl_world")


class World:
    """What the `ddl_world` fixture gives a rank: .rank and .world_size."""

    def __init__(self, rank, world_size):
        self.rank, self.world_size = rank, world_size

    def __repr__(self):
        return f"World(rank={self.rank}, world_size={self.world_size})"


class _Pending:
    """The value of a rank fixture in the pytest process, replaced in each rank."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}: set in each rank>"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ddl_world(world_size, timeout=120): run the test on world_size ranks, "
        "each with an initialised ddl process group (ddl.testing.pytest_plugin)")


def _marker_args(marker):
    """(world_size, timeout) from @pytest.mark.ddl_world(world_size, timeout=...)."""
    args, kwargs = list(marker.args), dict(marker.kwargs)
    if len(args) > 2 or set(kwargs) - {"world_size", "timeout"}:
        raise pytest.UsageError(f"ddl_world: takes (world_size, timeout=seconds), got "
                                f"args={tuple(args)} kwargs={kwargs}")
    names = ["world_size", "timeout"]
    for name, v in zip(names, args):
        if name in kwargs:
            raise pytest.UsageError(f"ddl_world: {name} given twice")
        kwargs[name] = v
    n = kwargs.get("world_size")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise pytest.UsageError(f"ddl_world: world_size must be an int >= 1, got {n!r}")
    t = kwargs.get("timeout", DEFAULT_TIMEOUT)
    if t is None:
        t = DEFAULT_TIMEOUT
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not (t > 0 and math.isfinite(t)):
        raise pytest.UsageError(f"ddl_world: timeout must be a number of seconds > 0, got {t!r}")
    return n, float(t)


def _rank_fixture(request, name):
    item = request.node
    if item.get_closest_marker("ddl_world") is None:
        pytest.fail(f"the {name!r} fixture needs @pytest.mark.ddl_world(N) on the test "
                    f"({item.nodeid})", pytrace=False)
    for other, defs in item._fixtureinfo.name2fixturedefs.items():
        if other not in _RANK_FIXTURES and any(name in d.argnames for d in defs):
            pytest.fail(f"fixture {other!r} depends on {name!r}: fixtures are set up once in "
                        "the pytest process before the ranks are forked, so they cannot know "
                        "the rank; read it in the test (or have the fixture return a function "
                        "of the rank)", pytrace=False)
    return _Pending(name)


@pytest.fixture
def rank(request):
    """This rank's number, 0 .. world_size - 1 (a test marked ddl_world only)."""
    return _rank_fixture(request, "rank")


@pytest.fixture
def world_size(request):
    """The number of ranks the test runs on (a test marked ddl_world only)."""
    return _rank_fixture(request, "world_size")


@pytest.fixture
def ddl_world(request):
    """World(rank, world_size) for this rank (a test marked ddl_world only)."""
    return _rank_fixture(request, "ddl_world")


def _repr_failure(item):
    def render(exc_info):
        excinfo = pytest.ExceptionInfo.from_exc_info(exc_info)
        return str(item.repr_failure(excinfo))

    return render


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    marker = pyfuncitem.get_closest_marker("ddl_world")
    if marker is None:
        return None
    world_size, timeout = _marker_args(marker)
    fn = pyfuncitem.obj
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        pytest.fail("ddl_world: async test functions are not supported", pytrace=False)
    argnames = pyfuncitem._fixtureinfo.argnames
    funcargs = pyfuncitem.funcargs

    def call(r):
        kwargs = {a: funcargs[a] for a in argnames}
        for name, value in (("rank", r), ("world_size", world_size),
                            ("ddl_world", World(r, world_size))):
            if name in kwargs:
                kwargs[name] = value
        if fn(**kwargs) is not None:
            raise TypeError("ddl_world: the test function returned a value; a test returns "
                            "None (assert instead)")

    outcome = run_world(call, world_size, timeout, repr_failure=_repr_failure(pyfuncitem),
                        label=f"ddl_world({world_size})")
    if outcome.kind == "skipped":
        pytest.skip(outcome.text)
    if outcome.kind == "failed":
        pytest.fail(outcome.text, pytrace=False)
    return True
