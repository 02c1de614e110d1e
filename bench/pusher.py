"""HTTP publisher for the push scenarios: keep-alive, pipelined, paced.

:class:`Pusher` keeps ``connections`` keep-alive HTTP/1.1 connections to the
ingress and writes requests round-robin (at most ``window`` unanswered per
connection). :meth:`Pusher.run_paced` publishes at a target rate for a
duration; every body is stamped when its request is written, so the latency a
client sees is publish -> receive through the whole server. Responses are
parsed with httptools; anything but HTTP 2xx (and, for mpim, ``"code":0``) is
counted as failed. :meth:`Pusher.run_sequential` is a backend that waits for every
answer: one request in flight on one connection, the next written as soon as the
previous one is answered, and it records each request's write -> answer time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httptools

HOST = "127.0.0.1"

# (ordering key, request bytes) for the n-th push, stamped with the send time
MakeRequest = Callable[[int, float], tuple[int, bytes]]


def post(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        len(body),
        body,
    )


class _Conn(asyncio.Protocol):
    def __init__(self, owner: Pusher) -> None:
        self.owner = owner
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.inflight = 0
        self.body = b""
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.inflight -= 1
        status = self.parser.get_status_code()
        self.owner.answered(status, self.body)
        self.body = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class Pusher:
    def __init__(self, port: int, connections: int = 4, window: int = 64, check_code: bool = True) -> None:
        self.port = port
        self.size = connections
        self.window = window
        self.check_code = check_code
        self.conns: list[_Conn] = []
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.first_error = ""
        self.answer_times: list[float] = []  # run_sequential: seconds from each write to its answer
        self.on_answer: Callable[[], None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.size):
            _, conn = await loop.create_connection(lambda: _Conn(self), HOST, self.port)
            self.conns.append(conn)

    def answered(self, status: int, body: bytes) -> None:
        if 200 <= status < 300 and (not self.check_code or b'"code":0' in body):
            self.ok += 1
        else:
            self.failed += 1
            if not self.first_error:
                self.first_error = f"HTTP {status}: {body[:200]!r}"
        if self.on_answer is not None:
            self.on_answer()

    def has_room(self, key: int) -> bool:
        conn = self.conns[key % len(self.conns)]
        return conn.transport is not None and conn.inflight < self.window

    def send(self, key: int, request: bytes) -> None:
        """Write on the connection of ``key``: pushes with one key keep their order."""
        conn = self.conns[key % len(self.conns)]
        if conn.transport is None:
            raise ConnectionError("the server closed a publisher connection")
        conn.inflight += 1
        conn.transport.write(request)
        self.sent += 1

    @property
    def inflight(self) -> int:
        return sum(c.inflight for c in self.conns)

    async def run_paced(self, make: MakeRequest, rate: float, duration: float, tick: float = 0.002) -> float:
        """Publish ``rate`` requests per second for ``duration`` seconds; returns the achieved rate."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + duration
        n = 0
        held: tuple[int, bytes] | None = None
        while True:
            now = loop.time()
            if now >= end:
                break
            due = int((now - start) * rate) + 1 if rate > 0 else n + 256
            while n < due:
                if held is None:
                    held = make(n, time.monotonic())
                if not self.has_room(held[0]):
                    break  # that connection's window is full (or it closed): retry on the next tick
                self.send(*held)
                held = None
                n += 1
            await asyncio.sleep(tick)
        if held is not None:  # already counted by the plan: send it late rather than never
            self.send(*held)
            n += 1
        return n / max(1e-9, loop.time() - start)

    async def run_sequential(self, make: MakeRequest, duration: float) -> float:
        """One request at a time on the first connection for ``duration`` seconds, each written from
        the callback that parsed the previous answer (a backend that waits for every answer, with
        no pause of its own); returns the achieved rate. Appends to ``answer_times``."""
        loop = asyncio.get_running_loop()
        conn = self.conns[0]
        finished: asyncio.Future[None] = loop.create_future()
        start = loop.time()
        end = start + duration
        n = 0
        sent_at: float | None = None

        def send_next() -> None:
            nonlocal n, sent_at
            now = time.monotonic()
            if sent_at is not None:
                self.answer_times.append(now - sent_at)
            if loop.time() >= end or conn.transport is None:
                self.on_answer = None
                if not finished.done():
                    finished.set_result(None)
                return
            _, request = make(n, now)
            sent_at = now
            conn.inflight += 1
            conn.transport.write(request)  # (on this one connection whatever the key: one order)
            self.sent += 1
            n += 1

        self.on_answer = send_next
        send_next()
        await asyncio.wait({finished, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        self.on_answer = None
        if not finished.done():
            raise ConnectionError("the server closed the sequential publisher's connection")
        return n / max(1e-9, loop.time() - start)

    async def drain(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
