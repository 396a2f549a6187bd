#!/usr/bin/env bash
# Builds the Python example into target/order-totals.wasm with componentize-py, which it
# installs first (into a venv under ~/.cache/sluice) when missing.
set -euo pipefail

version=0.25.1
venv="${SLUICE_CACHE:-$HOME/.cache/sluice}/componentize-py-$version"
cd "$(dirname "${BASH_SOURCE[0]}")"

# A venv per version: a version bump gets a fresh one instead of upgrading in place.
if [[ ! -x "$venv/bin/componentize-py" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi

mkdir -p target
# --stub-wasi replaces every WASI import with a trap: the Python runtime imports files and
# sockets, which the engine refuses, and this job needs no WASI at run time. (It also fixes
# the hash seed at build time, which only makes runs more repeatable.)
"$venv/bin/componentize-py" -d ../../wit -w consumer componentize --stub-wasi app \
    -o target/order-totals.wasm
