"""A router driven without sockets: fake worker links and a fake bus port."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from mpim import config, records
from mpim.config import Config
from mpim.inbox import Inbox, InboxLimits, MemoryInbox
from mpim.inbox.base import Item, Position
from mpim.records import Connect, Hello, Sync
from mpim.router.core import Router
from mpim.router.tables import SessionTable

_decoder_router = records.Decoder(records.RouterRecord)
_decoder_bus = records.Decoder(records.BusRecord)


def _unstamped(record: Any) -> Any:
    """A push record with its acceptance time (``at``, for the latency metric) zeroed, so tests
    compare what matters (tests/router/test_metrics.py checks the stamp itself)."""
    if getattr(record, "at", 0.0):
        return msgspec.structs.replace(record, at=0.0)
    return record


def _decode_router(data: bytes) -> Any:
    return _unstamped(_decoder_router(data))


def _decode_bus(data: bytes) -> Any:
    return _unstamped(_decoder_bus(data))


class MockTransport:
    """An asyncio transport that keeps what is written (the HTTP protocol tests, no sockets).

    ``strict``: writing after close fails the test; otherwise late writes are kept in
    ``late_writes`` (asyncio would drop them silently) for the test to assert on.
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.data = bytearray()
        self.late_writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.writes = 0  # write calls (a system call each on a real socket)

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.closed:
            assert not self.strict, "write after close"
            self.late_writes.append(data)
        else:
            self.data += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None


class FakeBus:
    """The router's bus port: records what is published; marks end a turn when the test says so."""

    def __init__(self) -> None:
        self.connected = True
        self.published: list[tuple[bytes, Any]] = []
        self.next_mark = 1
        self._marked = False

    def publish(self, topic: bytes, record: bytes) -> None:
        self.published.append((topic, _decode_bus(record)))

    def mark(self) -> int:
        self._marked = True
        return self.next_mark

    def end_turn(self) -> int:
        """What the real port does at the end of a loop turn: send the mark (returns its number)."""
        mark = self.next_mark
        if self._marked:
            self._marked = False
            self.next_mark += 1
        return mark

    def take(self) -> list[tuple[bytes, Any]]:
        out, self.published = self.published, []
        return out


class FakeLink:
    """One worker's link as the router sees it: what the router sent, decoded."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        self.id = f"h/{name}/{pid}"
        self.sent: list[Any] = []
        self.closed = False
        self._req = 0

    def send(self, record: bytes) -> None:
        self.sent.append(_decode_router(record))

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[Any]:
        out, self.sent = self.sent, []
        return out

    def req(self) -> int:
        self._req += 1
        return self._req


class RecordingInbox(MemoryInbox):
    """A memory inbox that keeps every item it was asked to append (to prove nothing was stored)."""

    def __init__(self) -> None:
        super().__init__(InboxLimits())
        self.appended: list[Item] = []

    async def append(self, items: Any) -> list[Position]:
        self.appended.extend(items)
        return await super().append(items)


class Harness:
    def __init__(
        self,
        cfg: Config | None = None,
        alive: bool = True,
        expect: int = 0,
        inbox: Inbox | bool | None = True,
        loop: asyncio.AbstractEventLoop | None = None,
        **sections: Any,
    ) -> None:
        base = {
            "protocol": {"heartbeat": 10, "heartbeat_max": 2},
            "router": {"report_interval": 1.0, "worker_expiry": 5.0},
        }
        for name, table in sections.items():
            base.setdefault(name, {}).update(table)
        self.cfg = cfg or config.replace(config.Config(), **base)
        self.loop = loop or asyncio.new_event_loop()  # (router shards in one test share one)
        self.clock = 0.0
        self.loop.time = lambda: self.clock  # type: ignore[method-assign]
        self.bus = FakeBus()
        self.received: list[tuple[int, str, int, bytes]] = []
        self.table = SessionTable(Router.ttl(self.cfg), self.cfg.router.sweep_interval, 0.0)
        self.router = Router(
            self.cfg,
            self.table,
            self.bus,
            lambda *args: self.received.append(args),
            self.loop,
            host="h",
            expect=expect,
            is_alive=lambda pid: alive,
            inbox=MemoryInbox(InboxLimits()) if inbox is True else inbox or None,
        )

    def close(self) -> None:
        self.loop.close()

    def settle(self) -> None:
        """Run the callbacks of futures that were resolved (answers chained on them)."""
        self.loop.run_until_complete(asyncio.sleep(0))

    def wait(self, future: Any) -> Any:
        """Run the loop until ``future`` (a push by mid: stored, then sent) is done; its result."""
        return self.loop.run_until_complete(future)

    def mids(self, op: int, mids: list[int], body: bytes) -> int:
        """A push by mid, waited for; how many connections it was handed to."""
        connections, _ = self.wait(self.router.push.mids(op, mids, body))
        return int(connections)

    def worker(self, name: str, pid: int = 1, *, bus: bool = True, sync: bool = True) -> FakeLink:
        """A worker that linked, (optionally) synced an empty session list and came up on the bus."""
        link = FakeLink(name, pid)
        self.router.workers.attach(link)
        batch: list[Any] = [Hello("h", name, pid)]
        if sync:
            batch.append(Sync([]))
        self.router.on_records(link, batch)
        if bus:
            self.router.confirms.on_bus_fence(link.id, 0)
        link.take()
        return link

    def send(self, link: FakeLink, *batch: Any) -> None:
        self.router.on_records(link, list(batch))

    def connect(
        self, link: FakeLink, key: str, mid: int, room: str = "", ip: str = "ip", fence: int = 0
    ) -> int:
        req = link.req()
        self.send(link, Connect(req, key, mid, room, ip, fence))
        return req
