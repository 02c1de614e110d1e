"""A few seconds of each benchmark scenario at tiny scale against a real ``mpim master``.

Not a timing test: it asserts what the generator counted (every message
delivered once, in order, to the right clients), so the benchmark code cannot
rot. Only 127.0.0.1; every process stops by itself.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import uvloop

from bench.__main__ import parser
from bench.scenarios import broadcast, capacity, fanout, flood, idle, unicast
from bench.scenarios.common import make_mpim
from bench.scenarios.push import MidPlan, PushResult, push_case
from bench.servers import NchanServer, nchan_missing


def args(*argv: str) -> Any:
    return parser().parse_args([*argv, "--deadline", "90", "--warm-seconds", "0.3"])


def assert_clean(result: PushResult, mpim: bool = True) -> None:
    assert result.failed_pushes == 0, result.first_error
    assert result.pushes > 0
    assert result.received == result.expected > 0
    assert (result.lost, result.dup, result.reorder, result.misdelivered, result.closed) == (0, 0, 0, 0, 0)
    assert math.isfinite(result.p99) and result.p50 <= result.p99 <= result.max
    names = {row[0] for row in result.usage.rows}
    if mpim:
        assert {"master", "bus", "router"} <= names and any(n.startswith("worker") for n in names)
        assert result.usage.cpu > 0
    else:
        assert any("worker process" in n for n in names)


def test_room_fanout_over_tcp_and_websocket() -> None:
    a = args("fanout", "--conns", "60", "--rooms", "3", "--rate", "150", "--duration", "1")
    for kind in ("tcp", "ws"):
        [result] = uvloop.run(fanout.case(a, make_mpim(a, 2), kind, a.conns, a.rooms))
        assert_clean(result)


def test_unicast_by_mid_at_two_rates() -> None:
    a = args("unicast", "--conns", "40", "--rates", "150,300", "--duration", "1")
    plan = MidPlan(a.conns, a.size, per_push=3)
    spec = {"rooms": 0, "mode": "mid", "group": 3}
    results = uvloop.run(push_case(a, make_mpim(a, 2), "tcp", a.conns, spec, plan))
    assert len(results) == 2
    for result in results:  # each phase counts its own deliveries and losses
        assert_clean(result)
    assert results[0].expected < results[1].expected


@pytest.mark.skipif(nchan_missing() is not None, reason="needs nginx-light and libnginx-mod-nchan")
def test_unicast_against_nchan() -> None:
    a = args("unicast", "--conns", "40", "--rate", "200", "--duration", "1", "--peer", "nchan")
    [result] = uvloop.run(unicast.case(a, NchanServer(1), "nchan"))
    assert_clean(result, mpim=False)


def test_idle_cost() -> None:
    a = args("idle", "--conns", "50", "--seconds", "1", "--empty-seconds", "0.5", "--settle", "0.2")
    line, split = uvloop.run(idle.case(a, 1, "ws"))
    row = dict(zip(idle.HEADER, line, strict=True))
    assert (row["workers"], row["transport"], row["connections"], row["open at end"]) == (1, "ws", 50, 50)
    assert row["server CPU % of a core"] >= 0 and row["empty server %"] >= 0
    assert all(f"{name} " in split for name in ("master", "bus", "router", "worker 1"))


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


def test_flood_keeps_the_good_clients_whole_and_the_limits_refuse_the_flooder() -> None:
    a = args(
        "flood",
        "--conns",
        "40",
        "--rate",
        "100",
        "--duration",
        "1",
        "--flood-conns",
        "150",
        "--newcomers",
        "5",
    )
    for limits in (True, False):
        rows, splits = uvloop.run(flood.one_setting(a, 1, limits))
        calm, stormy = (dict(zip(flood.HEADER, r, strict=True)) for r in rows)
        for row in (calm, stormy):
            assert (row["good conns"], row["lost"], row["good closed"]) == (40, 0, 0)
        assert stormy["flood attempts/s"] > 0 and stormy["newcomers served"] == "5 of 5"
        assert (stormy["refused by limits"] > 0) is limits  # the flooder's address, not the good ones
        assert len(splits) == 2 and "worker 1" in splits[1]
