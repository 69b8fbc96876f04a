#!/usr/bin/env bash
# Build ddl._C with ThreadSanitizer into build/tsan/ and run the tests that exercise ddl's threads
# (the communication thread, the watchdog, reducer hooks fired by the autograd engine, the store
# server) against that build. Any report, in pytest or in a rank it spawned, fails the run.
#   scripts/tsan.sh                      the default test files below
#   scripts/tsan.sh tests/test_ddp.py    other test files or pytest arguments instead
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/build/tsan
PYTHON=${PYTHON:-python3}
# The real interpreter, not a wrapper script (a pyenv shim is bash, and bash crashes under TSan).
python=$($PYTHON -c 'import sys; print(sys.executable)')

rm -rf "$out"
mkdir -p "$out"
cd "$repo"
DDL_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer -O1 -g ${DDL_EXTRA_CFLAGS:-}" \
    "$python" setup.py -q build_ext --build-lib "$out" --build-temp "$out/tmp" >"$out/build.log" 2>&1 ||
    { cat "$out/build.log"; exit 1; }
scripts/_mirror.sh "$out"

libtsan=$(gcc -print-file-name=libtsan.so)
reports=$out/reports
mkdir -p "$reports"
# halt_on_error + exitcode: the first report ends that process with 66 (a rank's test then
# fails on its exit code); log_path: every process, including ranks whose exit code a test
# expects to be non-zero, writes its reports into $reports, and any file there fails the stage.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 history_size=4
suppressions=$repo/scripts/tsan.supp log_path=$reports/tsan ${TSAN_EXTRA_OPTIONS:-}"
TSAN_OPTIONS=${TSAN_OPTIONS//$'\n'/ }
export DDL_EXPECT_BUILD="$out"
# OpenBLAS and ddl's kernel pool on one thread each: they add no ddl concurrency worth checking
# here and slow TSan down; the comm thread, watchdog and store threads still run.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
if (($# == 0)); then
    set -- tests/test_distributed.py tests/test_ddp.py tests/test_autograd_engine.py \
        tests/test_gloo.py tests/test_store.py tests/test_redis.py tests/test_build.py
fi
cd "$out"
rc=0
LD_PRELOAD="$libtsan" PYTHONPATH="$out" "$python" -m pytest -q -p no:cacheprovider "$@" || rc=$?
if compgen -G "$reports/tsan*" >/dev/null; then
    echo "== ThreadSanitizer reports ($(ls "$reports" | wc -l) processes):" >&2
    for f in "$reports"/tsan*; do echo "--- $f" >&2; cat "$f" >&2; done
    ((rc)) || rc=66
fi
exit "$rc"
