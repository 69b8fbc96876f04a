"""The C core without Python: examples/c/train_linear.c, built from csrc/ minus the binding.

It trains a linear model data-parallel on 2 ranks through the public C API alone (tensors,
autograd, SGD, the TCP store, a Gloo process group), launched by `ddl.run --no-python`. This
keeps csrc/include/ddl/ddl.h a real C API: nothing in it may need Python to link or run.
"""
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C/C++ compiler")


def _core_sources():
    out = []
    for d, _, files in os.walk(CSRC):
        if os.path.relpath(d, CSRC).split(os.sep)[0] == "python":
            continue
        out += [os.path.join(d, f) for f in files if f.endswith((".c", ".cc"))]
    return sorted(out)


@pytest.fixture(scope="module")
def train_linear(tmp_path_factory):
    import scipy_openblas32 as sob

    tmp = tmp_path_factory.mktemp("c_api")
    incs = ["-I", os.path.join(CSRC, "include"), "-I", CSRC, "-I", sob.get_include_dir()]
    srcs = _core_sources() + [os.path.join(ROOT, "examples", "c", "train_linear.c")]

    def compile_one(i_src):
        i, src = i_src
        obj = str(tmp / f"{i}.o")
        lang = ["-std=c++17"] if src.endswith(".cc") else ["-std=c11", "-D_GNU_SOURCE"]
        cmd = ["gcc" if src.endswith(".c") else "g++", "-c", "-O1", "-Wall", "-Wextra",
               "-Werror", *lang, *incs, src, "-o", obj]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert r.returncode == 0, f"{src}:\n{r.stderr}"
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objs = list(pool.map(compile_one, enumerate(srcs)))
    exe = str(tmp / "train_linear")
    link = ["g++", *objs, "-o", exe, "-L", sob.get_lib_dir(), "-l" + sob.get_library(),
            "-Wl,-rpath," + sob.get_lib_dir(), "-lgloo", "-lz", "-lm", "-lpthread"]
    r = subprocess.run(link, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return exe


def test_c_program_trains_data_parallel(train_linear, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ddl.run", "--nproc-per-node", "2", "--no-python",
                        train_linear], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = re.findall(r"rank (\d)/2: loss (\S+) max\|w - w\*\| (\S+) bias (\S+) weights (.*)",
                       r.stdout)
    assert sorted(int(x[0]) for x in lines) == [0, 1], r.stdout
    for _, loss, err, bias, _ in lines:
        assert float(loss) < 1e-3  # the noise is 0.01: the fit reaches it
        assert float(err) < 0.01
        assert abs(float(bias) - 0.5) < 0.01
    # averaged gradients keep the replicas identical, to the last printed digit
    assert lines[0][4] == lines[1][4]


def test_c_program_without_a_peer_fails_cleanly(train_linear, tmp_path):
    env = dict(os.environ, RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    env.pop("MASTER_PORT", None)
    r = subprocess.run([train_linear], capture_output=True, text=True, env=env, timeout=60, check=False,
                       cwd=tmp_path)
    assert r.returncode == 2
    assert "MASTER_PORT" in r.stderr
