"""Every input the fuzzers found (fuzz/regressions/<target>/) stays fixed, the seed corpus
passes every target, and a short mutation run of each target finds nothing (the CI's fuzz
stage runs them longer: .ci/run)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fuzz.targets import TARGETS


def _inputs(kind):
    base = os.path.join(ROOT, "fuzz", kind)
    for target in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        for name in sorted(os.listdir(os.path.join(base, target))):
            yield pytest.param(target, os.path.join(base, target, name), id=f"{target}/{name}")


@pytest.mark.parametrize("target, path", list(_inputs("regressions")) + list(_inputs("corpus")))
def test_a_known_input_passes_its_target(target, path):
    with open(path, "rb") as f:
        TARGETS[target](f.read())


def test_the_shard_dtype_that_made_numpy_raise_syntax_error(tmp_path):
    # found by the shard fuzzer: np.dtype("f8,") raises SyntaxError; a manifest must not
    import json

    from ddl.data import ShardedDataset, save_shards
    from ddl.data.shards import _manifest_sum

    d = str(tmp_path / "s")
    save_shards([[1.0, 2.0]], None, d, 1)
    p = os.path.join(d, "manifest.json")
    with open(p) as f:
        m = json.load(f)
    for bad in ("f8,", "(2,)f8", "V8", "f8, i4", "O", "U3"):
        m["x_dtype"] = bad
        m["sha256"] = _manifest_sum(m)
        with open(p, "w") as f:
            json.dump(m, f)
        with pytest.raises(ValueError, match="not a numeric dtype"):
            ShardedDataset(d)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_mutation_run_finds_nothing(target):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "fuzz", "run.py"), target, "3",
                          "--engine", "mutate"], capture_output=True, text=True, timeout=100,
                         env=dict(os.environ, PYTHONPATH=ROOT, FUZZ_SEED="1"), check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "nothing found" in out.stdout
