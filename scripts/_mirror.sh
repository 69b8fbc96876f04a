#!/usr/bin/env bash
# Lay out a sanitizer build folder ($1, holding ddl/_C*.so from `setup.py build_ext --build-lib`)
# as a copy of the repository: ddl's package files and tests/ copied, the rest linked. Tests and
# the ranks they spawn find the repository root from their own file's path and put it first on
# PYTHONPATH, so running the tests from this copy makes every process load this build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$1
cd "$repo"
for f in ddl/*; do # the package's files (the .py, the _C.pyi stub, py.typed), not its builds
    case $f in ddl/_C*.so) ;; *) [ -f "$f" ] && cp "$f" "$out/ddl/" ;; esac
done
for d in ddl/*/; do
    if [ "$d" != ddl/__pycache__/ ]; then cp -r "$d" "$out/ddl/"; fi
done
rm -rf "$out/tests"
cp -r tests "$out/tests"
for f in csrc examples benchmarks scripts docs fuzz pyproject.toml README.md; do
    if [ -e "$f" ]; then ln -sfn "$repo/$f" "$out/$f"; fi
done
