"""A few seconds of ``python -m bench hosts`` at tiny scale: two real masters on a redis-server
the scenario starts itself, and one plain master beside them.

Not a timing test: it asserts what the generators counted (every push delivered once, in
order, to the right clients, across hosts too) and that the server CPU covers both hosts'
processes and Redis, so the benchmark code cannot rot.
"""

from __future__ import annotations

from typing import Any

import pytest
import uvloop

from bench.__main__ import parser
from bench.cluster import redis_missing
from bench.scenarios import hosts
from bench.scenarios.push import PushResult

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason="needs redis-server (./run-tests.sh)")


def args(*argv: str) -> Any:
    return parser().parse_args(
        ["hosts", *argv, "--duration", "1", "--warm-seconds", "0.3", "--deadline", "90"]
    )


def assert_delivered(result: PushResult) -> None:
    assert result.failed_pushes == 0, result.first_error
    assert result.pushes > 0
    assert result.received == result.expected > 0
    assert (result.lost, result.dup, result.misdelivered, result.closed) == (0, 0, 0, 0)
    assert result.p50 <= result.p99 <= result.max


def assert_setup(case: hosts.Case) -> None:
    names = {name for name, *_ in case.result.usage.rows}
    if case.setup == "two hosts":
        assert {"A router", "A worker 1", "B router", "B worker 1", "redis"} <= names, names
        assert case.commands is not None and "publish" in case.commands  # pushes crossed Redis
    else:
        assert {"router", "worker 1", "worker 2"} <= names and "redis" not in names


def test_unicast_by_mid_across_hosts_beside_one_host() -> None:
    a = args("--parts", "unicast", "--conns", "40", "--rates", "100", "--idle-seconds", "0.5")
    cases = uvloop.run(hosts.unicast_part(a))
    assert [(c.setup, c.subscribers) for c in cases] == [
        ("one host", hosts.ALL),
        ("two hosts", hosts.ON_B),
        ("two hosts", hosts.SPLIT),
    ]
    for case in cases:
        assert_delivered(case.result)
        assert_setup(case)
    assert cases[0].result.reorder == 0  # one host keeps a user's order
    assert all((c.idle is None) == (c.setup == "one host") for c in cases)
    text = hosts.render(a, cases)
    assert "Unicast by mid" in text and "Redis CPU ms / 1,000 pushes" in text
    assert "all on B" in text and "two hosts / one host" in text and "Idle CPU of the two-host" in text


def test_room_fanout_over_both_hosts_beside_one_host() -> None:
    a = args(
        "--parts",
        "rooms",
        "--room-conns",
        "40",
        "--rooms",
        "4",
        "--room-rates",
        "20,40",
        "--idle-seconds",
        "0",
    )
    cases = uvloop.run(hosts.rooms_part(a))
    assert [(c.setup, c.target) for c in cases] == [
        ("one host", 20),
        ("one host", 40),
        ("two hosts", 20),
        ("two hosts", 40),
    ]
    for case in cases:
        assert_delivered(case.result)
        assert case.result.reorder == 0  # a room's order holds on every host
        assert_setup(case)
    assert cases[0].result.expected < cases[1].result.expected
    assert len(hosts.ratio_rows(cases)) == 2
