"""The harness's own parts: the history's JSON lines, the raw client's frame splitter, the Redis
fault proxy (on a real loopback echo server) and the outcome of a push answer."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from bench.chaos.backend import outcome
from bench.chaos.history import History, load
from bench.chaos.proxy import DELAY, DROP, PARTITION, PASS, Proxy
from bench.chaos.wire import WireError, frame, split
from tests.support import run


def test_the_history_is_one_json_line_per_operation_read_back_whole(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl")
    history.record("backend", "push", "ok", {"body": "P1", "seqs": {"1": 3}}, time=1.0)
    history.record("backend", "push", "info", {"body": "P2"}, time=2.0, end=None)
    history.event("c:k", "recv", {"conn": "k#1", "seq": 0, "op": 1002, "body": "é"})
    history.close()
    ops = load(tmp_path / "h.jsonl")
    assert [(o.index, o.kind, o.outcome) for o in ops] == [
        (0, "push", "ok"),
        (1, "push", "info"),
        (2, "recv", "ok"),
    ]
    assert ops[0].values == {"body": "P1", "seqs": {"1": 3}} and ops[0].time == 1.0
    assert ops[1].end is None and ops[2].values["body"] == "é"
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 3


def test_frames_split_whole_in_pieces_and_from_an_op_9_batch() -> None:
    data = frame(1000, b"a", seq=1) + frame(9, frame(1000, b"b", seq=2) + frame(1000, b"c", seq=3))
    frames, rest = split(data)
    assert [(f.op, f.seq, f.body) for f in frames] == [(1000, 1, b"a"), (1000, 2, b"b"), (1000, 3, b"c")]
    assert rest == b""
    got: list[bytes] = []
    buffer = b""
    for i in range(len(data)):  # byte at a time
        more, buffer = split(buffer + data[i : i + 1])
        got += [f.body for f in more]
    assert got == [b"a", b"b", b"c"] and buffer == b""
    with pytest.raises(WireError):
        split(b"\x00\x00\x00\x20\x00\x0f" + b"\x00" * 26)


def test_outcomes_of_answers() -> None:
    assert outcome(0, "") == "ok"
    assert outcome(-400, "mids: 0 is not a user id") == "fail"
    assert outcome(-503, "the server is stopping; push refused") == "fail"
    assert outcome(-503, "the inbox could not store the message (nothing was pushed): x") == "fail"
    assert outcome(-503, "the bus went down; the push may not have been delivered") == "info"
    assert outcome(-503, "delivered on this host only (1 connections): Redis: x") == "info"
    assert outcome(-504, "not confirmed") == "info"
    assert outcome(None, "") == "info"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def test_the_proxy_passes_delays_partitions_drops_and_heals() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        proxy = Proxy(server.sockets[0].getsockname()[1], seed=1)
        await proxy.start()

        async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", proxy.port)

        reader, writer = await dial()
        writer.write(b"one")
        assert await reader.readexactly(3) == b"one"
        proxy.set(DELAY, 0.05)
        for word in (b"a", b"b", b"c"):
            writer.write(word)
        assert await reader.readexactly(3) == b"abc"  # late, in order
        proxy.set(PARTITION)
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), 0.3)
        proxy.set(PASS)  # healed: the connection that lost bytes is reset
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        reader, writer = await dial()
        writer.write(b"two")
        assert await reader.readexactly(3) == b"two"
        proxy.set(DROP)
        assert await asyncio.wait_for(reader.read(10), 10) == b""  # cut (every 0.2-1 s)
        proxy.set(PASS)
        await proxy.stop()
        server.close()

    run(main())
