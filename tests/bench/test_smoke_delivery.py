"""A few seconds of the reliable-push and private-chat scenarios at tiny scale against a real master.

Not timing tests: they assert what the ack clients counted (every message
delivered once, in order, acked; every chat message acknowledged and both of its
copies delivered), so the benchmark code cannot rot.
"""

from __future__ import annotations

import math
from typing import Any

import uvloop

from bench.__main__ import parser
from bench.scenarios import chat, reliable
from bench.tally import merge_counts
from tests.bench.test_smoke import assert_clean


def args(*argv: str) -> Any:
    return parser().parse_args([*argv, "--deadline", "90", "--warm-seconds", "0.3"])


def test_reliable_push_with_acks_over_tcp_and_websocket() -> None:
    a = args("reliable", "--conns", "40", "--rate", "150", "--duration", "1")
    for kind in ("tcp", "ws"):
        [result] = uvloop.run(reliable.case(a, 2, kind, "ack"))
        assert_clean(result)
        acks = merge_counts(result.reports, "acks")
        assert 0 < acks <= result.received  # at most one ack per read
        assert merge_counts(result.reports, "seq_gaps") == 0
        assert result.usage.cpu_of("router") > 0


def test_plain_unicast_with_the_inbox_off() -> None:
    a = args("reliable", "--conns", "30", "--rate", "100", "--duration", "1")
    [result] = uvloop.run(reliable.case(a, 1, "tcp", "off"))
    assert_clean(result)
    assert merge_counts(result.reports, "acks") == 0


def test_private_chat_half_tcp_half_websocket_at_two_rates() -> None:
    a = args("chat", "--conns", "40", "--rates", "60,120", "--duration", "1", "--workers", "2")
    results = uvloop.run(chat.case(a, 2))
    assert len(results) == 2
    for r in results:
        assert r.sent > 0 and r.acked == r.sent and r.refused == 0, r.first_refusal
        assert r.received == r.expected == 2 * r.sent
        assert r.own == r.sent
        assert (r.lost, r.dup, r.reorder, r.seq_gaps, r.closed) == (0, 0, 0, 0, 0)
        assert math.isfinite(r.p99) and r.p50 <= r.p99 <= r.max
        assert math.isfinite(r.ack_p99) and r.ack_p50 <= r.ack_p99 <= r.ack_max
        assert 0 < r.acks <= r.received
        assert r.usage.cpu > 0 and {"router", "worker 1", "worker 2"} <= {row[0] for row in r.usage.rows}
    assert results[0].sent < results[1].sent


def test_private_chat_with_goims_echo() -> None:
    a = args("chat", "--conns", "20", "--rate", "50", "--duration", "1", "--transport", "tcp")
    a.upstream_ack = "none"
    [r] = uvloop.run(chat.case(a, 1))
    assert r.acked == r.sent > 0 and r.received == 2 * r.sent and r.lost == 0


def test_private_chat_between_go_zero_clients() -> None:
    for ack in ("only", "none"):
        a = args("chat", "--conns", "20", "--rate", "60", "--duration", "1", "--transport", "gozero")
        a.upstream_ack = ack
        [r] = uvloop.run(chat.case(a, 2))
        assert r.sent > 0 and r.acked == r.sent and r.refused == 0, r.first_refusal
        assert r.received == r.expected == 2 * r.sent and r.own == r.sent
        assert (r.lost, r.dup, r.reorder, r.seq_gaps, r.closed) == (0, 0, 0, 0, 0)
        assert 0 < r.acks <= r.received
        if ack == "only":
            assert math.isfinite(r.ack_p99) and r.ack_p50 <= r.ack_p99 <= r.ack_max
