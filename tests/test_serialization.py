"""ddl.save / ddl.load: round trips, atomic writes, and corruption detection."""
import os

import numpy as np
import pytest

import ddl


def test_round_trip_of_a_nested_tree(tmp_path):
    ddl.manual_seed(0)
    obj = {
        "weights": ddl.randn(3, 4),
        "ints": ddl.arange(5),
        "mask": ddl.tensor([True, False]),
        "f64": ddl.randn(2, dtype=ddl.float64),
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "scalars": [1, -2.5, float("inf"), float("nan"), "text", None, True, b"\x00\xff"],
        "tuple": (1, (2, 3)),
        "int_keys": {0: "a", 7: {"nested": np.float32(1.5)}},
        "big": 2**70,
        "__dunder": 1,
        "leaf": ddl.ones(2).requires_grad_(),
        "view": ddl.arange(12.0).reshape(3, 4).T,
    }
    path = tmp_path / "ckpt.ddl"
    ddl.save(obj, path)
    back = ddl.load(path)
    for k in ("weights", "ints", "mask", "f64", "view"):
        assert isinstance(back[k], ddl.Tensor)
        assert back[k].dtype is obj[k].dtype
        np.testing.assert_array_equal(back[k].numpy(), obj[k].numpy())
    np.testing.assert_array_equal(back["array"], obj["array"])
    assert back["array"].dtype == np.int32
    s = back["scalars"]
    assert s[:3] == [1, -2.5, float("inf")] and np.isnan(s[3]) and s[4:] == obj["scalars"][4:]
    assert back["tuple"] == (1, (2, 3))
    assert back["int_keys"][0] == "a" and back["int_keys"][7]["nested"] == 1.5
    assert back["big"] == 2**70 and back["__dunder"] == 1
    assert back["leaf"].requires_grad


def test_model_and_optimizer_state_round_trip(tmp_path):
    ddl.manual_seed(1)
    model = ddl.nn.Sequential(ddl.nn.Linear(4, 3), ddl.nn.BatchNorm1d(3))
    opt = ddl.optim.Adam(model.parameters(), lr=0.01)
    loss = model(ddl.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    ddl.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.ddl")
    state = ddl.load(tmp_path / "s.ddl")
    model2 = ddl.nn.Sequential(ddl.nn.Linear(4, 3), ddl.nn.BatchNorm1d(3))
    model2.load_state_dict(state["model"])
    opt2 = ddl.optim.Adam(model2.parameters(), lr=0.01)
    opt2.load_state_dict(state["opt"])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("damage", ["truncate_end", "truncate_half", "flip_header",
                                    "flip_data", "flip_trailer", "empty", "garbage"])
def test_corruption_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "c.ddl"
    ddl.save({"w": ddl.randn(64, 64), "step": 3}, path)
    data = bytearray(path.read_bytes())
    if damage == "truncate_end":
        data = data[:-1]
    elif damage == "truncate_half":
        data = data[: len(data) // 2]
    elif damage == "flip_header":
        data[20] ^= 0x40
    elif damage == "flip_data":
        data[len(data) // 2] ^= 1
    elif damage == "flip_trailer":
        data[-5] ^= 1
    elif damage == "empty":
        data = b""
    else:
        data = b"import os; os.system('echo pwned')\n" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=str(path)):
        ddl.load(path)


def test_unsupported_objects_are_refused_before_writing(tmp_path):
    path = tmp_path / "x.ddl"
    with pytest.raises(TypeError, match=r"root\['f'\].*function"):
        ddl.save({"f": lambda: 1}, path)
    with pytest.raises(TypeError, match="object"):
        ddl.save(np.array([object()]), path)
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "a.ddl"
    ddl.save({"v": 1}, path)
    ddl.save({"v": 2}, path)
    assert ddl.load(path) == {"v": 2}
    assert os.listdir(tmp_path) == ["a.ddl"]


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ddl.load(tmp_path / "nope.ddl")
