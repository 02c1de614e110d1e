"""The router-shard and saturation benchmarks at their smallest, against a real ``mpim master`` (N = 1).

Not timing tests: they check the reports' shape and that the generators counted
every push delivered once, in order (0 lost), whatever the machine's speed.
Only 127.0.0.1; every process stops by itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import uvloop

from bench.__main__ import parser
from bench.scenarios import saturation, shards
from bench.scenarios.common import Usage
from bench.scenarios.publishing import Phase
from bench.scenarios.push import MidPlan
from bench.servers import NchanServer, nchan_missing


def args(*argv: str) -> Any:
    return parser().parse_args([*argv, "--deadline", "90", "--warm-seconds", "0.3"])


def assert_clean(phase: Phase) -> None:
    assert phase.pushes > 0 and phase.failed == phase.unanswered == 0, phase.first_error
    assert phase.received == phase.expected > 0
    assert (phase.lost, phase.dup, phase.reorder, phase.misdelivered, phase.closed) == (0, 0, 0, 0, 0)
    assert phase.p50 <= phase.p99 <= phase.max


def test_publisher_parts_split_the_groups() -> None:
    plans = [MidPlan(50, 32, per_push=3, seed=part, part=part, parts=3) for part in range(3)]
    seen = [{plan.request(n, 0.0)[0] for n in range(400)} for plan in plans]
    assert all(group % 3 == part for part, groups in enumerate(seen) for group in groups)
    assert set().union(*seen) == set(range(17))  # 50 users in groups of 3: every group, one owner each


def test_shards_report_at_one_shard() -> None:
    a = args("shards", "--conns", "60", "--rate", "150", "--duration", "1", "--mids-per-push", "1,3")
    points = [uvloop.run(shards.case(a, 1, 1, k)) for k in a.mids_per_push]
    for point in points:
        assert_clean(point.phase)
        assert [name for name, _, _ in point.routers()] == ["router"]
        assert any(name.startswith("worker") for name, *_ in point.phase.usage.rows)
    text = shards.report(points, a)
    summary, per_shard = text.split("\n\n")[0], text.split("\n\n")[2]
    assert "forwarding cost (x N = 1)" in summary and "router µs / push" in summary
    assert len(summary.splitlines()) == 2 + len(points)
    assert len(per_shard.splitlines()) == 2 + len(points) and "| router " in per_shard
    assert f"{len(points)} of {len(points)} points clean" in text


def phase_of(**changes: Any) -> Phase:
    """A measured phase, made up: 1,000 pushes in 10 s, all delivered, then ``changes``."""
    made = Phase(
        offered=100, rate=100, pushes=1000, seconds=10, received=1000, expected=1000, lost=0, dup=0,
        reorder=0, misdelivered=0, closed=0, failed=0, unanswered=0, first_error="", p50=0.001, p99=0.002,
        max=0.003, usage=Usage(10, 1, 0.1, []), publishers_cpu=0.1, publisher_peak=0.05, load=0.5, sent={},
    )  # fmt: skip
    return replace(made, **changes)


def test_shard_order_and_forwarding_columns() -> None:
    def point(n: int, routers: list[tuple[str, float]]) -> shards.Point:
        rows = [(name, cpu, 0.0, 0) for name, cpu in routers]
        return shards.Point(2, n, 1, phase_of(usage=Usage(10, 1, 0.1, rows)))

    one = point(1, [("router", 0.1), ("bus", 0.5)])
    two = point(2, [("router 1", 0.06), ("router 0", 0.06), ("router-ish", 9.0)])
    assert [name for name, _, _ in two.routers()] == ["router 0", "router 1"]
    summary, per_shard = shards.rows([one, two])
    assert summary[0][8] == "1.00" and summary[1][8] == "1.20"  # 120 µs / push against 100
    assert summary[1][6] == "0.060 / 0.060" and summary[1][7] == "50% / 50%"
    assert [r[3] for r in per_shard] == ["router", "router 0", "router 1"]
    a = args("shards")
    assert a.shards == [1] and a.workers == [2]  # N > 1 is a flag (--shards 1,2,4)


def test_ladder_and_verdicts() -> None:
    a = args("saturation", "--start", "1000", "--factor", "2", "--max-rate", "9000")
    assert saturation.ladder(a) == [1000, 2000, 4000, 8000]
    assert saturation.ladder(args("saturation", "--rates", "300,500")) == [300, 500]
    assert saturation.verdict(phase_of(), 50) == ""
    assert "p99" in saturation.verdict(phase_of(p99=0.06), 50)
    assert "behind" in saturation.verdict(phase_of(received=999, lost=1), 50)
    assert "publishers" in saturation.verdict(phase_of(rate=50, publisher_peak=0.99), 50)
    assert "server" in saturation.verdict(phase_of(rate=50, publisher_peak=0.3), 50)


def test_saturation_climbs_mpim() -> None:
    a = args("saturation", "--conns", "60", "--rates", "100,200", "--duration", "1", "--peer", "none")
    climb = uvloop.run(saturation.climb(a, shards.sharded(a, 1, 1), "ws", "mpim N=1", 1, [100, 200]))
    assert 1 <= len(climb.steps) <= 2  # (a slow machine may stop at the first step's p99)
    for phase, _ in climb.steps:
        assert_clean(phase)
    text = saturation.report([climb], a)
    assert "| mpim N=1 |" in text and "last good rate/s" in text and "busiest router" in text
    assert saturation.busiest_router(climb.steps[0][0]) >= 0


@pytest.mark.skipif(nchan_missing() is not None, reason="needs nginx-light and libnginx-mod-nchan")
def test_saturation_climbs_nchan() -> None:
    a = args("saturation", "--conns", "60", "--rates", "100", "--duration", "1")
    climb = uvloop.run(saturation.climb(a, NchanServer(1), "nchan", "nchan", 1, [100]))
    [(phase, _)] = climb.steps
    assert_clean(phase)
