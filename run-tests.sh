#!/usr/bin/env bash
# Set up a virtualenv with mpim and its test tools, then run the whole suite:
# ruff (format + lint), mypy --strict, and pytest (unit, integration, Autobahn, the
# console in headless Chromium, the JavaScript client in Chromium and Node). Works on a
# fresh machine with Python 3.11+, pip and venv; the Redis tests start their own
# redis-server, the browser tests drive Debian's chromium, and the JavaScript client's
# tests need Node.js and npm: all installed here (Debian packages) when missing, and
# `npm ci` installs the client's dev tools from clients/js/package-lock.json. Extra
# pytest arguments are passed through, e.g. ./run-tests.sh -k master -x
#
# Python packages come from requirements/dev.lock (every version pinned, every file's
# sha256 checked; pip and the build backend included), so a new release elsewhere cannot
# change what CI tests. ./run-tests.sh --latest instead installs the newest releases that
# pyproject.toml allows, to try them before refreshing the lock (requirements/refresh.sh).
set -euo pipefail
cd "$(dirname "$0")"

latest=0
pytest_args=()
for arg in "$@"; do
    if [ "$arg" = --latest ]; then latest=1; else pytest_args+=("$arg"); fi
done

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
    echo "== installing chromium (Debian package) for the browser tests (the console, the JavaScript client)"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
fi

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian packages) for the JavaScript client's tests"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null)
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ "$latest" = 1 ]; then
    echo "== installing the newest releases pyproject.toml allows (--latest: not the lock)"
    .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
    .venv/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
else
    echo "== installing requirements/dev.lock"
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.lock
    # mpim itself, built by the locked setuptools (-qq: not setuptools' note on editable installs)
    .venv/bin/python -m pip install -qq --no-deps --no-build-isolation -e .
fi
if ! broken=$(.venv/bin/python -m pip check); then  # e.g. a dependency added to pyproject.toml only
    echo "$broken" >&2
    echo "== the installed packages do not meet pyproject.toml: run requirements/refresh.sh" >&2
    exit 1
fi

echo "== npm ci (clients/js: the JavaScript client's build and test tools, from its package-lock.json)"
(cd clients/js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

echo "== ruff"
.venv/bin/ruff format --check mpim tests bench
.venv/bin/ruff check mpim tests bench
echo "== mypy --strict"
.venv/bin/mypy mpim bench
echo "== pytest"
.venv/bin/python -m pytest -q ${pytest_args[@]+"${pytest_args[@]}"}
