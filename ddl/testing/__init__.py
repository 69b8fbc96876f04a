"""ddl.testing: helpers for users' test suites.

    from ddl.testing import assert_close
    assert_close(model(x), reference)          # PyTorch's semantics and default tolerances

gradient checks live in ddl.autograd.gradcheck; the pytest plugin that runs a test on N ranks
(`@pytest.mark.ddl_world(2)`) is ddl.testing.pytest_plugin. docs/testing.md is the guide.
"""
from ._comparison import assert_close

__all__ = ["assert_close"]
