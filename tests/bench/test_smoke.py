"""A few seconds of each benchmark scenario at tiny scale against a real ``mpim master``.

Not a timing test: it asserts what the generator counted (every message
delivered once, in order, to the right clients), so the benchmark code cannot
rot. Only 127.0.0.1; every process stops by itself.
"""

from __future__ import annotations

import math
from typing import Any

import uvloop

from bench.__main__ import parser
from bench.scenarios import broadcast, capacity, fanout
from bench.scenarios.common import make_mpim
from bench.scenarios.push import MidPlan, PushResult, push_case


def args(*argv: str) -> Any:
    return parser().parse_args([*argv, "--deadline", "90", "--warm-seconds", "0.3"])


def assert_clean(result: PushResult) -> None:
    assert result.failed_pushes == 0, result.first_error
    assert result.pushes > 0
    assert result.received == result.expected > 0
    assert (result.lost, result.dup, result.reorder, result.misdelivered, result.closed) == (0, 0, 0, 0, 0)
    assert math.isfinite(result.p99) and result.p50 <= result.p99 <= result.max
    names = {row[0] for row in result.usage.rows}
    assert {"master", "bus", "router"} <= names and any(n.startswith("worker") for n in names)
    assert result.usage.cpu > 0


def test_room_fanout_over_tcp_and_websocket() -> None:
    a = args("fanout", "--conns", "60", "--rooms", "3", "--rate", "150", "--duration", "1")
    for kind in ("tcp", "ws"):
        result = uvloop.run(fanout.case(a, make_mpim(a, 2), kind, a.conns, a.rooms))
        assert_clean(result)


def test_unicast_by_mid() -> None:
    a = args("unicast", "--conns", "40", "--rate", "200", "--duration", "1")
    plan = MidPlan(a.conns, a.size, per_push=3)
    spec = {"rooms": 0, "mode": "mid", "group": 3}
    result = uvloop.run(push_case(a, make_mpim(a, 2), "tcp", a.conns, spec, plan))
    assert_clean(result)


def test_broadcast_reaches_everyone() -> None:
    a = args("broadcast", "--conns", "40", "--speeds", "0,400", "--repeat", "1")
    rows = uvloop.run(broadcast.case(a, 1, [0, 400]))
    assert [(r[3], r[5]) for r in rows] == [(0, 40), (400, 40)]


def test_capacity_counts_connections_and_memory() -> None:
    a = args("capacity", "--conns", "100", "--warmup", "10", "--heartbeat", "0.5", "--hold", "1.5")
    row = dict(zip(capacity.HEADER, uvloop.run(capacity.case(a, 1, "ws")), strict=True))
    assert (row["workers"], row["transport"], row["connections"], row["failed"]) == (1, "ws", 100, 0)
    assert row["worker bytes / conn"] > 0 and row["open at end"] == 100
    assert row["heartbeat replies/s"] > 0  # every connection heart-beats and gets op 3 back
