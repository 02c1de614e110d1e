#!/usr/bin/env bash
# Regenerate the locks from pyproject.toml's ranges and tools.in: the newest releases they
# allow, resolved for every platform and Python >= 3.11, each file with its sha256.
#   dev.lock  the runtime dependencies, the dev extra, pip and the build backend (run-tests.sh, CI)
#   run.lock  the same versions without the dev extra (the README's server command)
# Extra arguments go to both `uv pip compile` runs, e.g. --exclude-newer 2026-11-01.
# Then run ./run-tests.sh and commit the locks with what they made pass.
set -euo pipefail
cd "$(dirname "$0")/.."

uv="${UV:-.venv/bin/uv}"
if [ ! -x "$uv" ] && [ -z "${UV:-}" ]; then
    [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install --quiet uv
fi
compile=("$uv" pip compile --universal --python-version 3.11 --generate-hashes --upgrade --quiet
    --custom-compile-command requirements/refresh.sh "$@")
"${compile[@]}" pyproject.toml requirements/tools.in --extra dev -o requirements/dev.lock
"${compile[@]}" pyproject.toml requirements/tools.in -c requirements/dev.lock -o requirements/run.lock
echo "requirements/dev.lock and run.lock refreshed; now ./run-tests.sh"
