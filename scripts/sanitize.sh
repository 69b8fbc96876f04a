#!/usr/bin/env bash
# Build ddl._C with AddressSanitizer + UndefinedBehaviorSanitizer into build/sanitize/ and run
# the test suite against that build (the normal editable install is left untouched). The tests
# run from a copy in build/sanitize/ (scripts/_mirror.sh), so the ranks that multi-process tests
# spawn load this build too, with the sanitizer runtimes inherited through LD_PRELOAD.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/build/sanitize
PYTHON=${PYTHON:-python3}
rm -rf "$out"
mkdir -p "$out"
cd "$repo"
DDL_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g ${DDL_EXTRA_CFLAGS:-}" \
    $PYTHON setup.py -q build_ext --build-lib "$out" --build-temp "$out/tmp" >"$out/build.log" 2>&1 ||
    { cat "$out/build.log"; exit 1; }
scripts/_mirror.sh "$out"

libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
cd "$out"
# Python itself is not built with ASan: leaks at exit are CPython's, so leak checks stay off
# (tests/test_memory.py checks our leaks with RSS loops instead).
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export DDL_EXPECT_BUILD="$out"
LD_PRELOAD="$libasan $libubsan" PYTHONPATH="$out" $PYTHON -m pytest -q -p no:cacheprovider \
    "$@"
