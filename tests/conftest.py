import numpy as np
import pytest

import ddl

# @pytest.mark.ddl_world(N) and the rank fixtures (also loaded by the pytest11 entry point of
# an installed ddl, under the same name: registered once)
pytest_plugins = ["ddl.testing.pytest_plugin"]


@pytest.fixture
def rng():
    """A fresh NumPy generator per test, so each test sees the same inputs in any order."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed():
    # ddl's own generator starts from a known state in every test
    ddl.manual_seed(0)
