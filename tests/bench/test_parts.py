"""The load generator's pure parts: frame walking, sequence accounting, histograms, CLI."""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from bench import servers
from bench.__main__ import parser
from bench.clients import TcpClient
from bench.fleet import Fleet
from bench.loadgen import Generator
from bench.pusher import Pusher, post
from bench.report import table
from bench.scenarios import unicast
from bench.scenarios.common import Usage, check_capacity, make_mpim, mpim_overrides, rates_list, setting
from bench.scenarios.idle import idle_row, percent
from bench.scenarios.push import (
    MidPlan,
    PushResult,
    RoomPlan,
    cpu_split,
    members,
    quotient,
    rates_of,
    rates_text,
    ratio_row,
)
from bench.servers import MpimServer, nchan_missing
from bench.tally import Tally, hist_max, merge_bcast, merge_hist, percentile
from bench.wire import BROADCAST, PREFIX, PUSH_OP, WsError, body, ws_frames
from mpim.proto import Op, decode, encode, encode_header
from mpim.worker.wsframe import binary_frame


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def client(stream: int = 3) -> TcpClient:
    loop = asyncio.new_event_loop()
    try:
        ready: asyncio.Future[None] = loop.create_future()
    finally:
        loop.close()
    c = TcpClient(Tally(), stream, "live://3", ready, mid=7)
    c.transport = Sink()
    return c


def push(stream: int, seq: int, sent: float = 0.0) -> bytes:
    return encode(PUSH_OP, body(stream, seq, sent, 32))


def test_body_prefix_and_padding() -> None:
    data = body(5, 9, 1.5, 40)
    assert len(data) == 40
    assert PREFIX.unpack_from(data) == (5, 9, 1.5)
    assert len(body(5, 9, 1.5, 4)) == PREFIX.size


def test_in_order_deliveries_split_anywhere() -> None:
    stream = b"".join(push(3, seq) for seq in range(50))
    for step in (1, 7, 36, len(stream)):
        c = client()
        for i in range(0, len(stream), step):
            c.data_received(stream[i : i + step])
        assert (c.tally.recv, c.next, c.tally.dup, c.tally.reorder, c.tally.gaps) == (50, 50, 0, 0, 0)
        assert sum(c.tally.hist) == 50
        assert c.lost(50) == 0 and c.lost(52) == 2


def test_gap_late_arrival_and_duplicate() -> None:
    c = client()
    c.data_received(push(3, 0) + push(3, 3) + push(3, 1) + push(3, 1) + push(3, 4))
    assert c.tally.gaps == 2  # 1 and 2 were skipped when 3 came
    assert c.tally.reorder == 1  # 1 came late
    assert c.tally.dup == 1  # 1 came twice
    assert c.lost(5) == 1  # 2 never came


def test_other_streams_broadcasts_and_control_frames() -> None:
    c = client()
    batch = push(4, 0) + push(BROADCAST, 0, 1.0) + encode(Op.HEARTBEAT_REPLY, b"\0\0\0\1")
    c.data_received(batch + encode(Op.DISCONNECT_REPLY))
    assert c.tally.misdelivered == 1
    assert c.tally.bcast[0][0] == 1
    assert (c.tally.hb_replies, c.tally.kicked, c.tally.recv) == (1, 1, 2)


def test_websocket_batch_is_walked_like_tcp() -> None:
    inner = push(3, 0) + push(3, 1) + push(3, 2)
    message = binary_frame(encode_header(Op.RAW, len(inner)) + inner)
    frames, used = ws_frames(message)
    assert used == len(message) and frames[0][0] == 2
    c = client()
    c.walk(message, frames[0][1], frames[0][2], 0.0)
    assert (c.tally.recv, c.next) == (3, 3)


def test_ws_frames_agree_with_the_library() -> None:
    """Whatever websockets' server side sends, our walker splits it the same way."""
    server = ServerProtocol()
    server.state = server.state.__class__.OPEN  # skip the handshake: frames only
    payloads = [b"a" * n for n in (0, 1, 125, 126, 65535, 65536)]
    for payload in payloads:
        server.send_frame(Frame(Opcode.BINARY, payload))
    wire = b"".join(server.data_to_send())
    frames, used = ws_frames(wire)
    assert used == len(wire)
    assert [wire[s:e] for _, s, e in frames] == payloads
    partial, used = ws_frames(wire[:-1])
    assert len(partial) == len(payloads) - 1 and used < len(wire)
    with pytest.raises(WsError):
        ws_frames(b"\x02\x01x")  # a fragment


def test_histogram_percentiles_and_merging() -> None:
    reports = [{"hist": {"10": 98, "500": 1}}, {"hist": {"10": 0, "20000": 1}}]
    hist = merge_hist(reports)
    assert percentile(hist, 0.5) == pytest.approx(0.0011)
    assert percentile(hist, 0.99) == pytest.approx(0.0501)
    assert hist_max(hist) == pytest.approx(2.0001)
    bcast = merge_bcast([{"bcast": {"0": [2, 1.0, 2.0]}}, {"bcast": {"0": [3, 0.5, 1.5]}}])
    assert bcast == {0: [5, 0.5, 2.0]}


def test_plans_count_what_they_publish() -> None:
    assert members(10, 3) == {0: 4, 1: 3, 2: 3}
    plan = RoomPlan(10, 3, 32)
    keys = [plan.request(n, 0.0)[0] for n in range(7)]
    assert keys == [0, 1, 2, 0, 1, 2, 0]
    assert plan.sent == {0: 3, 1: 2, 2: 2} and plan.expected() == 3 * 4 + 2 * 3 + 2 * 3
    _, request = plan.request(7, 0.0)
    assert request.startswith(b"POST /goim/push/room?operation=1000&type=live&room=1 HTTP/1.1\r\n")
    mids = MidPlan(5, 32)
    for n in range(20):
        mids.request(n, 0.0)
    assert sum(mids.sent.values()) == 20 == mids.expected()
    groups = MidPlan(5, 32, per_push=2)
    assert groups.fanout == {0: 2, 1: 2, 2: 1}
    while True:
        key, request = groups.request(0, 0.0)
        if key == 1:
            break
    assert b"?operation=1000&mids=3&mids=4 HTTP/1.1" in request
    frames, _ = decode(encode(Op.AUTH, b"x"))
    assert frames[0].op == Op.AUTH
    assert post("/x", b"ab").endswith(b"Content-Length: 2\r\n\r\nab")


def test_cli_defaults_and_nchan_hint() -> None:
    args = parser().parse_args(["capacity"])
    assert (args.conns, args.workers, args.transport) == (30_000, [1, 2], "both")
    args = parser().parse_args(["fanout", "--workers", "2", "--peer", "nchan"])
    assert args.workers == [2] and args.peer == "nchan"
    hint = nchan_missing()
    assert hint is None or "apt-get install" in hint


def test_table_is_markdown() -> None:
    text = table(("a", "bb"), [(1234567, 0.5), ("x", float("nan"))])
    assert text.splitlines() == [
        "| a         | bb  |",
        "|-----------|-----|",
        "| 1,234,567 | 0.5 |",
        "| x         | -   |",
    ]


def test_missing_nchan_says_what_and_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(servers, "NCHAN_MODULE", tmp_path / "ngx_nchan_module.so")
    hint = servers.nchan_missing()
    assert hint is not None and "libnginx-mod-nchan" in hint
    assert "apt-get install -y nginx-light libnginx-mod-nchan" in hint
    with pytest.raises(servers.Missing):
        servers.NchanServer(1)


def test_nchan_plans_post_to_the_stream_channel() -> None:
    plan = MidPlan(5, 32, nchan=True)
    assert not plan.check_code and MidPlan(5, 32).check_code
    for n in range(10):
        key, request = plan.request(n, 0.0)
        assert request.startswith(b"POST /pub/%d HTTP/1.1\r\n" % key)
        assert PREFIX.unpack_from(request, request.index(b"\r\n\r\n") + 4)[:2] == (key, plan.sent[key] - 1)
    assert plan.expected() == 10
    groups = MidPlan(5, 32, per_push=2, nchan=True)  # a group shares a channel: 2 deliveries a request
    key, request = groups.request(0, 0.0)
    assert request.startswith(b"POST /pub/%d " % key) and groups.expected() == groups.fanout[key]
    rooms = RoomPlan(10, 3, 32, nchan=True)
    paths = [rooms.request(n, 0.0)[1].split(b" ")[1] for n in range(4)]
    assert paths == [b"/pub/0", b"/pub/1", b"/pub/2", b"/pub/0"]


def test_rates_option() -> None:
    assert rates_list("100,3000") == [100.0, 3000.0]
    assert rates_list(" 250 ,") == [250.0]
    for bad in ("", ",", "0,100", "-5", "fast", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            rates_list(bad)
    args = parser().parse_args(["unicast", "--peer", "nchan", "--rates", "100,3000", "--workers", "1"])
    assert (args.peer, rates_of(args), rates_text(args)) == ("nchan", [100.0, 3000.0], "100, 3000")
    args = parser().parse_args(["unicast", "--rate", "300"])
    assert (args.peer, args.rates, rates_of(args)) == ("none", [], [300.0])
    args = parser().parse_args(["fanout", "--rates", "10,20"])
    assert rates_of(args) == [10.0, 20.0]
    assert parser().parse_args(["ingress", "--rates", "100,1000"]).rates == [100.0, 1000.0]
    assert parser().parse_args(["ingress"]).rates == []
    with pytest.raises(SystemExit):
        parser().parse_args(["unicast", "--rates", "0"])
    args = parser().parse_args(["unicast", "--sequential", "--rates", "100,3000", "--conns", "40"])
    assert (rates_of(args), rates_text(args)) == ([0.0], "sequential")  # (no target rate)
    assert unicast.what(args) == "40 users, one sequential publisher x 1 mid(s)"


def test_the_sequential_publisher_has_one_request_in_flight() -> None:
    """Each request is written only when the previous one was answered, on one connection."""
    seen: list[int] = []  # requests the server read at once (then answered), per read

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffered = b""
        while data := await reader.read(65536):
            buffered += data
            waiting = buffered.count(b"POST ")
            buffered = buffered[buffered.rfind(b"POST ") + 5 :] if waiting else buffered
            if waiting:
                seen.append(waiting)
            await asyncio.sleep(0)
            for _ in range(waiting):
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"code":0}')
        writer.close()

    async def scenario() -> tuple[Pusher, float]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        pusher = Pusher(server.sockets[0].getsockname()[1], connections=1, window=1)
        await pusher.open()
        rate = await pusher.run_sequential(lambda n, now: (n, post("/p", b"%d" % n)), 0.2)
        pusher.close()
        server.close()
        return pusher, rate

    pusher, rate = asyncio.run(scenario())
    assert pusher.sent > 0 and rate > 0 and pusher.failed == 0
    assert pusher.ok == len(pusher.answer_times) == pusher.sent
    assert set(seen) == {1}


def test_set_option_overrides_the_config() -> None:
    assert setting("inbox.group_window=0.002") == ("inbox", "group_window", 0.002)
    assert setting(' log.level = "info" ') == ("log", "level", "info")
    assert setting("tcp.bind=[]") == ("tcp", "bind", [])
    for bad in ("inbox.group_window", "group_window=1", "inbox.=1", "a.b.c=1", "log.level=info"):
        with pytest.raises(argparse.ArgumentTypeError):
            setting(bad)
    argv = ["unicast", "--set", "inbox.group_window=0.002", "--set", "room.batch=5", "--set", "x.y=true"]
    args = parser().parse_args([*argv, "--set", "inbox.group_window=0"])
    sections = mpim_overrides(args)
    assert sections["inbox"] == {"group_window": 0} and sections["room"]["batch"] == 5
    assert sections["x"] == {"y": True} and sections["protocol"]["heartbeat"] == 600.0
    defaults = make_mpim(args, 1, overrides={})  # mpim's defaults (the idle scenario) take --set too
    shutil.rmtree(defaults.tmp)
    assert defaults.sections["room"] == {"batch": 5} and defaults.sections["inbox"]["group_window"] == 0
    assert parser().parse_args(["idle"]).set == []
    with pytest.raises(SystemExit):
        parser().parse_args(["unicast", "--set", "nonsense"])


def result(received: int, cpu: float, p99: float) -> PushResult:
    usage = Usage(seconds=1.0, cpu=cpu, worker_cpu=cpu, rows=[])
    return PushResult(
        pushes=received, rate=received, seconds=1.0, received=received, expected=received, lost=0, dup=0,
        reorder=0, misdelivered=0, closed=0, failed_pushes=0, first_error="", p50=p99 / 2, p99=p99,
        max=p99, usage=usage,
    )  # fmt: skip


def test_cpu_split_gives_user_and_kernel_time_per_delivery() -> None:
    r = result(20_000, 1.5, 0.004)
    r.usage.rows = [("router", 1.0, 0.25, 0), ("worker 1", 0.5, 0.25, 0)]
    assert cpu_split(r) == (
        "router 1.00s (25% system), worker 1 0.50s (50% system); per delivery 50.0 µs user + 25.0 µs system"
    )


def test_mpim_nchan_ratios() -> None:
    mine, theirs = result(3000, 0.5, 0.004), result(3000, 0.25, 0.002)
    assert mine.per_cpu == 6000 and theirs.per_cpu == 12000
    assert ratio_row(2, 3000.0, mine, theirs) == (2, 3000.0, 0.5, 2.0)
    no_cpu = result(3000, 0.0, 0.002)  # under one 10 ms tick: no figure rather than a division error
    assert math.isnan(no_cpu.per_cpu) and math.isnan(ratio_row(1, 1.0, mine, no_cpu)[2])
    assert math.isnan(quotient(1.0, 0.0)) and math.isnan(quotient(float("nan"), 1.0))
    assert table(("a",), [ratio_row(1, 1.0, mine, no_cpu)[2:3]]).endswith("| - |")


def test_idle_accounting() -> None:
    rows = [("master", 0.02, 0.01, 0), ("bus", 0.04, 0.0, 0), ("router", 0.1, 0.05, 0),
            ("worker 1", 0.2, 0.1, 0), ("worker 2", 0.04, 0.0, 0)]  # fmt: skip
    held = Usage(seconds=20.0, cpu=0.4, worker_cpu=0.24, rows=rows, client_cpu=0.2)
    empty = Usage(seconds=5.0, cpu=0.05, worker_cpu=0.0, rows=[])
    row = idle_row(2, "tcp", 10_000, held, empty, 9_999)
    assert row[:4] == (2, "tcp", 10_000, 20.0)
    expected = (2.0, 1.0, 1.2, 0.5, 0.2, 0.1, 1.0)  # % of one core: all, empty, workers, router, bus, ...
    assert row[4:11] == pytest.approx(expected)
    assert row[11] == 9_999
    assert math.isnan(idle_row(1, "ws", 1, held, None, 1)[5])
    assert math.isnan(percent(1.0, 0.0))


def test_lost_is_reported_per_phase() -> None:
    async def phases() -> list[int]:
        gen = Generator()
        c = client()
        gen.clients = [c]
        c.data_received(push(3, 0) + push(3, 2))
        first = gen.finish({"3": 3})["lost"]  # 1 never came
        c.data_received(push(3, 3) + push(3, 4))
        second = gen.finish({"3": 6})["lost"]  # nor did 5: one more, not 1 again
        third = gen.finish({"3": 6})["lost"]
        return [first, second, third]

    assert asyncio.run(phases()) == [1, 1, 0]


def test_capacity_check() -> None:
    server = MpimServer(1)
    try:
        check_capacity(server, servers.PER_WORKER)
        with pytest.raises(ValueError, match="--conns <= 18,000"):
            check_capacity(server, servers.PER_WORKER + 1)
    finally:
        shutil.rmtree(server.tmp, ignore_errors=True)


def test_a_cancelled_generator_call_does_not_shift_the_replies() -> None:
    async def scenario() -> None:
        fleet = await Fleet.start(1, deadline=60)
        try:
            [gen] = fleet.gens
            stdout: Any = gen.proc.stdout
            readline = stdout.readline

            async def slow_readline() -> bytes:
                await asyncio.sleep(0.5)
                return await readline()

            stdout.readline = slow_readline
            ticker = asyncio.create_task(fleet.all({"cmd": "stats"}))
            await asyncio.sleep(0.2)  # written and answered, the answer not read yet
            ticker.cancel()
            stdout.readline = readline
            [report] = await fleet.all({"cmd": "finish", "sent": {}})
            assert "hist" in report and "id" not in report  # the finish reply, not the stale stats
            [stats] = await fleet.all({"cmd": "stats"})
            assert "recv" in stats and "hist" not in stats
        finally:
            await fleet.stop()

    asyncio.run(scenario())
