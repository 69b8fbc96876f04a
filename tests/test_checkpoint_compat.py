"""ddl.save / ddl.load with PyTorch's calling convention: file objects, map_location,
weights_only, clear refusals of whole modules, optimizer and scheduler state round trips."""
import io

import pytest

import ddl


def _model():
    return ddl.nn.Sequential(ddl.nn.Linear(3, 4), ddl.nn.ReLU(), ddl.nn.Linear(4, 2))


def test_fileobj_round_trip():
    m = _model()
    buf = io.BytesIO()
    ddl.save(m.state_dict(), buf)
    buf.seek(0)
    sd = ddl.load(buf, map_location="cpu", weights_only=True)
    m2 = _model()
    m2.load_state_dict(sd)
    x = ddl.randn(5, 3)
    assert m2(x).tolist() == m(x).tolist()


def test_open_file_and_map_location_forms(tmp_path, monkeypatch):
    p = tmp_path / "c.pt"
    with open(p, "wb") as f:
        ddl.save({"step": 3, "w": ddl.ones(2)}, f)
    for loc in (None, "cpu", ddl.device("cpu"), {"cuda:0": "cpu"},
                lambda storage, loc: storage):
        got = ddl.load(p, map_location=loc)
        assert got["step"] == 3 and got["w"].tolist() == [1, 1]
    with open(p, "rb") as f:
        assert ddl.load(f, weights_only=False)["step"] == 3  # the format holds data only
    monkeypatch.delenv("DDL_CUDA_AS_CPU", raising=False)
    with pytest.raises(RuntimeError, match="DDL_CUDA_AS_CPU"):
        ddl.load(p, map_location="cuda:0")
    with pytest.raises(TypeError, match="unexpected keyword"):
        ddl.load(p, bogus=1)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.pt"]  # no temp files left


def test_whole_module_is_refused_with_what_to_save():
    with pytest.raises(TypeError, match=r"model\.state_dict\(\)"):
        ddl.save(_model(), io.BytesIO())
    with pytest.raises(TypeError, match=r"obj\['net'\].*state_dict"):
        ddl.save({"net": _model()}, io.BytesIO())
    opt = ddl.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"opt\.state_dict\(\)"):
        ddl.save(opt, io.BytesIO())
    with pytest.raises(TypeError, match="cannot be saved"):
        ddl.save(object(), io.BytesIO())


@pytest.mark.parametrize("make", [
    lambda p: ddl.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: ddl.optim.Adam(p, lr=0.01),
])
def test_optimizer_and_scheduler_state_round_trip(make):
    m = _model()
    opt = make(m.parameters())
    sched = ddl.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = ddl.randn(8, 3), ddl.randn(8, 2)
    for _ in range(3):
        opt.zero_grad()
        ddl.nn.functional.mse_loss(m(x), y).backward()
        opt.step()
        sched.step()
    buf = io.BytesIO()
    ddl.save({"model": m.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    ck = ddl.load(buf)
    m2 = _model()
    m2.load_state_dict(ck["model"])
    opt2 = make(m2.parameters())
    opt2.load_state_dict(ck["optimizer"])
    sched2 = ddl.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(ck["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    for o, mm in ((opt, m), (opt2, m2)):  # one more identical step each
        o.zero_grad()
        ddl.nn.functional.mse_loss(mm(x), y).backward()
        o.step()
    for a, b in zip(m.parameters(), m2.parameters()):
        assert a.tolist() == b.tolist()
