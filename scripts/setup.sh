#!/usr/bin/env bash
# Set up a fresh Debian machine for ddl: system packages when missing, then an editable install
# with the test extra. Safe to rerun: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEB_PACKAGES=(libgloo-dev libhiredis-dev zlib1g-dev dataset-fashion-mnist redis-server build-essential)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            SUDO=sudo
        else
            echo "ddl setup: these Debian packages are missing: ${missing[*]}" >&2
            echo "Install them as root:  sudo apt-get install ${missing[*]}" >&2
            exit 1
        fi
    else
        SUDO=
    fi
    echo "ddl setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# numpy and scipy-openblas32 come from PyPI; the build compiles csrc/ against Gloo and OpenBLAS.
$PYTHON -m pip install -q --disable-pip-version-check -e ".[test]"
