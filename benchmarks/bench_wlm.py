#!/usr/bin/env python3
"""bench_wlm.py: the word-language-model LSTM example (tests/compat/word_language_model.py, as
written for PyTorch) trained for the same batches under ddl (the torch -> ddl shim) and PyTorch.

    python benchmarks/bench_wlm.py               # 60 batches, 4 runs of each, ABBA order
    python benchmarks/bench_wlm.py --steps 60 --reps 6

Each run is a fresh process on tests/test_compat.py's synthetic corpus (a Markov chain over
60 words), dropout 0.2 (the example's), 1 thread (OMP_NUM_THREADS=1, as the compat tests run
it). The example's own code is timed: a copy with a clock around its `train(losses)` call,
CPU time and wall time of the training loop only (no import, corpus or evaluation). A
library's figure is the median of its runs; the ratio is PyTorch time / ddl time (> 1: ddl
faster). Prints the 1-minute load average with the figures.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "tests" / "compat"
CLOCK = ("losses = []\nimport time as _t\n_c0, _w0 = _t.process_time(), _t.perf_counter()\n"
         "train(losses)\nprint('TRAINTIME', (_t.process_time() - _c0) * 1e3, "
         "(_t.perf_counter() - _w0) * 1e3)\n")


def corpus(folder):
    """The corpus tests/test_compat.py trains on (tests/compat/common.py writes it)."""
    spec = importlib.util.spec_from_file_location("compat_common", COMPAT / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_markov_corpus(folder)


def run(framework, script_dir, corpus_dir, steps):
    """(CPU ms, wall ms) of one run's training loop."""
    shim = str(COMPAT / "shim") if framework == "ddl" else ""
    path = os.pathsep.join(p for p in (shim, str(script_dir), str(ROOT)) if p)
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", COMPAT_CORPUS=corpus_dir,
                   COMPAT_STEPS=str(steps), COMPAT_OUT=os.path.join(work, "report.json"))
        r = subprocess.run([sys.executable, str(script_dir / "word_language_model.py")],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900,
                           check=False)
    if r.returncode != 0:
        raise SystemExit(f"{framework} run failed:\n{r.stdout}\n{r.stderr}")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("TRAINTIME"))
    cpu, wall = map(float, line.split()[1:])
    return cpu, wall


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--reps", type=int, default=4)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = (COMPAT / "word_language_model.py").read_text()
        if "losses = []\ntrain(losses)\n" not in src:
            raise SystemExit("word_language_model.py changed: cannot place the clock")
        (tmp / "word_language_model.py").write_text(
            src.replace("losses = []\ntrain(losses)\n", CLOCK))
        (tmp / "common.py").write_text((COMPAT / "common.py").read_text())
        (tmp / "corpus").mkdir()
        corpus(tmp / "corpus")
        res = {"ddl": [], "torch": []}
        for k in range(a.reps):
            for fw in ("ddl", "torch") if k % 2 == 0 else ("torch", "ddl"):
                res[fw].append(run(fw, tmp, str(tmp / "corpus"), a.steps))
    print(f"word_language_model LSTM, {a.steps} batches, 1 thread; load average "
          f"{os.getloadavg()[0]:.1f}")
    med = {}
    for fw, v in res.items():
        med[fw] = [statistics.median(x[i] for x in v) for i in (0, 1)]
        print(f"  {fw:6s} CPU ms {[round(x[0]) for x in v]}  wall ms {[round(x[1]) for x in v]}"
              f"  median CPU {med[fw][0]:.0f} wall {med[fw][1]:.0f}")
    print(f"  PyTorch time / ddl time: CPU {med['torch'][0] / med['ddl'][0]:.2f}x, "
          f"wall {med['torch'][1] / med['ddl'][1]:.2f}x (> 1: ddl faster)")


if __name__ == "__main__":
    main()
