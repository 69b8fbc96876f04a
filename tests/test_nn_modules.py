"""ddl.nn modules: gradients w.r.t. inputs and parameters (finite differences), the Module
system (names, buffers, state_dict, modes, containers, init, repr), errors on bad input, a
small training run, and optional parity with PyTorch modules (skipped without torch)."""

import math
from collections import OrderedDict

import numpy as np
import pytest
from _gradcheck import away_from_zero, distinct, gradcheck, leaf

import ddl
from ddl import nn

F32 = np.float32


def t32(a):
    return ddl.tensor(np.asarray(a, dtype=F32))


def i64(a):
    return ddl.tensor(np.asarray(a, dtype=np.int64))


def check_module(m, x, *extra, samples=16, **kw):
    """gradcheck of m(x, *extra) w.r.t. x (when it requires grad) and every parameter."""
    names, wrt = zip(*m.named_parameters()) if list(m.parameters()) else ((), ())
    wrt, names = list(wrt), list(names)
    if x.requires_grad:
        wrt, names = [x] + wrt, ["input"] + names
    return gradcheck(lambda: m(x, *extra), wrt, names=names, samples=samples, **kw)


# ---- gradients of every module -------------------------------------------------------------------


def test_linear_module_grad(rng):
    m = nn.Linear(4, 3)
    check_module(m, leaf(rng.standard_normal((5, 4))))
    check_module(m, leaf(rng.standard_normal((2, 3, 4))))
    check_module(nn.Linear(4, 3, bias=False), leaf(rng.standard_normal((5, 4))))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"stride": 2, "padding": 1},
        {"padding": (1, 2), "dilation": 2},
        {"bias": False},
        {"padding": "same"},
    ],
)
def test_conv2d_module_grad(rng, kw):
    m = nn.Conv2d(2, 3, 3, **kw)
    check_module(m, leaf(rng.standard_normal((2, 2, 6, 7))))


def test_conv2d_module_unbatched_and_1x1(rng):
    check_module(nn.Conv2d(3, 2, 1), leaf(rng.standard_normal((2, 3, 4, 4))))
    m = nn.Conv2d(2, 3, 3, padding=1)
    x = leaf(rng.standard_normal((2, 5, 4)))
    assert m(x).shape == (3, 5, 4)
    check_module(m, x)


@pytest.mark.parametrize(
    "cls,shape",
    [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)), (nn.BatchNorm2d, (3, 3, 2, 3))],
)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_module_grad(rng, cls, shape, affine, training):
    m = cls(3, affine=affine)
    if affine:  # not the identity init, so the checks see the weights
        with ddl.no_grad():
            m.weight.copy_(t32(rng.uniform(0.5, 1.5, 3)))
            m.bias.copy_(t32(rng.standard_normal(3)))
    m.running_mean.copy_(t32(rng.standard_normal(3)))
    m.running_var.copy_(t32(rng.uniform(0.5, 2, 3)))
    m.train(training)
    check_module(m, leaf(rng.standard_normal(shape) * 1.5 + 0.3))


def test_pool_and_shape_modules_grad(rng):
    xd = leaf(distinct(rng, (2, 2, 6, 6)))
    check_module(nn.MaxPool2d(2), xd, eps=1e-3)
    check_module(nn.MaxPool2d(3, stride=2, padding=1), xd, eps=1e-3)
    x = leaf(rng.standard_normal((2, 2, 6, 5)))
    check_module(nn.AvgPool2d(3, stride=2, padding=1), x)
    check_module(nn.AdaptiveAvgPool2d((2, 3)), x)
    check_module(nn.Flatten(), x)
    check_module(nn.Identity(), x)


@pytest.mark.parametrize(
    "m",
    [
        nn.ReLU(),
        nn.LeakyReLU(0.1),
        nn.GELU(),
        nn.GELU("tanh"),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.Softmax(dim=1),
        nn.LogSoftmax(dim=0),
    ],
    ids=repr,
)
def test_activation_module_grad(rng, m):
    check_module(m, leaf(away_from_zero(rng, (4, 5), margin=0.05)), eps=1e-2, samples=20)


def test_dropout_module_grad(rng):
    m = nn.Dropout(0.4)
    x = leaf(rng.standard_normal((6, 7)))

    def fn():
        ddl.manual_seed(11)
        return m(x)

    gradcheck(fn, [x], samples=30)
    m.eval()
    check_module(m, x)


def test_embedding_module_grad(rng):
    m = nn.Embedding(7, 3)
    idx = i64([[0, 3, 3], [6, 3, 1]])
    gradcheck(lambda: m(idx), [m.weight], names=["weight"], samples=21)


def test_loss_modules_grad(rng):
    x, y = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((4, 3)))
    t = i64([2, 0, 1, 1])
    for m in (
        nn.MSELoss(),
        nn.L1Loss(reduction="sum"),
        nn.BCEWithLogitsLoss(pos_weight=t32([1, 2, 0.5])),
    ):
        gradcheck(lambda m=m: m(x, y), [x, y], names=["input", "target"])
    for m in (
        nn.CrossEntropyLoss(label_smoothing=0.1),
        nn.NLLLoss(reduction="none"),
        nn.CrossEntropyLoss(ignore_index=1, reduction="sum"),
    ):
        gradcheck(lambda m=m: m(x, t), [x])


def test_sequential_mlp_grad(rng):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x = leaf(rng.standard_normal((5, 4)))
    t = i64([0, 2, 1, 1, 0])
    loss = nn.CrossEntropyLoss()
    names, params = zip(*model.named_parameters())
    gradcheck(lambda: loss(model(x), t), [x, *params], names=["x", *names])


def test_small_cnn_grad(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    x = leaf(rng.standard_normal((3, 1, 4, 4)))
    names, params = zip(*model.named_parameters())
    gradcheck(lambda: model(x), [x, *params], names=["x", *names], samples=12)


# ---- names, buffers, traversal -------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2, bias=False)])
        self.head = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.Tanh()))
        self.scale = nn.Parameter(ddl.ones(1))
        self.register_buffer("step", ddl.zeros((), dtype=ddl.int64))
        self.register_buffer("cache", ddl.zeros(2), persistent=False)

    def forward(self, x):
        return x


NET_PARAMS = [
    "scale",
    "conv.weight",
    "conv.bias",
    "bn.weight",
    "bn.bias",
    "layers.0.weight",
    "layers.0.bias",
    "layers.2.weight",
    "head.fc.weight",
    "head.fc.bias",
]
NET_BUFFERS = ["step", "cache", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]


def test_named_parameters_and_buffers():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_PARAMS
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [n for n, _ in net.named_buffers()] == NET_BUFFERS
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.named_parameters(prefix="m")][:2] == ["m.scale", "m.conv.weight"]
    assert list(dict(nn.Linear(2, 3).named_parameters())) == ["weight", "bias"]
    assert list(dict(nn.Linear(2, 3, bias=False).named_parameters())) == ["weight"]
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_buffers()] == [
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert bn.num_batches_tracked.dtype is ddl.int64 and bn.num_batches_tracked.shape == ()
    assert next(iter(bn.buffers())) is bn.running_mean
    nb = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert list(nb.parameters()) == [] and list(nb.buffers()) == []


def test_shared_parameters_are_listed_once():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    s = nn.Sequential(a, b, a)
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert len(list(s.modules())) == 3  # a is listed once


def test_children_and_modules():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["conv", "bn", "layers", "head"]
    assert list(net.children())[2] is net.layers
    names = [n for n, _ in net.named_modules()]
    assert names == [
        "",
        "conv",
        "bn",
        "layers",
        "layers.0",
        "layers.1",
        "layers.2",
        "head",
        "head.fc",
        "head.act",
    ]
    assert next(iter(net.modules())) is net
    assert net.head.fc is net.head[0] and net.head.act is net.head[-1]


def test_state_dict_keys_and_values():
    net = Net()
    sd = net.state_dict()
    assert list(sd) == [
        "scale",
        "step",
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
        "layers.0.weight",
        "layers.0.bias",
        "layers.2.weight",
        "head.fc.weight",
        "head.fc.bias",
    ]
    assert "cache" not in sd  # non-persistent buffer
    assert list(nn.BatchNorm2d(2).state_dict()) == [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    # detached, sharing memory with the parameters
    assert not sd["conv.weight"].requires_grad
    np.testing.assert_array_equal(sd["conv.weight"].numpy(), net.conv.weight.detach().numpy())
    sd["conv.bias"].numpy()[0] = 42.0
    assert net.conv.bias[0].item() == 42.0
    kv = net.state_dict(keep_vars=True)
    assert kv["conv.weight"] is net.conv.weight


def test_load_state_dict_round_trip(rng):
    a, b = Net(), Net()
    x = t32(rng.standard_normal((3, 4)))
    assert not np.array_equal(a.layers[0](x).numpy(), b.layers[0](x).numpy())
    a.bn.running_mean.copy_(t32([1.0, 2.0]))
    a.bn.num_batches_tracked.fill_(5)
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert repr(res) == "<All keys matched successfully>"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    np.testing.assert_array_equal(a.layers[0](x).numpy(), b.layers[0](x).numpy())
    assert b.bn.num_batches_tracked.item() == 5
    # copied, not aliased; parameters stay the same objects and keep requiring grad
    w = b.conv.weight
    b.load_state_dict(Net().state_dict())
    assert b.conv.weight is w and w.requires_grad
    assert not np.array_equal(a.conv.weight.numpy(), b.conv.weight.numpy())


def test_load_state_dict_strict_errors():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    sd = net.state_dict()
    missing = OrderedDict((k, v) for k, v in sd.items() if k != "1.running_var")
    with pytest.raises(nn.StateDictError, match=r'Missing key\(s\) in state_dict: "1.running_var"'):
        net.load_state_dict(missing)
    extra = OrderedDict(sd)
    extra["2.weight"] = ddl.zeros(3)
    with pytest.raises(nn.StateDictError, match=r'Unexpected key\(s\) in state_dict: "2.weight"'):
        net.load_state_dict(extra)
    bad = OrderedDict(sd)
    bad["0.weight"] = ddl.zeros(4, 2)
    with pytest.raises(
        nn.StateDictError, match=r"size mismatch for 0.weight: .*\(4, 2\).*\(4, 3\)"
    ) as ei:
        net.load_state_dict(bad)
    assert isinstance(ei.value, RuntimeError) and isinstance(ei.value, ValueError)
    # a shape mismatch is an error even when not strict; nothing was copied
    before = net[0].bias.numpy().copy()
    bad["0.bias"] = ddl.full((4,), 9.0)
    with pytest.raises(ValueError, match="size mismatch for 0.weight"):
        net.load_state_dict(bad, strict=False)
    np.testing.assert_array_equal(net[0].bias.numpy(), before)
    # not strict: missing and unexpected keys are reported, the rest loaded
    partial = OrderedDict([("0.bias", ddl.full((4,), 3.0)), ("junk", ddl.zeros(1))])
    res = net.load_state_dict(partial, strict=False)
    assert res.unexpected_keys == ["junk"] and "0.weight" in res.missing_keys
    assert "0.bias" not in res.missing_keys
    np.testing.assert_array_equal(net[0].bias.numpy(), np.full(4, 3.0, F32))


# ---- modes, grads, dtype, apply ------------------------------------------------------------------


def test_train_eval_switches_dropout_and_batchnorm(rng):
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.BatchNorm1d(8))
    x = t32(rng.standard_normal((16, 3)))
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    y1, y2 = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(y1, y2)  # eval: no dropout, running stats
    h = model[0](x).numpy().astype(np.float64)
    bn = model[2]
    ref = (h - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + bn.eps)
    np.testing.assert_allclose(y1, ref, rtol=1e-5, atol=1e-5)
    assert bn.num_batches_tracked.item() == 0
    model.train()
    assert all(m.training for m in model.modules())
    y3 = model(x).numpy()
    assert bn.num_batches_tracked.item() == 1
    assert not np.allclose(y3, y1)
    # training: the output is batch-normalized (per feature mean 0)
    np.testing.assert_allclose(y3.mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(bn.running_mean.numpy(), 0)
    model.train(False)
    assert not model[1].training


def test_batchnorm_momentum_none_is_cumulative(rng):
    bn = nn.BatchNorm1d(2, momentum=None)
    xs = [rng.standard_normal((5, 2)).astype(F32) for _ in range(3)]
    for x in xs:
        bn(t32(x))
    np.testing.assert_allclose(
        bn.running_mean.numpy(),
        np.mean([x.astype(np.float64).mean(0) for x in xs], axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
    assert bn.num_batches_tracked.item() == 3


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval(rng):
    bn = nn.BatchNorm2d(2, track_running_stats=False).eval()
    y = bn(t32(rng.standard_normal((3, 2, 2, 2)) * 4 + 1)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_zero_grad(rng):
    m = nn.Linear(3, 2)
    m(t32(rng.standard_normal((4, 3)))).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(m.weight.grad.numpy(), 0)
    np.testing.assert_array_equal(m.bias.grad.numpy(), 0)
    m(t32(rng.standard_normal((4, 3)))).sum().backward()
    np.testing.assert_array_equal(m.bias.grad.numpy(), 4)  # accumulated onto the zeros
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None
    m.zero_grad()  # no grads: a no-op


def test_backward_twice_accumulates(rng):
    m = nn.Conv2d(2, 2, 3, padding=1)
    out = m(t32(rng.standard_normal((1, 2, 4, 4)))).sum()
    out.backward(retain_graph=True)
    g = m.weight.grad.numpy().copy()
    out.backward()
    np.testing.assert_allclose(m.weight.grad.numpy(), 2 * g, rtol=1e-6)


def test_to_float64_converts_params_and_buffers(rng):
    net = Net()
    shared = nn.Linear(4, 4)
    net.layers.append(shared)
    net.layers[2] = nn.Linear(4, 4)
    net.layers[2].weight = shared.weight  # tied
    net.layers[0](t32(rng.standard_normal((2, 4)))).sum().backward()
    assert net.to(ddl.float64) is net
    for name, p in net.named_parameters():
        assert isinstance(p, nn.Parameter) and p.dtype is ddl.float64 and p.requires_grad, name
    assert net.layers[2].weight is net.layers[3].weight  # still tied
    assert net.layers[0].weight.grad.dtype is ddl.float64
    assert net.bn.running_mean.dtype is ddl.float64
    assert net.bn.num_batches_tracked.dtype is ddl.int64  # integer buffers stay
    assert net.step.dtype is ddl.int64
    assert net.state_dict()["conv.weight"].dtype is ddl.float64
    assert net.float() is net and net.conv.weight.dtype is ddl.float32
    assert net.double().conv.bias.dtype is ddl.float64
    with pytest.raises(TypeError):
        net.to(ddl.int64)


def test_apply_visits_children_first():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    seen = []

    def init(m):
        seen.append(type(m).__name__)
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)
            nn.init.zeros_(m.bias)

    assert model.apply(init) is model
    assert seen == ["Linear", "Linear", "ReLU", "Sequential", "Sequential"]
    for m in model.modules():
        if isinstance(m, nn.Linear):
            np.testing.assert_array_equal(m.weight.numpy(), 0.5)
            np.testing.assert_array_equal(m.bias.numpy(), 0)


def test_requires_grad_(rng):
    m = nn.Linear(2, 2).requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    x = leaf(rng.standard_normal((3, 2)))
    m(x).sum().backward()
    assert m.weight.grad is None and x.grad is not None
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())


# ---- attribute registration ----------------------------------------------------------------------


def test_attribute_registration():
    m = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="weight"):
        m.weight = ddl.zeros(3, 2)  # a plain tensor for a parameter
    m.weight = nn.Parameter(ddl.zeros(3, 2))
    assert list(dict(m.named_parameters())) == ["weight", "bias"]
    m.bias = None  # allowed: the parameter slot stays, empty
    assert list(dict(m.named_parameters())) == ["weight"]
    assert "bias" not in m.state_dict()
    assert m(t32(np.ones((1, 2)))).shape == (1, 3)
    seq = nn.Sequential(nn.ReLU())
    with pytest.raises(TypeError, match="module '0'"):
        setattr(seq, "0", ddl.zeros(1))  # a tensor where a submodule is
    m.note = "plain attribute"
    assert m.note == "plain attribute" and "note" not in dict(m.named_parameters())
    m.sub = nn.Tanh()
    assert list(dict(m.named_children())) == ["sub"]
    del m.sub
    assert list(m.children()) == []
    with pytest.raises(AttributeError, match="nonexistent"):
        _ = m.nonexistent
    bn = nn.BatchNorm1d(2)
    bn.running_mean = ddl.ones(2)  # buffers take tensors
    assert next(iter(dict(bn.named_buffers()))) == "running_mean"
    with pytest.raises(TypeError):
        bn.running_mean = [1.0, 2.0]
    with pytest.raises(TypeError):
        m.register_parameter("p", ddl.zeros(1))
    with pytest.raises(TypeError):
        m.add_module("x", "not a module")


def test_module_needs_init_before_attributes():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="__init__"):
        Bad()


def test_parameter_basics():
    p = nn.Parameter(ddl.ones(2, 2))
    assert isinstance(p, ddl.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\n")
    assert not nn.Parameter(ddl.ones(2), requires_grad=False).requires_grad
    with pytest.raises(TypeError):
        nn.Parameter([1.0, 2.0])


# ---- containers ----------------------------------------------------------------------------------


def test_sequential_indexing_and_iteration(rng):
    a, b, c = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(dict(sub.named_children())) == ["1", "2"]  # names kept, as PyTorch
    with pytest.raises(IndexError):
        s[3]
    x = t32(rng.standard_normal((5, 3)))
    np.testing.assert_array_equal(s(x).numpy(), c(b(a(x))).numpy())
    s.append(nn.Tanh())
    assert len(s) == 4 and list(dict(s.named_children()))[-1] == "3"
    d = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert list(dict(d.named_parameters())) == ["fc.weight", "fc.bias"]
    assert d.fc is a


def test_modulelist(rng):
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ml) == 3 and isinstance(ml[-1], nn.Linear)
    assert [n for n, _ in ml.named_parameters()][:3] == ["0.weight", "0.bias", "1.weight"]
    ml.append(nn.ReLU()).extend([nn.Tanh(), nn.Sigmoid()])
    assert [type(m).__name__ for m in ml] == ["Linear"] * 3 + ["ReLU", "Tanh", "Sigmoid"]
    ml[1] = nn.Identity()
    assert isinstance(ml[1], nn.Identity) and list(dict(ml.named_children()))[1] == "1"
    assert isinstance(ml[2:4], nn.ModuleList) and len(ml[2:4]) == 2
    with pytest.raises(IndexError):
        ml[10]
    assert len(nn.ModuleList()) == 0


def test_moduledict():
    md = nn.ModuleDict({"enc": nn.Linear(2, 3), "act": nn.ReLU()})
    assert list(md) == ["enc", "act"] and len(md) == 2 and "enc" in md and "x" not in md
    assert isinstance(md["enc"], nn.Linear)
    md["dec"] = nn.Linear(3, 2)
    assert list(md.keys()) == ["enc", "act", "dec"]
    assert [k for k, _ in md.items()] == ["enc", "act", "dec"]
    assert [n for n, _ in md.named_parameters()] == [
        "enc.weight",
        "enc.bias",
        "dec.weight",
        "dec.bias",
    ]
    del md["act"]
    assert list(md) == ["enc", "dec"] and len(list(md.values())) == 2
    with pytest.raises(KeyError):
        md["act"]


# ---- default initialization ----------------------------------------------------------------------


def test_default_init_ranges():
    lin = nn.Linear(50, 40)
    bound = 1 / math.sqrt(50)
    for p in (lin.weight, lin.bias):
        v = p.numpy()
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound
    # uniform on [-b, b]: std b / sqrt(3)
    assert abs(lin.weight.numpy().std() - bound / math.sqrt(3)) < 0.1 * bound
    conv = nn.Conv2d(4, 6, 3)
    cb = 1 / math.sqrt(4 * 9)
    assert np.abs(conv.weight.numpy()).max() <= cb and np.abs(conv.bias.numpy()).max() <= cb
    bn = nn.BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight.numpy(), 1)
    np.testing.assert_array_equal(bn.bias.numpy(), 0)
    np.testing.assert_array_equal(bn.running_mean.numpy(), 0)
    np.testing.assert_array_equal(bn.running_var.numpy(), 1)
    assert bn.num_batches_tracked.item() == 0
    emb = nn.Embedding(200, 10, padding_idx=3)
    w = emb.weight.numpy()
    np.testing.assert_array_equal(w[3], 0)
    assert abs(w.std() - 1) < 0.1 and abs(w.mean()) < 0.1
    lstm = nn.LSTM(3, 16, 2)
    for name, p in lstm.named_parameters():
        assert np.abs(p.numpy()).max() <= 0.25, name
    # two layers are not initialized alike
    assert not np.array_equal(nn.Linear(3, 3).weight.numpy(), nn.Linear(3, 3).weight.numpy())


def test_init_functions():
    w = ddl.empty(30, 20)
    nn.init.xavier_uniform_(w)
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 50)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 20)) < 0.03
    nn.init.ones_(w)
    np.testing.assert_array_equal(w.numpy(), 1)
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError):
        nn.init.kaiming_uniform_(ddl.empty(3))


# ---- repr ----------------------------------------------------------------------------------------


REPRS = [
    (lambda: nn.Linear(2, 3, bias=False), "Linear(in_features=2, out_features=3, bias=False)"),
    (
        lambda: nn.Conv2d(3, 4, 3, padding=1, bias=False),
        "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)",
    ),
    (
        lambda: nn.Conv2d(3, 4, (3, 2), stride=2, dilation=2),
        "Conv2d(3, 4, kernel_size=(3, 2), stride=(2, 2), dilation=(2, 2))",
    ),
    (
        lambda: nn.MaxPool2d(2),
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)",
    ),
    (lambda: nn.AvgPool2d(3, 2, 1), "AvgPool2d(kernel_size=3, stride=2, padding=1)"),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), "AdaptiveAvgPool2d(output_size=(2, 3))"),
    (lambda: nn.Dropout(0.2), "Dropout(p=0.2, inplace=False)"),
    (lambda: nn.Flatten(), "Flatten(start_dim=1, end_dim=-1)"),
    (lambda: nn.Softmax(dim=1), "Softmax(dim=1)"),
    (lambda: nn.LeakyReLU(), "LeakyReLU(negative_slope=0.01)"),
    (lambda: nn.GELU("tanh"), "GELU(approximate='tanh')"),
    (lambda: nn.ReLU(), "ReLU()"),
    (lambda: nn.CrossEntropyLoss(), "CrossEntropyLoss()"),
    (lambda: nn.Embedding(5, 3, padding_idx=0), "Embedding(5, 3, padding_idx=0)"),
    (lambda: nn.Embedding(5, 3), "Embedding(5, 3)"),
    (lambda: nn.RNN(3, 4, 2), "RNN(3, 4, num_layers=2)"),
    (lambda: nn.GRU(3, 4, batch_first=True, bias=False), "GRU(3, 4, bias=False, batch_first=True)"),
    (lambda: nn.LSTM(3, 4, num_layers=2, dropout=0.5), "LSTM(3, 4, num_layers=2, dropout=0.5)"),
    (lambda: nn.Sequential(), "Sequential()"),
    (
        lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU()),
        "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): ReLU()\n)",
    ),
    (lambda: nn.ModuleDict({"a": nn.Tanh()}), "ModuleDict(\n  (a): Tanh()\n)"),
]


@pytest.mark.parametrize(
    "make,expected", REPRS, ids=[r[1].split("(")[0] + str(i) for i, r in enumerate(REPRS)]
)
def test_repr(make, expected):
    assert repr(make()) == expected


def test_repr_nested_and_batchnorm():
    net = nn.Sequential(nn.Sequential(nn.BatchNorm2d(4)), nn.Identity())
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Sequential(\n"
        "    (0): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  )\n"
        "  (1): Identity()\n"
        ")"
    )


# ---- bad input -----------------------------------------------------------------------------------


def test_module_input_errors(rng):
    with pytest.raises(ValueError, match=r"in_features=4.*\(2, 3\)"):
        nn.Linear(4, 2)(t32(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"in_channels=3.*2 channels"):
        nn.Conv2d(3, 4, 3)(t32(np.ones((1, 2, 5, 5))))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\).*2 channels"):
        nn.BatchNorm2d(3)(t32(np.ones((2, 2, 3, 3))))
    with pytest.raises(ValueError, match="4-d input"):
        nn.BatchNorm2d(3)(t32(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\)"):
        nn.BatchNorm1d(3)(t32(np.ones((2, 4))))
    with pytest.raises(ValueError, match="kernel"):
        nn.Conv2d(1, 1, 5)(t32(np.ones((1, 1, 3, 3))))
    with pytest.raises(ValueError, match="kernel"):
        nn.MaxPool2d(4)(t32(np.ones((1, 1, 3, 3))))
    with pytest.raises(TypeError, match="float32"):
        nn.Linear(3, 2)(ddl.tensor(np.ones((2, 3))))
    with pytest.raises(TypeError, match="float32"):
        nn.Conv2d(1, 1, 3)(ddl.tensor(np.ones((1, 1, 4, 4))))
    with pytest.raises(TypeError, match="float32"):
        nn.BatchNorm2d(1)(ddl.tensor(np.ones((2, 1, 2, 2))))
    assert nn.BatchNorm2d(1).double()(ddl.tensor(np.ones((2, 1, 2, 2)))).dtype is ddl.float64
    assert nn.Linear(3, 2).double()(ddl.tensor(np.ones((2, 3)))).dtype is ddl.float64
    with pytest.raises(IndexError, match="target 5 at position 1"):
        nn.CrossEntropyLoss()(t32(np.zeros((2, 3))), i64([0, 5]))
    with pytest.raises(ValueError, match="same shape"):
        nn.MSELoss()(t32(np.zeros((2, 3))), t32(np.zeros(3)))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(3, 2, padding_idx=3)


def test_module_constructor_errors():
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"weight must have shape \(2,\)"):
        nn.CrossEntropyLoss(weight=ddl.ones(3))(t32(np.zeros((4, 2))), i64([0, 1, 0, 1]))


# ---- a small training run ------------------------------------------------------------------------


def test_mlp_learns_a_separable_problem():
    rs = np.random.RandomState(0)
    X = rs.standard_normal((256, 2))
    direction = np.array([1.0, -2.0])
    margin = X @ direction
    keep = np.abs(margin) > 0.3  # linearly separable with a margin
    X, y = X[keep].astype(F32), (margin[keep] > 0).astype(np.int64)
    ddl.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = t32(X), i64(y)
    first = None
    for _ in range(200):
        loss = loss_fn(model(xt), yt)
        first = loss.item() if first is None else first
        model.zero_grad()
        loss.backward()
        with ddl.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    with ddl.no_grad():
        pred = model(xt).numpy().argmax(axis=1)
    acc = (pred == y).mean()
    assert acc > 0.95, (acc, first, loss.item())
    assert loss.item() < 0.5 * first


# ---- optional parity with PyTorch modules --------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def copy_to_torch(torch, m, tm):
    """Copy ddl module m's state into torch module tm; the state_dict keys must agree."""
    sd = m.state_dict()
    tsd = tm.state_dict()
    assert list(sd) == list(tsd)
    with torch.no_grad():
        for k, v in sd.items():
            assert tuple(v.shape) == tuple(tsd[k].shape), k
            tsd[k].copy_(torch.tensor(v.numpy()))


def module_parity(torch, m, tm, x, rtol=1e-5, atol=1e-6, extra=(), textra=()):
    """Same input and projection: compare outputs, input and parameter gradients."""
    xt = torch.tensor(x.detach().numpy().copy(), requires_grad=x.requires_grad)
    y, yt = m(x, *extra), tm(xt, *textra)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=rtol, atol=atol)
    R = np.random.RandomState(5).standard_normal(tuple(y.shape)).astype(F32)
    m.zero_grad()
    tm.zero_grad()
    if x.requires_grad:
        x.grad = None
    (y * t32(R)).sum().backward()
    (yt * torch.tensor(R)).sum().backward()
    if x.requires_grad:
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=rtol, atol=atol)
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(
            p.grad.numpy(), tparams[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name
        )


def test_torch_parity_linear_conv_embedding(rng):
    torch = _torch()
    tnn = torch.nn
    for m, tm, shape in (
        (nn.Linear(5, 4), tnn.Linear(5, 4), (3, 2, 5)),
        (nn.Linear(5, 4, bias=False), tnn.Linear(5, 4, bias=False), (3, 5)),
    ):
        copy_to_torch(torch, m, tm)
        module_parity(torch, m, tm, leaf(rng.standard_normal(shape)))
    for kw in (
        {},
        {"stride": 2, "padding": 1, "dilation": (2, 1)},
        {"padding": "same", "bias": False},
    ):
        m, tm = nn.Conv2d(3, 4, 3, **kw), tnn.Conv2d(3, 4, 3, **kw)
        copy_to_torch(torch, m, tm)
        module_parity(torch, m, tm, leaf(rng.standard_normal((2, 3, 8, 7))), rtol=1e-4, atol=1e-5)
    m, tm = nn.Embedding(6, 3, padding_idx=2), tnn.Embedding(6, 3, padding_idx=2)
    copy_to_torch(torch, m, tm)
    idx = np.array([[1, 2, 1], [5, 2, 0]])
    y, yt = m(i64(idx)), tm(torch.tensor(idx))
    np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
    R = rng.standard_normal((2, 3, 3)).astype(F32)
    (y * t32(R)).sum().backward()
    (yt * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(m.weight.grad.numpy(), tm.weight.grad.numpy(), rtol=1e-6)


def test_torch_parity_batchnorm2d_running_stats(rng):
    torch = _torch()
    for kw in ({}, {"affine": False, "momentum": 0.3}, {"momentum": None}):
        m, tm = nn.BatchNorm2d(3, **kw), torch.nn.BatchNorm2d(3, **kw)
        if m.affine:
            with ddl.no_grad():
                m.weight.copy_(t32(rng.uniform(0.5, 1.5, 3)))
                m.bias.copy_(t32(rng.standard_normal(3)))
        copy_to_torch(torch, m, tm)
        for _ in range(3):  # three training steps
            module_parity(
                torch, m, tm, leaf(rng.standard_normal((4, 3, 3, 2)) * 2 + 1), rtol=1e-4, atol=1e-5
            )
        tsd = tm.state_dict()
        for k, v in m.state_dict().items():
            np.testing.assert_allclose(v.numpy(), tsd[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        assert m.num_batches_tracked.item() == 3
        m.eval()
        tm.eval()
        module_parity(torch, m, tm, leaf(rng.standard_normal((2, 3, 2, 2))), rtol=1e-4, atol=1e-5)


def test_torch_parity_pools_and_losses(rng):
    torch = _torch()
    tnn = torch.nn
    xd = leaf(distinct(rng, (2, 3, 7, 6)))
    x = leaf(rng.standard_normal((2, 3, 7, 6)))
    for m, tm, inp in (
        (nn.MaxPool2d(2), tnn.MaxPool2d(2), xd),
        (nn.MaxPool2d(3, 2, 1), tnn.MaxPool2d(3, 2, 1), xd),
        (nn.AvgPool2d(3, 2, 1), tnn.AvgPool2d(3, 2, 1), x),
        (nn.AvgPool2d(2), tnn.AvgPool2d(2), x),
        (nn.AdaptiveAvgPool2d((4, 4)), tnn.AdaptiveAvgPool2d((4, 4)), x),
        (nn.AdaptiveAvgPool2d(1), tnn.AdaptiveAvgPool2d(1), x),
    ):
        assert repr(m) == repr(tm)
        module_parity(torch, m, tm, inp)
    logits = leaf(rng.standard_normal((6, 4)))
    target = np.array([3, 0, 1, -100, 2, 2])
    for m, tm in (
        (nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()),
        (
            nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none"),
            tnn.CrossEntropyLoss(label_smoothing=0.2, reduction="none"),
        ),
        (nn.NLLLoss(reduction="sum"), tnn.NLLLoss(reduction="sum")),
    ):
        module_parity(torch, m, tm, logits, extra=(i64(target),), textra=(torch.tensor(target),))
    y = rng.uniform(0, 1, (6, 4)).astype(F32)
    pw = rng.uniform(0.5, 2, 4).astype(F32)
    for m, tm in (
        (nn.MSELoss(), tnn.MSELoss()),
        (nn.L1Loss(reduction="sum"), tnn.L1Loss(reduction="sum")),
        (
            nn.BCEWithLogitsLoss(pos_weight=t32(pw)),
            tnn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw)),
        ),
    ):
        module_parity(torch, m, tm, logits, extra=(t32(y),), textra=(torch.tensor(y),))


def test_torch_parity_names_and_reprs():
    torch = _torch()
    tnn = torch.nn
    pairs = [
        (
            nn.Sequential(
                nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
            ),
            tnn.Sequential(
                tnn.Conv2d(1, 2, 3), tnn.BatchNorm2d(2), tnn.ReLU(), tnn.Flatten(), tnn.Linear(8, 3)
            ),
        ),
        (nn.LSTM(3, 4, 2), tnn.LSTM(3, 4, 2)),
        (nn.GRU(3, 4, bias=False, batch_first=True), tnn.GRU(3, 4, bias=False, batch_first=True)),
        (
            nn.ModuleDict({"e": nn.Embedding(4, 2, padding_idx=1), "d": nn.Dropout(0.1)}),
            tnn.ModuleDict({"e": tnn.Embedding(4, 2, padding_idx=1), "d": tnn.Dropout(0.1)}),
        ),
    ]
    for m, tm in pairs:
        assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()]
        assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()]
        assert list(m.state_dict()) == list(tm.state_dict())
        assert [n for n, _ in m.named_modules()] == [n for n, _ in tm.named_modules()]
        if not any(isinstance(x, nn.BatchNorm2d) for x in m.modules()):
            assert repr(m) == repr(tm)  # (recent PyTorch adds a `bias=` to BatchNorm's repr)
