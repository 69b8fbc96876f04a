"""ddl.testing.assert_close (against torch.testing.assert_close's decisions where torch is
installed) and ddl.autograd.gradcheck."""
import math

import numpy as np
import pytest

import ddl
from ddl.autograd import GradcheckError, gradcheck
from ddl.testing import assert_close


def _raises(fn):
    try:
        fn()
    except AssertionError as e:
        return str(e)
    return None


# ---- assert_close ---------------------------------------------------------------------------


def test_default_tolerances_per_dtype():
    one = np.ones(4, np.float32)
    assert_close(ddl.tensor(one), ddl.tensor(one * (1 + 1e-6)))  # inside float32's 1.3e-6
    assert _raises(lambda: assert_close(ddl.tensor(one), ddl.tensor(one * (1 + 1e-4))))
    d = np.ones(4)
    assert_close(d, d * (1 + 5e-8))
    assert _raises(lambda: assert_close(d, d * (1 + 1e-6)))  # float64: 1e-7 + 1e-7
    i = np.arange(4)
    assert _raises(lambda: assert_close(i, i + np.array([0, 0, 1, 0])))  # integers: exact
    assert_close(1.0, 1.0 + 1e-8)
    assert _raises(lambda: assert_close(1, 2))


def test_message_names_count_worst_index_values_and_tolerances():
    a = np.zeros((2, 3), np.float32)
    e = a.copy()
    e[1, 2], e[0, 1] = 0.5, 0.1
    text = _raises(lambda: assert_close(ddl.tensor(a), ddl.tensor(e)))
    assert "Mismatched elements: 2 / 6 (33.3%)" in text
    assert "Greatest absolute difference: 0.5 at index (1, 2) (up to 1e-05 allowed)" in text
    assert "Greatest relative difference: 1 at index " in text and "1.3e-06 allowed" in text
    assert "Worst element at index (1, 2): actual 0.0, expected 0.5" in text


def test_explicit_tolerances_and_their_checks():
    assert_close(np.array([1.0]), np.array([1.05]), rtol=0.1, atol=0)
    text = _raises(lambda: assert_close(np.array([1.0]), np.array([1.5]), rtol=0.1, atol=0.01))
    assert "(up to 0.01 allowed)" in text and "(up to 0.1 allowed)" in text
    with pytest.raises(ValueError, match="both 'rtol' and 'atol'"):
        assert_close(1.0, 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match="rtol must be a number >= 0"):
        assert_close(1.0, 1.0, rtol=-1, atol=0)


def test_shape_dtype_nan_inf():
    assert "'shape' do not match: (2,) != (3,)" in _raises(
        lambda: assert_close(np.zeros(2), np.zeros(3)))
    assert "'dtype' do not match: float32 != float64" in _raises(
        lambda: assert_close(np.zeros(2, np.float32), np.zeros(2)))
    assert_close(np.zeros(2, np.float32), np.zeros(2), check_dtype=False)
    nan = np.array([1.0, math.nan])
    assert _raises(lambda: assert_close(nan, nan.copy()))
    assert_close(nan, nan.copy(), equal_nan=True)
    inf = np.array([math.inf, -math.inf])
    assert_close(inf, inf.copy())
    assert _raises(lambda: assert_close(inf, -inf))
    assert "'dtype' do not match: <class 'int'> != <class 'float'>" in _raises(
        lambda: assert_close(1, 1.0))
    assert_close(1, 1.0, check_dtype=False)


def test_nested_containers_say_where():
    actual = {"w": [ddl.ones(2), ddl.zeros(1)], "b": 1.0}
    assert_close(actual, {"w": (ddl.ones(2), ddl.zeros(1)), "b": 1.0})
    text = _raises(lambda: assert_close(actual, {"w": [ddl.ones(2), ddl.ones(1)], "b": 1.0}))
    assert text.endswith("The failure occurred for item ['w'][1]")
    assert "length of the sequences mismatch: 2 != 1" in _raises(
        lambda: assert_close([1, 2], [1]))
    assert "keys of the mappings do not match" in _raises(
        lambda: assert_close({"a": 1}, {"b": 1}))
    with pytest.raises(TypeError, match="cannot compare str with float"):
        assert_close("x", 1.0)
    assert_close(None, None)


def test_msg_replaces_or_wraps_the_message():
    assert _raises(lambda: assert_close(1.0, 2.0, msg="mine")) == "mine"
    assert _raises(lambda: assert_close(1.0, 2.0, msg=lambda m: "pre: " + m)).startswith(
        "pre: Scalars are not close!")


def test_ddl_numpy_and_torch_mix():
    torch = pytest.importorskip("torch", reason="torch compares against ddl here")
    assert_close(ddl.ones(3), torch.ones(3))
    assert_close(torch.ones(3, dtype=torch.float64), np.ones(3))
    w = ddl.ones(2).requires_grad_() * 2  # tensors in a graph are read detached
    assert_close(w, np.full(2, 2.0, np.float32))


CASES = [
    (np.float32, 1.0, 1.0 + 2e-6), (np.float32, 1.0, 1.0 + 1e-6), (np.float32, 1e-6, 9e-6),
    (np.float32, 1e-6, 2e-5), (np.float64, 1.0, 1.0 + 1.5e-7), (np.float64, 1.0, 1 + 3e-7),
    (np.float64, 0.0, 1e-7), (np.float64, 0.0, 3e-7), (np.int64, 3, 3), (np.int64, 3, 4),
    (np.float64, math.inf, math.inf), (np.float64, math.inf, 1e308), (np.float64, 1e300, 1e300),
]


@pytest.mark.parametrize(("dt", "x", "y"), CASES)
@pytest.mark.parametrize("equal_nan", [False, True])
def test_decisions_match_torch(dt, x, y, equal_nan):
    torch = pytest.importorskip("torch", reason="the reference decisions are torch's")
    a, e = np.array([x, 0.5], dt), np.array([y, 0.5], dt)
    ours = _raises(lambda: assert_close(a, e, equal_nan=equal_nan)) is None
    theirs = _raises(lambda: torch.testing.assert_close(
        torch.from_numpy(a), torch.from_numpy(e), equal_nan=equal_nan)) is None
    assert ours == theirs, (dt, x, y)


# ---- gradcheck ------------------------------------------------------------------------------


def _leaf(shape, seed):
    rs = np.random.default_rng(seed)
    return ddl.tensor(rs.standard_normal(shape), dtype=ddl.float64).requires_grad_()


def test_gradcheck_passes_on_correct_gradients():
    x, w = _leaf((3, 4), 0), _leaf((4, 2), 1)
    assert gradcheck(lambda a, b: (a @ b).tanh(), (x, w)) is True
    assert gradcheck(lambda a, b: ((a @ b).sum(), a * 3.0), (x, w))  # several outputs
    assert gradcheck(lambda a: (a * a).sum(), x)  # one input, not in a tuple
    assert x.grad is None  # left as it was


def test_gradcheck_names_output_input_and_element():
    x, w = _leaf((2, 3), 2), _leaf((3, 2), 3)
    w.register_hook(lambda g: g * 2)  # a wrong analytical gradient for w only
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a, b: a @ b, (x, w))
    text = str(info.value)
    assert "for output 0 with respect to input 1" in text
    assert "d(output 0)[" in text and "/ d(input 1)[" in text
    assert "analytical" in text and "numerical" in text and "atol 1e-05" in text
    assert gradcheck(lambda a, b: a @ b, (x, w), raise_exception=False) is False


def test_gradcheck_input_rules():
    with pytest.raises(TypeError, match="input 0 is float32; finite differences need float64"):
        gradcheck(lambda a: a.sum(), ddl.ones(2).requires_grad_())
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda a: a.sum(), ddl.ones(2, dtype=ddl.float64))
    x = _leaf(3, 4)
    with pytest.raises(ValueError, match="input 0 is not a leaf"):
        gradcheck(lambda a: a.sum(), x * 2)
    with pytest.raises(TypeError, match="output 0 is float"):
        gradcheck(lambda a: 1.0, x)
    with pytest.raises(ValueError, match="eps must be > 0"):
        gradcheck(lambda a: a.sum(), x, eps=0)


def test_no_gradgradcheck_without_higher_order_gradients():
    # ddl's backward records no graph of its own (no create_graph): nothing to check twice
    import ddl.autograd

    assert not hasattr(ddl.autograd, "gradgradcheck")
    with pytest.raises(TypeError):
        ddl.ones(1).requires_grad_().sum().backward(create_graph=True)
