#!/usr/bin/env bash
# Set up a virtualenv with mpim and its test tools, then run the whole suite:
# ruff (format + lint), mypy --strict, and pytest (unit, integration, Autobahn, the
# console in headless Chromium, which is installed with apt-get when missing).
# Works on a fresh machine with Python 3.11+, pip and venv. Extra pytest
# arguments are passed through, e.g. ./run-tests.sh -k master -x
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The console's browser test drives Debian's headless Chromium over the DevTools protocol.
if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (the console's browser test)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi

echo "== ruff"
.venv/bin/ruff format --check mpim tests bench
.venv/bin/ruff check mpim tests bench
echo "== mypy --strict"
.venv/bin/mypy mpim bench
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
