#!/usr/bin/env bash
# Installs everything into fresh virtual environments and runs the test suite
# against both supported Datasette lines: 0.65.x (stable) and the latest 1.0 alpha.
# Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# The browser test drives Debian's Chromium through Playwright (Playwright's own
# browser download is not used). Installed once; a no-op when already there.
ensure_chromium() {
    if [ -n "${IMGSIM_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ]; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "=== Installing chromium for the browser test"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "tests/test_browser.py needs Chromium: apt-get install chromium (or set IMGSIM_CHROMIUM)" >&2
    fi
}

ensure_chromium

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
