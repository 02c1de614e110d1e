"""Chaos helpers: a steady push load that records every answer, and clients that record every push.

The rule every chaos test checks: a push the API answered ``code 0`` reached every
client it named that was still connected (by user: ``connections`` of them; to a
room: every member), in publish order for a room. Anything else (-503, -504, a
refused or reset connection) may or may not have been delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from mpim.client import Client, ConnectionClosedError
from mpim.proto import Op


@dataclass
class Answer:
    kind: str  # "mid" or "room"
    target: int  # the mid (room pushes: 0)
    body: bytes
    code: int | None  # None: no answer (connection refused, reset, timeout)
    connections: int = 0


class Http:
    """One keep-alive HTTP connection, reopened after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, target: str, body: bytes) -> dict[str, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        size = next(
            int(v) for k, _, v in (ln.partition(": ") for ln in head) if k.lower() == "content-length"
        )
        answer: dict[str, Any] = json.loads(await self.reader.readexactly(size))
        return answer

    def reset(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Load:
    """Pushes alternately to one user (round robin over ``mids``) and to ``room`` (``type``, ``id``)."""

    port: int
    mids: list[int]
    room: tuple[str, str]
    rate: float = 200.0
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        http = Http(self.port)
        i = 0
        try:
            while not self._stop.is_set():
                if i % 2:
                    mid = self.mids[(i // 2) % len(self.mids)]
                    answer = Answer("mid", mid, b"m-%d" % i, None)
                    target = f"/goim/push/mids?operation=1000&mids={mid}"
                else:
                    answer = Answer("room", 0, b"r-%d" % i, None)
                    target = f"/goim/push/room?operation=1000&type={self.room[0]}&room={self.room[1]}"
                try:
                    reply = await asyncio.wait_for(http.post(target, answer.body), 10)
                    answer.code = reply["code"]
                    if answer.code == 0 and answer.kind == "mid":
                        answer.connections = reply["data"]["connections"]
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, StopIteration):
                    http.reset()
                self.answers.append(answer)
                i += 1
                await asyncio.sleep(1 / self.rate)
        finally:
            http.reset()

    def stop(self) -> None:
        self._stop.set()

    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.code == 0]


class Receiver:
    """Reads one client's pushes until it is closed (or told to stop)."""

    def __init__(self, client: Client, mid: int) -> None:
        self.client = client
        self.mid = mid
        self.got: list[bytes] = []
        self.closed = False  # the server closed it (op 6 or EOF)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosedError, OSError, asyncio.IncompleteReadError):
            while True:
                try:
                    frame = await self.client.recv_push(3600)
                except TimeoutError:
                    continue
                if frame.op == 1000:
                    self.got.append(frame.body)
                elif frame.op == Op.DISCONNECT_REPLY:
                    break
        self.closed = True

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def check(
    load: Load, receivers: list[Receiver], survivors: list[Receiver], exact: bool = True
) -> dict[str, int]:
    """Every ok'd push reached its surviving targets, room pushes in order; returns counts for the log.

    ``exact``: an ok answer for a surviving (always online) user must also count its connection
    (no "connections: 0" for a user who is online, e.g. while a restarted router rebuilds).
    """
    ok = load.ok()
    assert ok, "no push was accepted at all"
    room_sent = [a.body for a in ok if a.kind == "room"]
    for r in survivors:
        if exact:
            zero = [a.body for a in ok if a.kind == "mid" and a.target == r.mid and a.connections != 1]
            assert not zero, f"mid {r.mid} is online but {len(zero)} answers said otherwise, e.g. {zero[:5]}"
        got = set(r.got)
        missing = [
            a.body
            for a in ok
            if a.kind == "mid" and a.target == r.mid and a.connections and a.body not in got
        ]
        missing += [body for body in room_sent if body not in got]
        assert not missing, (
            f"mid {r.mid}: {len(missing)} pushes answered ok never arrived, e.g. {missing[:5]}"
        )
        rooms = [b for b in r.got if b.startswith(b"r-")]
        assert rooms == sorted(rooms, key=lambda b: int(b[2:])), f"mid {r.mid}: room pushes out of order"
    return {
        "pushes": len(load.answers),
        "ok": len(ok),
        "refused": sum(1 for a in load.answers if a.code not in (0, None)),
        "no answer": sum(1 for a in load.answers if a.code is None),
        "receivers": len(receivers),
    }
