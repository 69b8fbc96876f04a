"""Run a fuzz target (fuzz/targets.py) for a time budget: atheris (coverage-guided, from PyPI)
when it is installed, else a structured mutation loop over the seed corpus (bit flips, byte
and block insertions/deletions, splices, interesting integers, seeds crossed over).

    python fuzz/run.py TARGET [SECONDS] [--corpus fuzz/corpus/TARGET] [--engine auto|atheris|mutate]

A finding (an exception other than the target's documented ones, or an assertion) is written
to fuzz/findings/TARGET-<sha1>.bin and the run exits 1; each becomes a regression test in
tests/test_fuzz_regressions.py. Exit 0: nothing found within the budget.
"""
import argparse
import hashlib
import os
import random
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

NAMES = ("checkpoint", "idx", "libsvm", "shard", "store_frame")

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]
TOKENS = [b"\n", b":", b" ", b"#", b"e308", b"e39", b"1e-400", b"nan", b"inf", b"-", b"{", b"}",
          b"[", b"]", b'"', b",", b"null", b"__tensor__", b"__dict__", b"__bigint__", b"0x",
          b'"shards"', b'"rows"', b'"arrays"', b"\x00", b"\xff", b"\x1f\x8b", b"DDLSHARD",
          b"DDLCKPT1"]


def _seeds(corpus):
    out = []
    if corpus and os.path.isdir(corpus):
        for name in sorted(os.listdir(corpus)):
            with open(os.path.join(corpus, name), "rb") as f:
                out.append(f.read())
    return out or [b""]


def mutate(data, rng, seeds):
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and b:
            del b[pos:pos + rng.randrange(1, 17)]
        elif op == 3:
            v = rng.choice(INTERESTING)
            size = rng.choice((1, 2, 4, 8))
            raw = (v & ((1 << (8 * size)) - 1)).to_bytes(size, rng.choice(("little", "big")))
            b[pos:pos + size] = raw
        elif op == 4:
            b[pos:pos] = rng.choice(TOKENS)
        elif op == 5 and b:  # duplicate a block (deep nesting, long lines)
            i = rng.randrange(len(b))
            blk = b[i:i + rng.randrange(1, 64)]
            b[pos:pos] = blk * rng.randrange(1, 200)
        elif op == 6:  # splice with another seed
            other = rng.choice(seeds)
            j = rng.randrange(len(other) + 1)
            b = b[:pos] + bytearray(other[j:])
        elif op == 7 and b:  # truncate
            del b[pos:]
    return bytes(b[: 1 << 20])


def record(target, data, tb):
    os.makedirs(os.path.join(HERE, "findings"), exist_ok=True)
    name = f"{target}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
    with open(os.path.join(HERE, "findings", name), "wb") as f:
        f.write(data)
    print(f"FINDING {name}\n{tb}", flush=True)


def run_mutate(target, fn, seconds, corpus):
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "0")) or None)
    seeds = _seeds(corpus)
    pool = list(seeds)
    deadline, n = time.monotonic() + seconds, 0
    for s in seeds:  # the seeds themselves must pass
        fn(s)
    while time.monotonic() < deadline:
        data = mutate(rng.choice(pool), rng, seeds)
        n += 1
        try:
            fn(data)
        except Exception:  # noqa: BLE001 - any escape is a finding
            record(target, data, traceback.format_exc())
            return 1
        if rng.random() < 0.02 and len(pool) < 500:
            pool.append(data)  # keep some mutants as parents (no coverage: a cheap stand-in)
    print(f"fuzz {target}: {n} inputs in {seconds:.0f} s (mutation engine), nothing found",
          flush=True)
    return 0


def run_atheris(target, fn, seconds, corpus):
    import atheris

    def one(data):
        try:
            fn(data)
        except Exception:
            record(target, data, traceback.format_exc())
            raise

    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix=f"ddl-fuzz-{target}-")  # new inputs go here, not the repo
    args = [sys.argv[0], f"-max_total_time={int(seconds)}", "-max_len=65536", "-timeout=20",
            "-rss_limit_mb=3072", f"-artifact_prefix={work}/", work]
    if corpus and os.path.isdir(corpus):
        args.append(corpus)
    import atexit

    atexit.register(shutil.rmtree, work, True)
    atheris.Setup(args, one)
    atheris.Fuzz()  # exits the process: 0 when the budget ran out without a finding


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=NAMES)
    ap.add_argument("seconds", nargs="?", type=float, default=30)
    ap.add_argument("--corpus")
    ap.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    a = ap.parse_args()
    corpus = a.corpus or os.path.join(HERE, "corpus", a.target)
    engine = a.engine
    if engine == "auto":
        try:
            import atheris

            engine = "atheris"
        except ImportError:
            engine = "mutate"
    if engine == "atheris" and not os.environ.get("DDL_FUZZ_CHILD"):
        # libFuzzer ends the process with exit(): no atexit, no cleanup. Run it in a child
        # whose temporaries all live in one folder that this process removes.
        import shutil
        import subprocess
        import tempfile

        tmp = tempfile.mkdtemp(prefix=f"ddl-fuzz-{a.target}-")
        try:
            return subprocess.run([sys.executable, *sys.argv, "--engine", "atheris"],
                                  env=dict(os.environ, DDL_FUZZ_CHILD="1", TMPDIR=tmp),
                                  check=False).returncode
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["ddl", "fuzz"]):
            from fuzz.targets import TARGETS
    else:
        from fuzz.targets import TARGETS
    fn = TARGETS[a.target]
    if engine == "atheris":
        # atheris sees only the Python side's coverage (the C parsers are not built with
        # -fsanitize=fuzzer); the seeds and dictionary-free mutations still reach them
        run_atheris(a.target, fn, a.seconds, corpus)
        return 0
    return run_mutate(a.target, fn, a.seconds, corpus)


if __name__ == "__main__":
    sys.exit(main())
