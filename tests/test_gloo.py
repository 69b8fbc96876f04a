"""The Gloo shim is compiled, linked and works (a one-process allreduce over loopback)."""
import re

import ddl


def test_gloo_version_is_a_version_string():
    v = ddl.gloo_version()
    assert isinstance(v, str)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", v), v


def test_gloo_selftest_allreduce():
    assert ddl._C.gloo_selftest() == 3.0


def test_blas_info():
    info = ddl.blas_info()
    assert isinstance(info["corename"], str) and info["corename"]
    assert isinstance(info["config"], str)


def test_num_threads_round_trip():
    n = ddl.get_num_threads()
    try:
        ddl.set_num_threads(2)
        assert ddl.get_num_threads() == 2
        a = ddl.randn(64, 64)
        b = (a @ a).numpy()
        ddl.set_num_threads(1)
        c = (a @ a).numpy()
        assert abs(b - c).max() < 1e-4
    finally:
        ddl.set_num_threads(n)
