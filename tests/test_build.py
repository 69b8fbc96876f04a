"""The build itself: the extension loads, links OpenBLAS and Gloo, and is the one under test."""
import os
import re

import ddl


def test_tested_build_is_the_expected_one():
    # scripts/sanitize.sh runs the suite against its own build: make sure it is that one
    expected = os.environ.get("DDL_EXPECT_BUILD")
    if expected:
        assert ddl._C.__file__.startswith(expected), ddl._C.__file__


def test_openblas_is_linked_and_named():
    info = ddl.blas_info()
    assert info["corename"]
    assert info["config"].startswith("OpenBLAS")


def test_gloo_shim_answers():
    assert re.fullmatch(r"\d+\.\d+\.\d+", ddl.gloo_version())
    # two ranks as threads, allreduce(1 + 2) over loopback TCP
    assert ddl._C.gloo_selftest() == 3.0


def test_threads_round_trip():
    old = ddl.get_num_threads()
    try:
        ddl.set_num_threads(2)
        assert ddl.get_num_threads() == 2
    finally:
        ddl.set_num_threads(old)


def test_version_is_the_project_metadata():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        declared = re.search(r'^version = "([^"]+)"', f.read(), re.MULTILINE)[1]
    assert ddl.__version__ == declared
    assert "__version__" in ddl.__dict__  # computed once, then a plain attribute
