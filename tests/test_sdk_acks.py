"""The SDK's acks against a scripted server: paced, coalesced, and never one short.

The server of these tests keeps a window like mpim's: it writes at most ``window`` messages
past the last ack, so a client that fails to ack the last ones it handled waits for ever.
"""

from __future__ import annotations

import asyncio
import json

from mpim.proto import Frame, Op, encode
from mpim.sdk import OP_ACK, OP_RESUME, OP_RESUMED, Message, Session


class WindowServer:
    """Stands in for mpim.client.Client: a replay of ``total`` messages paced by acks."""

    def __init__(self, total: int, window: int, send_delay: float) -> None:
        self.total = total
        self.window = window
        self.send_delay = send_delay  # a slow socket: acks take a while to leave
        self.acked = 0
        self.written = 0
        self.acks: list[int] = []
        self.frames: list[Frame] = []
        self.arrived = asyncio.Event()
        self.closed = False

    # -- what Session uses of a Client ---------------------------------------------------------
    async def auth(self, token: bytes, timeout: float = 5.0) -> Frame:
        return Frame(1, Op.AUTH_REPLY, 1, b"")

    async def send(self, op: int, body: bytes = b"", seq: int | None = None, ver: int = 1) -> int:
        await asyncio.sleep(self.send_delay)
        if op == OP_RESUME:
            self._write()
        elif op == OP_ACK and seq is not None:
            self.acks.append(seq)
            self.acked = max(self.acked, seq)
            self._write()
        return seq or 0

    @property
    def pending(self) -> int:
        return len(self.frames)

    async def recv_push(self, timeout: float = 5.0) -> Frame:
        while not self.frames:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout)
        return self.frames.pop(0)

    async def close(self) -> None:
        self.closed = True

    # -- the server's side ---------------------------------------------------------------------
    def _write(self) -> None:
        while self.written < min(self.total, self.acked + self.window):
            self.written += 1
            self.frames.append(Frame(1, 1000, self.written, b"m%d" % self.written))
        if self.written == self.total and self.acked >= self.total - self.window and self.total:
            body = json.dumps({"epoch": "e", "seq": self.total, "recovered": True}).encode()
            self.frames.append(Frame(1, OP_RESUMED, 0, body))
            self.total = 0  # (op 21 once)
        self.arrived.set()


async def replay(window: int, delay: float) -> None:
    server = WindowServer(total=300, window=window, send_delay=delay)
    seen: list[int] = []

    async def slow(message: Message) -> None:
        seen.append(message.seq)
        if message.seq % 5 == 0:
            await asyncio.sleep(0.001)

    session = Session("127.0.0.1:1", {"mid": 1, "key": "k"}, slow, ack_every=4, ack_interval=0.002)

    async def fake_open() -> WindowServer:
        return server

    session._open = fake_open  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(session.run())
    await asyncio.wait_for(session.ready.wait(), 10)
    assert seen == list(range(1, 301)), (window, delay)
    assert server.acks == sorted(server.acks)  # cumulative, never backwards
    gaps = [b - a for a, b in zip(server.acks, server.acks[1:], strict=False)]
    assert len(server.acks) < 300 and all(g > 0 for g in gaps)  # coalesced
    await session.close()
    task.cancel()


def test_a_long_replay_is_acked_through_the_window_however_the_acks_interleave() -> None:
    async def main() -> None:
        for window, delay in ((16, 0.0), (16, 0.003), (7, 0.001), (64, 0.005)):
            await replay(window, delay)

    asyncio.run(main())


def test_acks_are_no_more_often_than_the_interval() -> None:
    async def main() -> None:
        server = WindowServer(total=2000, window=2000, send_delay=0.0)
        session = Session(
            "127.0.0.1:1", {"mid": 1, "key": "k"}, lambda m: None, ack_every=1, ack_interval=0.05
        )

        async def fake_open() -> WindowServer:
            return server

        session._open = fake_open  # type: ignore[method-assign,assignment]
        task = asyncio.get_running_loop().create_task(session.run())
        await asyncio.wait_for(session.ready.wait(), 10)
        await asyncio.sleep(0.2)
        assert server.acks[-1] == 2000 and len(server.acks) <= 6  # 2,000 messages, a few acks
        await session.close()
        task.cancel()

    asyncio.run(main())


def test_encode_is_the_wire_frame() -> None:  # (the scripted frames stand for these bytes)
    assert encode(1000, b"m1", seq=1)[8:16] == (1000).to_bytes(4, "big") + (1).to_bytes(4, "big")


def test_a_held_back_ack_is_sent_even_if_its_timer_fires_a_hair_early() -> None:
    """The timer of a held-back ack may fire just before the interval is over (the loop's clock
    is coarse): the ack must still leave, or a client whose window is full waits for ever."""

    async def main() -> None:
        server = WindowServer(total=0, window=1, send_delay=0.0)
        session = Session("127.0.0.1:1", {"mid": 1, "key": "k"}, lambda m: None, ack_interval=0.02)
        session._unacked, session.seq = 5, 5
        session._acked_at = asyncio.get_running_loop().time()
        await session._ack(server)  # type: ignore[arg-type]  # within the interval: held back
        assert server.acks == [] and session._ack_later is not None
        session._acked_at += 0.005  # (as if the timer woke 5 ms before the interval's end)
        await asyncio.wait_for(session._ack_later, 1)
        assert server.acks == [5]

    asyncio.run(main())
