#!/usr/bin/env bash
# fuzz.sh [SECONDS]: run every fuzz target (fuzz/targets.py) for SECONDS each (default 40) over
# its seed corpus: atheris when installed, else the mutation engine. Fails on the first finding
# (the input is saved under fuzz/findings/ and printed). Needs the in-place build (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
secs=${1:-40}
export PYTHONPATH=$PWD
for t in libsvm checkpoint shard idx store_frame; do
    echo "-- fuzz $t ($secs s)"
    $PYTHON fuzz/run.py "$t" "$secs"
done
