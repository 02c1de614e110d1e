"""goim clients of a chaos run: no caps, one room each, over TCP or WebSocket (mpim's client
library), connected for the whole run; they reconnect (same key) whenever the server or a
fault drops them, and leave only when the harness closes everyone at the end.

Each connection is a ``connect`` operation (ok once the Auth reply came), each business
frame a ``recv`` event, and its end a ``close`` event saying why (``op6``, ``eof``, an error,
or ``final``). The probe clients the harness uses to see the system serve again are the
same clients in the probe room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from bench.chaos.checker.model import FINAL
from bench.chaos.ctx import ACCEPTS, HEARTBEAT, Ctx
from bench.chaos.history import FAIL, INFO
from mpim.client import Client, ConnectionClosedError, connect_tcp, connect_ws
from mpim.proto import Op


class GoimClient:
    def __init__(self, ctx: Ctx, process: str, host: str, key: str, mid: int, room: str, ws: bool) -> None:
        self.ctx = ctx
        self.process = process
        self.host = host
        self.key = key
        self.mid = mid
        self.room = room
        self.ws = ws
        self.rng = ctx.rng(process)
        self.online = asyncio.Event()
        self.got: set[str] = set()
        self.conns = 0

    def token(self) -> bytes:
        return json.dumps(
            {"mid": self.mid, "key": self.key, "room_id": self.room, "accepts": ACCEPTS}
        ).encode()

    async def run(self) -> None:
        history = self.ctx.history
        while not self.ctx.closing.is_set():
            self.conns += 1
            conn = f"{self.key}#{self.conns}"
            host = self.ctx.host(self.host)
            values = {"conn": conn, "key": self.key, "mid": self.mid, "room": self.room, "host": self.host}
            values["transport"] = "ws" if self.ws else "tcp"
            start = history.now()
            client: Client | None = None
            try:
                if self.ws:
                    client = await connect_ws(f"ws://127.0.0.1:{host.ws_port}/sub", open_timeout=3)
                else:
                    client = await asyncio.wait_for(connect_tcp("127.0.0.1", host.tcp_port), 3)
                await client.auth(self.token(), timeout=5)
            except (OSError, TimeoutError, ConnectionClosedError, AssertionError, ValueError) as exc:
                values["error"] = str(exc) or type(exc).__name__
                refused = isinstance(exc, ConnectionRefusedError)
                values["gave_up"] = history.now()  # (the socket is closed from here on)
                history.record(
                    self.process, "connect", FAIL if refused else INFO, values, time=start, end=None
                )
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
                await self._pause()
                continue
            history.record(self.process, "connect", "ok", values, time=start)
            self.online.set()
            why = await self._read(client, conn)
            self.online.clear()
            history.event(self.process, "close", {"conn": conn, "why": why})
            with contextlib.suppress(Exception):
                await client.close()
            if why == FINAL:
                return
            await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ctx.closing.wait(), self.rng.uniform(0.1, 0.5))

    async def _read(self, client: Client, conn: str) -> str:
        loop = asyncio.get_running_loop()
        beat = loop.time() + HEARTBEAT
        history = self.ctx.history
        try:
            while not self.ctx.closing.is_set():
                if loop.time() >= beat:
                    await client.send(Op.HEARTBEAT)
                    beat = loop.time() + HEARTBEAT
                try:
                    frame = await client.recv_push(timeout=0.25)
                except TimeoutError:
                    continue
                if frame.op == Op.DISCONNECT_REPLY:
                    return "op6"
                if frame.op >= 1000:
                    body = frame.body.decode("utf-8", "replace")
                    self.got.add(body)
                    history.event(
                        self.process, "recv", {"conn": conn, "seq": frame.seq, "op": frame.op, "body": body}
                    )
        except ConnectionClosedError:
            return "eof"
        except (OSError, ValueError) as exc:
            return f"error: {exc or type(exc).__name__}"
        return FINAL
