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


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for the whole test session (a JVM start costs ~10-30 s), for
    the tests marked spark; pyspark is imported only when a test asks for it. The JIT stops at
    C1 and the serial GC is used: the jobs are tiny, so JVM warm-up dominates their time."""
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    s = (SparkSession.builder.master("local[2]").appName("ddl-tests")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
         .config("spark.sql.adaptive.enabled", "false")
         .config("spark.driver.extraJavaOptions", jvm)
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()
