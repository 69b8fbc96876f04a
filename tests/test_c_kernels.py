"""The C kernel harnesses in tests/c/, built with ASan + UBSan and run as programs.

They check each fast kernel against its `_naive` twin and by central finite differences in C,
independent of the Python binding.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

HARNESSES = {
    "test_nn_kernels.c": ["kernels/nn_loss.c", "kernels/nn_act.c", "kernels/nn_rnn.c",
                          "core/error.c"],
    "test_conv_kernels.c": ["kernels/nn_conv.c", "kernels/nn_norm.c", "core/error.c"],
    "test_vmath.c": [],
}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler")
@pytest.mark.parametrize("harness", sorted(HARNESSES))
def test_c_harness(harness, tmp_path):
    import scipy_openblas32 as sob

    exe = tmp_path / harness[:-2]
    cmd = ["gcc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-I", os.path.join(CSRC, "include"), "-I", CSRC, "-I", sob.get_include_dir(),
           os.path.join(ROOT, "tests", "c", harness)]
    cmd += [os.path.join(CSRC, f) for f in HARNESSES[harness]]
    cmd += ["-L", sob.get_lib_dir(), "-l" + sob.get_library(),
            "-Wl,-rpath," + sob.get_lib_dir(), "-lm", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    env.pop("LD_PRELOAD", None)  # the sanitizer run preloads libasan for Python; not needed here
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=240)
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-30:])
    assert run.returncode == 0, f"{harness} failed:\n{tail}"
