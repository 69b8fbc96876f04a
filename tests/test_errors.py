"""Every error path raises its mapped exception (ValueError for shapes and values, TypeError
for dtypes, IndexError for indices and dims, MemoryError for allocations), with useful
messages, and never crashes."""
import numpy as np
import pytest

import ddl


@pytest.mark.parametrize("fn, msg", [
    (lambda: ddl.ones(2, 3) @ ddl.ones(4, 2), r"\(2, 3\) and \(4, 2\)"),
    (lambda: ddl.ones(2, 3) + ddl.ones(4), r"\(2, 3\) and \(4,\)"),
    (lambda: ddl.ones(2, 3) * ddl.ones(3, 2), r"\(2, 3\) and \(3, 2\)"),
    (lambda: ddl.ones(5) < ddl.ones(2), r"\(5,\) and \(2,\)"),
    (lambda: ddl.maximum(ddl.ones(2, 1, 3), ddl.ones(4, 2)), r"\(2, 1, 3\) and \(4, 2\)"),
    (lambda: ddl.ones(6).reshape(4, 2), r"\(6,\).*\(4, 2\)"),
    (lambda: ddl.ones(6).view(5), r"\(6,\)"),
    (lambda: ddl.ones(2, 3).expand(4, 3), r"\(2, 3\).*\(4, 3\)"),
    (lambda: ddl.cat([ddl.ones(2, 3), ddl.ones(2, 4)]), r"\(2, 4\)"),
    (lambda: ddl.stack([ddl.ones(2), ddl.ones(3)]), r"\(3,\)"),
    (lambda: ddl.ones(3).copy_(ddl.ones(4)), r"\(4,\).*\(3,\)|\(3,\).*\(4,\)"),
    (lambda: ddl.ones(3).add_(ddl.ones(2, 3)), r"\(2, 3\)"),
    (lambda: ddl.where(ddl.ones(2) > 0, ddl.ones(3), 0.0), r"\(2,\)|\(3,\)"),
])
def test_shape_errors_are_value_errors_with_shapes(fn, msg):
    with pytest.raises(ValueError, match=msg):
        fn()


@pytest.mark.parametrize("fn", [
    lambda: ddl.from_numpy(np.zeros(3, dtype=np.uint32)),
    lambda: ddl.from_numpy(np.array([object(), 1], dtype=object)),
    lambda: ddl.from_numpy(np.zeros(2, dtype=np.complex64)),
    lambda: ddl.tensor([[1, 2], [3]]),
    lambda: ddl.tensor([[1.0], [2.0, 3.0]]),
    lambda: ddl.tensor(["a", "b"]),
    lambda: ddl.tensor([1, None]),
    lambda: ddl.tensor(np.zeros(2, dtype=np.complex128)),
    lambda: ddl.tensor({"a": 1}),
    lambda: ddl.ones(3) + np.zeros(3, dtype=np.complex64),
    lambda: ddl.ones(3) + "x",
    lambda: ddl.ones(3) + [1.0, 2.0, 3.0],
    lambda: ddl.zeros(3, dtype="complex128"),
    lambda: ddl.zeros(3, dtype=np.uint64),
    lambda: ddl.Tensor(),
    lambda: ddl.zeros(2.5),
    lambda: ddl.exp("x"),
    lambda: ddl.ones(2).to("complex64"),
])
def test_dtype_errors_are_type_errors(fn):
    with pytest.raises(TypeError):
        fn()


@pytest.mark.parametrize("fn", [
    lambda: ddl.tensor([1, 2]).add_(0.5),
    lambda: ddl.tensor([1, 2]).mul_(ddl.tensor([0.5, 1.0])),
    lambda: ddl.tensor([1, 2]).div_(ddl.tensor([1, 2])),
    lambda: ddl.tensor([1, 2]).sub_(1.5),
    lambda: ddl.tensor([1, 2]).sqrt_(),
    lambda: ddl.tensor([1, 2]).tanh_(),
    lambda: ddl.tensor([True]).add_(ddl.tensor([2])),
    lambda: ddl.tensor([True]).neg_(),
])
def test_inplace_narrowing_is_type_error(fn):
    with pytest.raises(TypeError, match="cast|float"):
        fn()


@pytest.mark.parametrize("fn", [
    lambda: ddl.ones(3)[3],
    lambda: ddl.ones(3)[-4],
    lambda: ddl.ones(2, 3)[1, 3],
    lambda: ddl.ones(2, 3)[0, 0, 0],
    lambda: ddl.ones(2, 3)[[0, 2]],
    lambda: ddl.tensor(1.0)[0],
    lambda: ddl.ones(2).__setitem__(2, 1.0),
    lambda: ddl.ones(2, 3).sum(2),
    lambda: ddl.ones(2, 3).mean(-3),
    lambda: ddl.ones(2, 3).transpose(0, 2),
    lambda: ddl.ones(2, 3).permute(0, 3),
    lambda: ddl.ones(2, 3).squeeze(5),
    lambda: ddl.ones(2, 3).unsqueeze(4),
    lambda: ddl.ones(2, 3).flatten(0, 3),
    lambda: ddl.ones(2, 3).argmax(2),
    lambda: ddl.cat([ddl.ones(2)], 1),
    lambda: ddl.stack([ddl.ones(2)], -3),
])
def test_index_errors(fn):
    with pytest.raises(IndexError):
        fn()


def test_index_error_message():
    with pytest.raises(IndexError, match="5.*size 3|size 3.*5"):
        ddl.ones(3)[5]


@pytest.mark.parametrize("fn", [
    lambda: ddl.empty(2**40, 2**20),
    lambda: ddl.zeros(2**40, 2**20),
    lambda: ddl.ones(2**62),
    lambda: ddl.empty(2**31, 2**31, 2**31),  # the element count overflows int64
    lambda: ddl.full((2**45, 2**10), 1.0),
    lambda: ddl.rand(2**40, 2**20),
    lambda: ddl.randn(2**50),
    lambda: ddl.randint(0, 5, (2**40, 2**20)),
    lambda: ddl.arange(0, 2**62),
    lambda: ddl.eye(2**32),
    lambda: ddl.ones(1).expand(2**40, 2**20).clone(),
    lambda: ddl.ones(1).expand(2**40, 2**20) + 1,
    lambda: ddl.ones(1).expand(2**40, 2**20).contiguous(),
])
def test_huge_allocations_raise_memory_error(fn):
    with pytest.raises(MemoryError):
        fn()


def test_memory_error_leaves_library_usable():
    with pytest.raises(MemoryError):
        ddl.empty(2**40, 2**20)
    assert (ddl.ones(3) + 1).tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("fn", [
    lambda: ddl.zeros(-1),
    lambda: ddl.zeros(2, -3),
    lambda: ddl.ones(1, 1, 1, 1, 1, 1, 1, 1, 1),  # more than 8 dims
    lambda: ddl.ones(*(1,) * 8).unsqueeze(0),
    lambda: ddl.from_numpy(np.zeros((1,) * 9)),
    lambda: ddl.ones(2).item(),
    lambda: bool(ddl.ones(2)),
    lambda: ddl.zeros(0).max(),
    lambda: ddl.zeros(2, 0).argmin(1),
    lambda: ddl.arange(0, 5, 0),
    lambda: ddl.arange(0, float("inf")),
    lambda: ddl.linspace(0, 1, -2),
    lambda: ddl.eye(-1),
    lambda: ddl.randint(3, 3, (2,)),
    lambda: ddl.ones(3).clamp(),
    lambda: ddl.ones(4)[::-1],
    lambda: ddl.ones(2, 3).reshape(-1, -1),
    lambda: ddl.ones(2, 3).permute(0, 0),
    lambda: ddl.ones(2, 3).permute(0),
    lambda: ddl.ones(2, 3).flatten(1, 0),
    lambda: ddl.cat([]),
    lambda: ddl.set_num_threads(0),
    lambda: ddl.ones(3).T.view(3, 1, 1, 1, 1, 1, 1, 1, 1),
])
def test_value_errors(fn):
    with pytest.raises(ValueError):
        fn()


def test_int_overflow_is_an_error_not_a_wrap():
    with pytest.raises(OverflowError):
        ddl.tensor([2**63])
    with pytest.raises(OverflowError):
        ddl.tensor(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(OverflowError):
        ddl.full((2,), 2**63)
    with pytest.raises(OverflowError):
        ddl.zeros(2, dtype=ddl.int64).fill_(2**63)
    assert ddl.tensor(np.array([7], dtype=np.uint64)).tolist() == [7]


def test_len_and_iter_of_0d_are_type_errors():
    with pytest.raises(TypeError):
        len(ddl.tensor(2.0))
    with pytest.raises(TypeError):
        list(ddl.tensor(2.0))


def test_errors_do_not_corrupt_later_calls():
    # an error message from one call must not leak into the next successful one
    for _ in range(3):
        with pytest.raises(ValueError):
            ddl.ones(2) + ddl.ones(3)
        assert (ddl.ones(2) + ddl.ones(2)).tolist() == [2.0, 2.0]
