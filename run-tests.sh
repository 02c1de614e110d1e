#!/usr/bin/env bash
# Set up a virtualenv with mpim and its test tools, then run the whole suite:
# ruff (format + lint), mypy --strict, and pytest (unit, integration, Autobahn).
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

echo "== ruff"
.venv/bin/ruff format --check mpim tests bench
.venv/bin/ruff check mpim tests bench
echo "== mypy --strict"
.venv/bin/mypy mpim bench
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
