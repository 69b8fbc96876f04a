#!/usr/bin/env bash
# The cheap gates, each failing the run: ruff over the Python (pyproject.toml's [tool.ruff]),
# clang-format over the C/C++ (.clang-format), and the include-layer check.
#   scripts/lint.sh           all three
#   scripts/lint.sh ruff      one of them (ruff, format, layers)
#   scripts/lint.sh --fix     apply ruff's safe fixes and clang-format in place, then check
# CI installs the pinned tools first (.ci/run); locally: pip install ruff==$RUFF_VERSION and
# apt-get install clang-format (Debian 12's clang-format 14: other versions format differently).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RUFF_VERSION=0.17.6
CLANG_FORMAT_MAJOR=14

fix=0
gates=()
for a in "$@"; do
    case $a in
    --fix) fix=1 ;;
    ruff | format | layers) gates+=("$a") ;;
    *) echo "lint.sh: unknown argument $a (ruff, format, layers, --fix)" >&2; exit 2 ;;
    esac
done
((${#gates[@]})) || gates=(ruff format layers)

# The C and C++ files the format check covers (tracked files, so build output never counts).
c_files() { git ls-files 'csrc/*.c' 'csrc/*.cc' 'csrc/*.h' 'tests/c/*.c' 'tests/c/*.h' 'examples/c/*.c'; }

gate_ruff() {
    if ! command -v ruff >/dev/null; then
        echo "ruff is not installed: pip install ruff==$RUFF_VERSION" >&2
        return 1
    fi
    local v
    v=$(ruff --version | awk '{print $2}')
    [ "$v" = "$RUFF_VERSION" ] || echo "note: ruff $v here, CI pins $RUFF_VERSION" >&2
    if ((fix)); then ruff check --fix --quiet . || true; fi
    ruff check .
}

gate_format() {
    local cf
    cf=$(command -v clang-format-$CLANG_FORMAT_MAJOR || command -v clang-format) || {
        echo "clang-format is not installed: apt-get install clang-format" >&2
        return 1
    }
    local major
    major=$("$cf" --version | sed -E 's/.*version ([0-9]+).*/\1/')
    [ "$major" = "$CLANG_FORMAT_MAJOR" ] ||
        echo "note: clang-format $major here, CI uses $CLANG_FORMAT_MAJOR (results may differ)" >&2
    if ((fix)); then c_files | xargs "$cf" -i; fi
    # --dry-run --Werror: print each needed change as an error, and fail when there is one
    c_files | xargs "$cf" --dry-run --Werror
}

gate_layers() { $PYTHON scripts/check_layers.py; }

rc=0
for g in "${gates[@]}"; do
    echo "== lint: $g"
    if "gate_$g"; then echo "   $g: clean"; else echo "   $g: FAILED" >&2; rc=1; fi
done
exit $rc
