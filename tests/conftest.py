import numpy as np
import pytest

import ddl


@pytest.fixture
def rng():
    """A fresh NumPy generator per test, so each test sees the same inputs in any order."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed():
    # ddl's own generator starts from a known state in every test
    ddl.manual_seed(0)
