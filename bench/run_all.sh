#!/usr/bin/env bash
# The full run recorded in bench/RESULTS.md: every scenario, one and two workers,
# and the Nchan side by side. Takes about 50 minutes on the 2-core machine.
# Needs wrk, nginx-light and libnginx-mod-nchan (Debian) and py-spy (pip);
# a scenario whose tool is missing says so and how to install it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
run() { echo "== python -m bench $*" >&2; "$PY" -m bench "$@" --record; }

run capacity
run capacity --workers 2 --heartbeat 10 --hold 30
run fanout --workers 2 --conns 20000 --rooms 1000 --rate 1000 --transport both --peer nchan
run fanout --workers 1 --conns 15000 --rooms 750 --rate 1000 --transport both --peer nchan
run fanout --workers 1,2 --conns 5000 --rooms 1 --rate 100 --batch 20 --batch-delay 0.2
run fanout --workers 1,2 --conns 5000 --rooms 1 --rate 100 --batch 100 --batch-delay 1
run fanout --workers 2 --conns 5000 --rooms 1 --rate 100 --batch 100 --batch-delay 1 --transport ws --peer nchan
run unicast --workers 2 --conns 20000 --rate 1000 --profile router
run unicast --workers 1,2 --conns 15000 --rate 4000
run unicast --workers 2 --conns 20000 --rate 200 --mids-per-push 50 --profile "worker 1"
run unicast --workers 1,2 --conns 15000 --rates 100,3000 --peer nchan
run fanout --workers 2 --conns 20000 --rooms 1000 --rate 1000 --profile "worker 1" --native
run broadcast --workers 1,2 --conns 15000
run ingress --rates 100,1000,4000
run idle --workers 1,2 --conns 10000 --seconds 20
run idle --workers 2 --conns 10000 --seconds 20 --transport ws
run reliable --workers 2 --conns 4000 --rates 100,1000,3000 --duration 10
run chat --workers 1,2 --conns 2000 --rates 200,1000 --duration 10
run hosts --conns 4000 --rates 300,1000 --room-conns 10000 --rooms 10 --room-rates 20,76
