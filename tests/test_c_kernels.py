"""The C kernel harnesses in tests/c/, built with ASan + UBSan and run as programs.

They check each fast kernel against float64 references (and its `_naive` twin where it has
one) and its backward by central finite differences of a float64 reference objective, in C,
independent of the Python binding. The tolerances are tight enough to fail on a 0.1% error in a
backward kernel: the planted-error tests build the harnesses once more with
-DDDL_PLANT_BACKWARD_ERROR=1e-3 (csrc/kernels/common.h) and require them to fail, naming the
kernel.
"""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

HARNESSES = {
    "test_nn_kernels.c": ["kernels/nn_loss.c", "kernels/nn_act.c", "kernels/nn_rnn.c",
                          "core/error.c", "core/runtime.c", "core/gemm_bf16.c",
                          "core/gemm_bf16_avx512.c"],
    "test_conv_kernels.c": ["kernels/nn_conv.c", "kernels/nn_linear.c", "kernels/nn_pool.c",
                            "kernels/nn_norm.c", "core/error.c", "core/runtime.c",
                            "core/gemm_bf16.c", "core/gemm_bf16_avx512.c"],
    "test_vmath.c": [],
}

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler")


def build(harness, tmp_path, *flags):
    import scipy_openblas32 as sob

    exe = tmp_path / harness[:-2]
    cmd = ["gcc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", *flags,
           "-I", os.path.join(CSRC, "include"), "-I", CSRC, "-I", sob.get_include_dir(),
           os.path.join(ROOT, "tests", "c", harness)]
    cmd += [os.path.join(CSRC, f) for f in HARNESSES[harness]]
    cmd += ["-L", sob.get_lib_dir(), "-l" + sob.get_library(),
            "-Wl,-rpath," + sob.get_lib_dir(), "-lm", "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return exe


def run(exe, seed=""):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1",
               DDL_HARNESS_SEED=seed)
    env.pop("LD_PRELOAD", None)  # the sanitizer run preloads libasan for Python; not needed here
    done = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=240,
                          check=False)
    return done.returncode, done.stdout + done.stderr


@needs_gcc
@pytest.mark.parametrize("harness", sorted(HARNESSES))
def test_c_harness(harness, tmp_path):
    exe = build(harness, tmp_path)
    for seed in ("", "1", "2"):  # the tolerances hold beyond one draw of the random inputs
        rc, out = run(exe, seed)
        tail = "\n".join(out.splitlines()[-30:])
        assert rc == 0, f"{harness} (seed {seed or 'default'}) failed:\n{tail}"


# harness -> the gradient checks that the planted error must fail, and ones it must leave alone
PLANTED = {
    "test_nn_kernels.c": (["softmax_backward dinp", "log_softmax_backward dinp"],
                          ["ce mean eps=0.1 ignore dlogits", "gelu(exact) dinp", "lstm L0 dW_hh"]),
    "test_conv_kernels.c": (["conv2d_backward dinp"],
                            ["conv2d_backward dweight", "linear_backward dinp",
                             "batchnorm_backward dinp"]),
}


@needs_gcc
@pytest.mark.parametrize("harness", sorted(PLANTED))
def test_c_harness_fails_on_planted_backward_error(harness, tmp_path):
    exe = build(harness, tmp_path, "-DDDL_PLANT_BACKWARD_ERROR=1e-3")
    rc, out = run(exe)
    assert rc != 0, f"{harness} passed with a 0.1% error planted in a backward kernel"
    must_fail, must_pass = PLANTED[harness]
    for name in must_fail:
        assert re.search(r"^  FAIL " + re.escape(name) + " ", out, re.MULTILINE), (name, out[-3000:])
    for name in must_pass:
        assert re.search(r"^  ok   " + re.escape(name), out, re.MULTILINE), (name, out[-3000:])
        assert not re.search(r"^  FAIL " + re.escape(name), out, re.MULTILINE), (name, out[-3000:])
