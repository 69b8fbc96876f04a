"""What `import ddl` costs: the structural facts are asserted (no subpackage a plain tensor
program does not use is loaded; the OPENBLAS_NUM_THREADS ddl sets while _C loads is gone
afterwards), and the time over `import numpy` is measured and printed, never asserted (the
machine may be loaded). libgloo still loads with _C: docs/limits.md."""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAZY = ["ddl.nn", "ddl.optim", "ddl.data", "ddl.datasets", "ddl.serialization", "ddl.amp",
        "ddl.distributed", "ddl.ml", "ddl.features", "ddl.sparse", "ddl.trainer"]


def run(code, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plain_import_loads_no_subpackage():
    out = run("import sys, os, ddl\n"
              "x = ddl.randn(4, 3).requires_grad_(); (x @ x.T).sum().backward()\n"
              f"print([m for m in {LAZY!r} if m in sys.modules])\n"
              "print('OPENBLAS_NUM_THREADS' in os.environ)\n"
              "print(any('libgloo' in l for l in open('/proc/self/maps')))\n")
    loaded, env_left, gloo = out.split("\n")[:3]
    assert loaded == "[]"
    assert env_left == "False"
    print(f"libgloo mapped after `import ddl`: {gloo}")


def test_subpackages_load_on_first_use():
    out = run("import ddl\n"
              "print(ddl.nn.Linear.__name__, ddl.optim.SGD.__name__, ddl.data.DataLoader.__name__)\n"
              "from ddl import datasets; import ddl.nn.functional as F\n"
              "import tempfile, os\n"
              "p = os.path.join(tempfile.mkdtemp(), 'x.ddl'); ddl.save({'a': ddl.ones(2)}, p)\n"
              "print(ddl.load(p)['a'].tolist()); os.remove(p); os.rmdir(os.path.dirname(p))\n")
    assert out.split("\n")[:2] == ["Linear SGD DataLoader", "[1.0, 1.0]"]


def test_user_openblas_setting_is_kept():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    env.pop("DDL_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    out = run("import os, ddl; print(os.environ['OPENBLAS_NUM_THREADS'], ddl.get_num_threads())",
              env)
    assert out.split() == ["2", "2"]


def best_wall(code, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        run(code)
        ts.append(time.perf_counter() - t)
    return min(ts) * 1e3


def test_measure_import_time():
    """Printed for the record (pytest -s); the target is <= 30 ms over numpy on a quiet
    machine."""
    a = best_wall("import numpy")
    b = best_wall("import numpy, ddl")
    print(f"import numpy {a:.1f} ms, import numpy, ddl {b:.1f} ms: ddl adds {b - a:.1f} ms")
    assert b > 0
