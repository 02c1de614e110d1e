"""The ack clients' pure parts: resume, acks per read, seq de-dup, chat accounting, the scenarios' sums."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from typing import Any

import pytest

from bench.__main__ import parser
from bench.ackclients import (
    RESUME,
    AckTally,
    AckTcpClient,
    ack_auth_frame,
    chat_frame,
    chat_loop,
    contacts,
    merge_named_hist,
    recipient,
)
from bench.scenarios import chat, reliable
from bench.scenarios.common import Usage
from bench.scenarios.push import PushResult
from bench.wire import PUSH_OP, body
from mpim.auth import Authenticator
from mpim.proto import Op, decode, encode, encode_header
from mpim.router.streams import envelope
from mpim.worker.upstream import parse_message


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def frames(self) -> list[tuple[int, int, bytes]]:
        frames, tail = decode(self.data)
        assert not tail
        self.data = b""
        return [(f.op, f.seq, f.body) for f in frames]


def client(mid: int = 4, chat_mode: bool = False) -> tuple[AckTcpClient, Sink, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[None] = loop.create_future()
    c = AckTcpClient(AckTally(), mid - 1, "", ready, mid, chat_mode)
    sink = Sink()
    c.connection_made(sink)
    return c, sink, loop


def resumed(c: AckTcpClient, sink: Sink, top: int = 0) -> None:
    c.data_received(encode(Op.AUTH_REPLY, seq=1))
    assert sink.frames()[-1] == (Op.RESUME, 2, b"{}")
    c.data_received(encode(Op.RESUMED, json.dumps({"epoch": "e1", "seq": top, "recovered": True}).encode()))
    assert c.ready.done() and c.rel.resumed and c.rel.top == top
    assert sink.frames() == []  # nothing to ack yet


def reliable_push(stream: int, n: int, seq: int, sent: float = 0.0) -> bytes:
    return encode(PUSH_OP, body(stream, n, sent, 32), seq=seq)


def test_auth_token_asks_for_ack_with_a_stable_key() -> None:
    frames, _ = decode(ack_auth_frame(7))
    assert frames[0].op == Op.AUTH and encode(Op.RESUME, b"{}", seq=2) == RESUME
    ident = Authenticator("json").verify(frames[0].body)
    assert (ident.mid, ident.key, ident.caps, ident.accepts) == (7, "bench-7", frozenset({"ack"}), {PUSH_OP})


def test_resume_then_one_cumulative_ack_per_read() -> None:
    c, sink, loop = client()
    try:
        assert sink.frames()[0][0] == Op.AUTH
        resumed(c, sink)
        c.data_received(b"".join(reliable_push(3, n, n + 1) for n in range(3)))
        assert sink.frames() == [(Op.ACK, 3, b"")]  # one ack for the whole read
        wire = reliable_push(3, 3, 4) + reliable_push(3, 4, 5)
        c.data_received(wire[:20])  # a read that ends inside a frame: nothing new, no ack
        assert sink.frames() == []
        c.data_received(wire[20:])
        assert sink.frames() == [(Op.ACK, 5, b"")]
        t = c.tally
        assert (t.recv, t.acks, t.dup, t.seq_gaps, t.resumes, c.next) == (5, 2, 0, 0, 1, 5)
        assert sum(t.hist) == 5
    finally:
        loop.close()


def test_repeated_seqs_are_dropped_and_skipped_ones_counted() -> None:
    c, sink, loop = client()
    try:
        resumed(c, sink, top=10)  # a stream that already had 10 messages
        c.data_received(reliable_push(3, 0, 11) + reliable_push(3, 0, 11) + reliable_push(3, 1, 14))
        t = c.tally
        assert (t.recv, t.dup, t.seq_dups, t.seq_gaps) == (2, 1, 1, 2)
        assert sink.frames() == [(Op.ACK, 14, b"")]
    finally:
        loop.close()


def test_websocket_batches_and_goim_pushes_are_walked() -> None:
    c, sink, loop = client()
    try:
        resumed(c, sink)
        inner = reliable_push(3, 0, 1) + reliable_push(3, 1, 2)
        c.walk(encode_header(Op.RAW, len(inner)) + inner, 0, 16 + len(inner), 0.0)
        c.data_received(encode(PUSH_OP, body(3, 2, 0.0, 32)))  # seq 0: an at-most-once push
        assert (c.tally.recv, c.next, c.rel.top) == (3, 3, 2)
    finally:
        loop.close()


def test_chat_frame_is_what_the_server_parses() -> None:
    frames, _ = decode(chat_frame(41, 9, 123.25))
    assert (frames[0].op, frames[0].seq) == (Op.SEND_MSG, 42)
    msg_id, to, op, inner = parse_message(frames[0].body)
    assert (msg_id, to, op, json.loads(inner)) == ("41", 9, PUSH_OP, [41, 123.25])


def test_chat_copies_acks_and_order() -> None:
    me, sink, loop = client(mid=4, chat_mode=True)
    try:
        resumed(me, sink)

        def copy(seq: int, sender: int, n: int, to: int = 4, sent: float = 0.0) -> bytes:
            return encode(PUSH_OP, envelope(str(n), sender, to, [n, sent]), seq=seq)

        me.rel.send_chat(me, 9, 1.0)
        me.rel.send_chat(me, 9, 2.0)
        assert [(op, seq) for op, seq, _ in sink.frames()] == [(Op.SEND_MSG, 1), (Op.SEND_MSG, 2)]
        answer = b'{"id":"0","code":0,"message":"","seq":1,"state":"done"}'
        refusal = b'{"id":"1","code":-429,"message":"unread","seq":0,"state":"done"}'
        me.data_received(
            encode(Op.SEND_MSG_REPLY, answer, seq=1)
            + copy(1, 4, 0, to=9)
            + encode(Op.SEND_MSG_REPLY, refusal, seq=2)
        )
        t = me.tally
        assert (t.chat_sent, t.chat_acked, t.chat_refused, t.own_recv, t.recv) == (2, 1, 1, 1, 1)
        assert "-429" in t.first_refusal and sum(t.ack_hist.values()) == 2
        # from user 7: n 0, 2, then 1 late (reorder), then 2 again under a new seq (dup); one for user 8
        me.data_received(copy(2, 7, 0) + copy(3, 7, 2) + copy(4, 7, 1) + copy(5, 7, 2) + copy(6, 8, 0))
        assert (t.recv, t.reorder, t.dup, t.misdelivered, t.pair_checked) == (6, 1, 1, 0, 2)
        me.data_received(copy(7, 8, 1, to=5))  # neither from nor to me
        assert t.misdelivered == 1
        assert sink.frames()[-1] == (Op.ACK, 7, b"")
        assert sum(t.hist) == 5  # the recipient copies (the dup too); own copies apart
        assert sum(t.own_hist.values()) == 1
    finally:
        loop.close()


def test_goim_echo_acknowledges_in_mode_none() -> None:
    me, sink, loop = client(chat_mode=True)
    try:
        resumed(me, sink)
        me.rel.send_chat(me, 2, 0.0)
        me.data_received(encode(Op.SEND_MSG, b"", seq=1))
        assert (me.tally.chat_acked, me.tally.chat_refused, me.rel.pending) == (1, 0, {})
    finally:
        loop.close()


def test_contacts_and_recipients() -> None:
    import random

    picked = contacts(5, 100, 4)
    assert len(set(picked)) == 4 and 5 not in picked and all(1 <= m <= 100 for m in picked)
    assert contacts(5, 100, 4) == picked and contacts(5, 100, 0) == []
    assert sorted(contacts(1, 3, 10)) == [2, 3]
    rng = random.Random(1)
    seen = {recipient(2, 3, rng, []) for _ in range(200)}
    assert seen == {1, 3}
    assert {recipient(2, 50, rng, [7, 9]) for _ in range(50)} == {7, 9}


def test_chat_loop_paces_over_open_clients() -> None:
    async def go() -> tuple[dict[str, Any], list[AckTcpClient]]:
        loop = asyncio.get_running_loop()
        tally = AckTally()
        clients = [AckTcpClient(tally, i, "", loop.create_future(), i + 1, True) for i in range(4)]
        for c in clients[:3]:
            c.connection_made(Sink())
        return await chat_loop(list(clients), 200.0, 0.25, 4, 0, 7), clients

    out, clients = asyncio.run(go())
    assert out["sent"] + out["skipped"] >= 40 and out["skipped"] > 0
    assert sum(c.rel.sent for c in clients) == out["sent"] == clients[0].tally.chat_sent
    assert clients[3].rel.sent == 0  # never connected


def test_reports_reset_and_merge() -> None:
    t = AckTally()
    t.acks, t.ack_hist[3] = 2, 5
    t.peer_seen.add((1, 2, 3))
    report = t.report()
    assert report["acks"] == 2 and report["ack_hist"] == {"3": 5} and "first_refusal" in report
    t.closed = 1
    t.reset()
    assert (t.acks, t.ack_hist, t.peer_seen, t.closed) == (0, {}, set(), 1)
    assert merge_named_hist([{"ack_hist": {"3": 1}}, {"ack_hist": {"3": 2, "9": 1}}, {}], "ack_hist") == {
        3: 3,
        9: 1,
    }


def usage(cpu: float, router: float, workers: float) -> Usage:
    rows = [
        ("router", router, 0.0, 0),
        ("worker 1", workers, 0.0, 0),
        ("bus", cpu - router - workers, 0.0, 0),
    ]
    return Usage(seconds=10.0, cpu=cpu, worker_cpu=workers, rows=rows)


def test_chat_summary_counts_two_copies_per_accepted_message() -> None:
    reports = [
        {"chat_acked": 10, "chat_refused": 1, "recv": 15, "dup": 2, "seq_dups": 1, "reorder": 1,
         "hist": {"20": 9}, "ack_hist": {"5": 11}, "own_hist": {"30": 5}, "first_refusal": ""},
        {"chat_acked": 5, "recv": 14, "hist": {"40": 9}, "first_refusal": "x"},
    ]  # fmt: skip
    r = chat.summarize(reports, 16, 2.0, usage(1.0, 0.4, 0.5))
    # 15 accepted -> 30 copies owed; 29 received of which 1 a second copy under a new seq
    assert (r.expected, r.received, r.lost, r.dup, r.refused, r.first_refusal) == (30, 29, 2, 2, 1, "x")
    assert r.rate == 8.0 and r.per_cpu == 29.0 and r.per_second == 14.5
    assert r.ack_p99 == pytest.approx(0.0006) and r.own_p99 == pytest.approx(0.0031)
    line = dict(zip(chat.HEADER, chat.row(2, "tcp+ws", 40, r), strict=True))
    assert line["router µs / message"] == pytest.approx(1e6 * 0.4 / 16)
    assert line["ack p99 ms"] == pytest.approx(0.6)


def push_result(received: int, cpu: float, router: float, workers: float) -> PushResult:
    return PushResult(
        pushes=received, rate=received / 10, seconds=10.0, received=received, expected=received, lost=0,
        dup=0, reorder=0, misdelivered=0, closed=0, failed_pushes=0, first_error="", p50=0.001,
        p99=0.002, max=0.003, usage=usage(cpu, router, workers),
    )  # fmt: skip


def test_reliable_costs_are_differences_per_message() -> None:
    by = {
        "off": push_result(10_000, 1.0, 0.5, 0.4),
        "goim": push_result(10_000, 1.5, 0.95, 0.4),
        "ack": push_result(10_000, 2.0, 1.25, 0.6),
    }
    workers, transport, rate, inbox, rel_router, rel_workers, whole, ratio = reliable.cost_row(
        2, "tcp", 1000.0, by
    )
    assert (workers, transport, rate) == (2, "tcp", 1000.0)
    assert (inbox, rel_router, rel_workers) == pytest.approx((45.0, 30.0, 20.0))
    assert whole == "100 / 150 / 200" and ratio == pytest.approx(0.5)
    partial = reliable.cost_row(1, "ws", 100.0, {"ack": by["ack"]})
    assert all(math.isnan(v) for v in partial[3:6]) and partial[6] == "- / - / 200"
    line = dict(zip(reliable.HEADER, reliable.row("ack", 2, "tcp", 4000, by["ack"], 10_000), strict=True))
    assert (line["clients"], line["inbox"], line["acks / push"]) == ("ack", "on", 1.0)
    assert line["router µs / push"] == pytest.approx(125.0) and line["workers µs / push"] == pytest.approx(
        60.0
    )
    assert math.isnan(reliable.micro(1.0, 0))


def test_cli_of_the_new_scenarios() -> None:
    a = parser().parse_args(["reliable"])
    assert (a.conns, a.variants, a.transport, a.duration) == (4000, ["off", "goim", "ack"], "tcp", 10)
    a = parser().parse_args(["reliable", "--variants", "ack,off,ack", "--rates", "100,1000"])
    assert a.variants == ["ack", "off"] and a.rates == [100.0, 1000.0]
    assert reliable.overrides(a, "off")["inbox"] == {"enabled": False}
    assert "inbox" not in reliable.overrides(a, "goim")
    for bad in ("", "all", "ack,nope"):
        with pytest.raises(argparse.ArgumentTypeError):
            reliable.variants_list(bad)
    a = parser().parse_args(["chat"])
    assert (a.conns, a.transport, a.contacts, a.upstream_ack) == (2000, "mixed", 4, "only")
    with pytest.raises(SystemExit):
        parser().parse_args(["chat", "--upstream-ack", "rigor"])


def test_run_queue_wait_is_read_per_process() -> None:
    import os

    from bench import schedwait

    mine = schedwait.sample([os.getpid(), 0])  # (pid 0 has no /proc entry: skipped)
    assert list(mine) == [os.getpid()] and mine[os.getpid()] >= 0
    assert schedwait.waited({1: 0.5, 2: 1.0}, {1: 0.75, 3: 9.0}) == 0.25
