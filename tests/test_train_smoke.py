"""Training smoke tests on the real Fashion-MNIST: the examples' MLP, CNN and a small LSTM
(examples/fashion_common.py) train briefly on a few thousand images and must clearly beat
chance (0.1) on 2000 test images. A few seconds each on 2 cores; skipped when the data files
(Debian's dataset-fashion-mnist, or $DDL_FASHION_MNIST) are absent.

The full runs that reach the benchmark figures are the examples themselves
(docs/benchmarks.md, "Training quality").
"""
import sys
from pathlib import Path

import pytest

import ddl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import fashion_common


@pytest.fixture(scope="module")
def data():
    try:
        return fashion_common.load_data(subset=0, test_subset=2000)
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")


@pytest.fixture(autouse=True)
def _one_thread():
    saved = ddl.get_num_threads()
    ddl.set_num_threads(1)  # deterministic, and fair to whatever else runs beside the tests
    yield
    ddl.set_num_threads(saved)


def _subset(train, n):
    return ddl.data.TensorDataset(train.data[:n], train.targets[:n])


# (model name, build kwargs, training images, epochs, lr, required test accuracy)
CASES = [
    ("mlp", {}, 6000, 2, 1e-3, 0.75),
    ("cnn", {"channels": (8, 16), "hidden": 64}, 3000, 2, 2e-3, 0.70),
    ("lstm", {"hidden": 32}, 4000, 2, 5e-3, 0.50),
]


@pytest.mark.parametrize("name,kwargs,n_train,epochs,lr,required",
                         CASES, ids=[c[0] for c in CASES])
def test_train_beats_chance(data, name, kwargs, n_train, epochs, lr, required):
    train, test = data
    ddl.manual_seed(0)
    model = fashion_common.build_model(name, **kwargs)
    acc, history = fashion_common.train(model, _subset(train, n_train), test, epochs, lr,
                                        log=None)
    assert len(history) == epochs
    # the loss went down and the model learned far more than chance (10 classes)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert acc > required, f"{name}: test accuracy {acc:.3f} after {epochs} epochs on " \
                           f"{n_train} images (needs > {required})"
