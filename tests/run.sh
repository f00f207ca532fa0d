#!/usr/bin/env bash
# Installs everything into fresh virtual environments and runs the test suite
# against both supported Datasette lines: 0.65.x (stable) and the latest 1.0 alpha.
# Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

run_against() {
    local name=$1 requirement=$2 venv=".venv-$1"
    echo "=== Datasette $name: fresh environment in $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".[test]" "$requirement"
    "$venv/bin/python" -c "import datasette; print('datasette', datasette.__version__)"
    "$venv/bin/python" -m pytest -q "${@:3}"
}

run_against 0.65 "datasette>=0.65,<0.66" "$@"
run_against 1.0a "datasette>=1.0a0" "$@"
