"""A real in-process worker on loopback, served from its own thread, for socket fuzzing.

The fuzz tests drive it with blocking sockets from the test thread, so each
Hypothesis example is a plain function call. Every use of worker internals (the
open-connection count and the room push) is in :class:`WorkerRig`, so a refactor
of the hub only has to be followed here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, TypeVar

import uvloop
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from mpim.config import parse_address
from mpim.proto import Decoder, Frame, Op, decode, encode
from mpim.worker.server import Worker
from tests.fuzz.traps import ErrorTrap
from tests.support import local_config

T = TypeVar("T")
CALM_ROOM = "live://fuzz-calm"


class WorkerRig:
    def __init__(self, **sections: dict[str, Any]) -> None:
        self.cfg = local_config(**sections)
        self.tcp = parse_address(self.cfg.tcp.bind[0])
        self.ws = parse_address(self.cfg.websocket.bind[0])
        self.ws_url = "ws://{}:{}{}".format(*self.ws, self.cfg.websocket.path)
        self.trap = ErrorTrap()
        self.loop_errors: list[str] = []
        self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-worker", daemon=True)
        self.worker: Worker | None = None
        self.bystanders: list[TcpBystander | WsBystander] = []
        self.baseline = 0
        self._checks = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> WorkerRig:
        logging.getLogger().addHandler(self.trap)
        self._thread.start()

        async def start() -> Worker:
            worker = Worker(self.cfg, asyncio.get_running_loop(), name="fuzz")
            await worker.start()
            return worker

        self.worker = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.bystanders = [TcpBystander(self), WsBystander(self)]
        self.wait_connections(len(self.bystanders))
        self.baseline = len(self.bystanders)
        return self

    def __exit__(self, *exc: object) -> None:
        for bystander in self.bystanders:
            bystander.close()
        if self.worker is not None:
            worker = self.worker
            self.loop.call_soon_threadsafe(worker.stop, False)
            asyncio.run_coroutine_threadsafe(worker.wait_stopped(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        logging.getLogger().removeHandler(self.trap)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        detail = "".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else repr(exc)
        self.loop_errors.append(f"{context.get('message')}: {detail}")

    # -- the worker's internals, in one place ------------------------------------------------------
    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker's loop and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    def connections(self) -> int:
        """Open connections, authenticated or not."""
        assert self.worker is not None
        hub = self.worker.hub
        return self.call(lambda: hub.connections)

    def push_room(self, room: str, op: int, body: bytes) -> None:
        assert self.worker is not None
        hub = self.worker.hub
        self.call(lambda: hub.push_room(op, room, body))

    # -- checks ------------------------------------------------------------------------------------
    def wait_connections(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.connections()) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker holds {now} connections, expected {count}")
            time.sleep(0.002)

    def check_healthy(self) -> None:
        """Back to the baseline, nothing logged at ERROR, and the bystanders still served."""
        self.wait_connections(self.baseline)
        errors = self.trap.take() + self.loop_errors
        self.loop_errors = []
        assert not errors, "worker errors:\n" + "\n---\n".join(errors)
        self._checks += 1
        body = b"calm %d" % self._checks
        for bystander in self.bystanders:
            bystander.send_heartbeat(self._checks)
        self.push_room(CALM_ROOM, 1000, body)
        for bystander in self.bystanders:
            bystander.expect(self._checks, body)

    def __repr__(self) -> str:  # shown by Hypothesis next to a failing example
        return f"WorkerRig(tcp={self.tcp}, ws={self.ws_url})"


class TcpBystander:
    """A well-behaved TCP client in the calm room."""

    def __init__(self, rig: WorkerRig) -> None:
        self.sock = socket.create_connection(rig.tcp, timeout=5)
        self.decoder = Decoder(max_body=1 << 20)
        self.frames: list[Frame] = []
        self.sock.sendall(
            encode(Op.AUTH, b'{"mid":1,"key":"fuzz-calm-tcp","room_id":"%s"}' % CALM_ROOM.encode(), seq=1)
        )
        assert self._next().op == Op.AUTH_REPLY

    def _next(self) -> Frame:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the worker closed the TCP bystander")
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def send_heartbeat(self, seq: int) -> None:
        self.sock.sendall(encode(Op.HEARTBEAT, seq=seq))

    def expect(self, seq: int, body: bytes) -> None:
        _expect(self._next, seq, body)

    def close(self) -> None:
        self.sock.close()


class WsBystander:
    """A well-behaved WebSocket client in the calm room."""

    def __init__(self, rig: WorkerRig) -> None:
        self._stack = ExitStack()
        self.conn: ClientConnection = self._stack.enter_context(
            ws_connect(rig.ws_url, compression=None, max_size=None, proxy=None, ping_interval=None)
        )
        self.frames: list[Frame] = []
        self.conn.send(
            encode(Op.AUTH, b'{"mid":2,"key":"fuzz-calm-ws","room_id":"%s"}' % CALM_ROOM.encode(), seq=1)
        )
        assert self._next().op == Op.AUTH_REPLY

    def _next(self) -> Frame:
        while not self.frames:
            message = self.conn.recv(timeout=5)
            assert isinstance(message, bytes)
            frames, tail = decode(message, max_body=1 << 20)
            assert not tail
            for frame in frames:
                if frame.op == Op.RAW:
                    inner, rest = decode(frame.body, max_body=1 << 20)
                    assert not rest
                    self.frames += inner
                else:
                    self.frames.append(frame)
        return self.frames.pop(0)

    def send_heartbeat(self, seq: int) -> None:
        self.conn.send(encode(Op.HEARTBEAT, seq=seq))

    def expect(self, seq: int, body: bytes) -> None:
        _expect(self._next, seq, body)

    def close(self) -> None:
        self._stack.close()


def _expect(next_frame: Callable[[], Frame], seq: int, body: bytes) -> None:
    """A heartbeat reply for ``seq`` and the room push ``body``, in either order."""
    got_reply = got_push = False
    while not (got_reply and got_push):
        frame = next_frame()
        if frame.op == Op.HEARTBEAT_REPLY and frame.seq == seq:
            got_reply = True
        elif frame.op == 1000 and frame.body == body:
            got_push = True
