#!/usr/bin/env bash
# Set up a virtualenv with mpim and its test tools, then run the whole suite:
# ruff (format + lint), mypy --strict, and pytest (unit, integration, Autobahn, the
# console in headless Chromium). Works on a fresh machine with Python 3.11+, pip and
# venv; the Redis tests start their own redis-server and the console test drives
# Debian's chromium, both installed here (Debian packages) when missing. Extra pytest
# arguments are passed through, e.g. ./run-tests.sh -k master -x
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v redis-server >/dev/null; then
    echo "== installing redis-server (Debian package) for the Redis tests"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
fi
if [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || ! { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null; then
    echo "== installing nginx-light and libnginx-mod-nchan (Debian packages): the benchmarks' peer"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq nginx-light libnginx-mod-nchan >/dev/null) \
        || echo "== warning: could not install nginx + Nchan; the tests that run it are reported as skipped with the reason"
fi
if ! command -v ss >/dev/null; then
    echo "== installing iproute2 (Debian package): its ss reads the listeners' backlog in two tests"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null)
fi
if ! command -v chromium >/dev/null; then
    echo "== installing chromium (Debian package) for the console's browser test"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
fi

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
