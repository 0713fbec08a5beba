#!/usr/bin/env bash
# The Python front's tests: builds the package into a virtual environment (target/pyvenv,
# created on first use) with maturin (a debug build sharing the workspace's target directory)
# and runs its pytest suite. Called by .ci/run; run it by hand the same way.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
VENV="$ROOT/target/pyvenv"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
# Pinned: the build backend and the test dependencies.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    'maturin==1.9.6' 'pytest==8.3.5' 'pydantic==2.11.7'
VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" develop --quiet
cd "$ROOT/crates/weir-py"
"$VENV/bin/python" -m pytest -q "$@"
