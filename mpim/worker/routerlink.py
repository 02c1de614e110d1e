"""A worker's stream to one router process (:mod:`mpim.stream`): sessions up, pushes and answers down.

With several router shards the worker holds one of these per shard (its
:class:`~mpim.worker.shards.Shard`): each greets, syncs and reports only what its shard owns.

How this works:

- **Connection.** Connected at start and again whenever it drops (the router restarted),
  each time opening with ``Hello`` and the complete list of the sessions its shard owns
  (``Sync``), then resending every registration still waiting.
- **Session events** (a close, an upstream message) go up as they happen.
- **Calls that wait for an answer** (registrations, resumes, messages with an ack,
  presence questions, drains) are :class:`~mpim.worker.routercalls.RouterCalls`'s: it
  owns the table of calls in flight and answers them itself when the router cannot.
- **Reports** (acks folded per loop turn, heartbeats, the ``Alive`` record every
  ``report_interval``) are :class:`~mpim.worker.linkreports.LinkReports`'s.
- **Down the stream**: unicast pushes, kicks, counts and the answers, dispatched by record
  type in :meth:`RouterLink.on_record`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mpim import records, stream
from mpim.records import (
    Bye,
    ChatAck,
    Confirmed,
    Denied,
    Disconnect,
    Drained,
    FenceRequest,
    Hello,
    Kick,
    PushKeys,
    PushMids,
    Replayed,
    Resync,
    RoomCounts,
    Sync,
    Upstream,
)
from mpim.worker.linkreports import LinkReports
from mpim.worker.routercalls import RouterCalls

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.bussub import BusSubscription
    from mpim.worker.channel import Channel
    from mpim.worker.link import DeliveryTarget, RoomCounter, SessionTarget
    from mpim.worker.shards import RoomTotals, Shard, Tally

log = logging.getLogger("mpim.link")

_decode_router = records.Decoder(list[records.RouterRecord])
_RETRY_MIN, _RETRY_MAX = 0.05, 1.0


class _RouterConn(stream.FrameProtocol):
    """The worker's end of the router stream."""

    def __init__(self, link: RouterLink) -> None:
        super().__init__(link.loop)
        self.link = link
        self.lost = asyncio.Event()

    def on_frame(self, payload: bytes) -> None:
        try:
            batch = _decode_router(payload)
        except records.BadRecord as exc:
            self.link.stats["bad_records"] += 1
            log.warning("ignoring a malformed frame from %s: %s", self.link.shard.label, exc)
            return
        for record in batch:
            try:
                self.link.on_record(record)
            except Exception:
                log.exception("error handling %s from %s", type(record).__name__, self.link.shard.label)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


class RouterLink:
    """The connection, its greeting and the dispatch of what comes down; the calls
    (:attr:`calls`) and the reports (:attr:`reports`) are pieces of their own."""

    def __init__(
        self,
        cfg: Config,
        shard: Shard,
        endpoint: str,
        hello: Hello,
        worker_id: str,
        bus: BusSubscription,
        stats: dict[str, int],
        totals: RoomTotals,
    ) -> None:
        self.cfg = cfg
        self.shard = shard
        self.totals = totals  # (RoomCounts: the shards' sums)
        self.endpoint = endpoint
        self.hello = hello
        self.id = worker_id
        self.bus = bus
        self.stats = stats
        self.loop: asyncio.AbstractEventLoop  # set by start(), in the running loop
        self.sessions: SessionTarget | None = None
        self.delivery: DeliveryTarget | None = None
        self.rooms: RoomCounter | None = None
        self.conn: _RouterConn | None = None
        self.calls = RouterCalls(cfg, shard, worker_id, bus, stats, self.send, self._encode, self.up)
        self.reports = LinkReports(cfg, stats, self.send, self._encode, self.buffered)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._down_logged = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        sessions: SessionTarget,
        delivery: DeliveryTarget,
        rooms: RoomCounter,
        tally: Tally,
    ) -> None:
        self.loop = loop
        self.sessions, self.delivery, self.rooms = sessions, delivery, rooms
        self.calls.start(loop, sessions)
        self._tasks.append(loop.create_task(self._keep_connected()))
        self.reports.start(loop, sessions, rooms, tally)
        log.info("worker %s linking to %s at %s", self.id, self.shard.label, self.endpoint)

    def close(self) -> None:
        """Say goodbye (the router forgets our sessions at once) and close the stream."""
        self._closing = True
        self.reports.close()
        self.calls.close()
        for task in self._tasks:
            task.cancel()
        conn = self.conn
        if conn is not None and not conn.closed:
            last = self.reports.last()  # the last counts, for the metrics
            if last is not None:
                conn.send(last)
            conn.send(records.encode(Bye()))
            conn.close()

    async def _keep_connected(self) -> None:
        delay = _RETRY_MIN
        while not self._closing:
            try:
                conn = await stream.connect(self.loop, self.endpoint, lambda: _RouterConn(self))
            except OSError as exc:
                if not self._down_logged:
                    log.warning("cannot reach %s at %s (%s); retrying", self.shard.label, self.endpoint, exc)
                    self._down_logged = True
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX, delay * 2)
                continue
            delay = _RETRY_MIN
            self._down_logged = False
            self.conn = conn
            self._greet(conn)
            await conn.lost.wait()
            self.conn = None
            if not self._closing:
                log.warning("lost the link to %s; reconnecting", self.shard.label)
                self.calls.link_dropped()

    def _greet(self, conn: _RouterConn) -> None:
        assert self.sessions is not None
        conn.send(records.encode(self.hello))
        self._sync(conn)
        waiting = self.calls.waiting()
        for call in waiting:
            conn.send(call.record)
        self.bus.send_fence()
        log.info(
            "worker %s linked to %s (%d sessions, %d waiting)",
            self.id,
            self.shard.label,
            self.reports.tally.online,
            len(waiting),
        )

    def _sync(self, conn: _RouterConn) -> None:
        assert self.sessions is not None
        self.stats["syncs"] += 1
        entries = self.shard.owns(self.sessions.entries())
        data = self._encode(Sync(entries))
        if data is None:  # one bad entry must not blind the router to every other session
            entries = [e for e in entries if self._encode(Sync([e])) is not None]
            data = records.encode(Sync(entries))
        conn.send(data)
        self.reports.tally.synced(entries)

    def _encode(self, record: records.WorkerRecord) -> bytes | None:
        """One record's bytes; a value that cannot be encoded costs only this record."""
        try:
            return records.encode(record)
        except (UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
            self.stats["dropped_reports"] += 1
            log.error("cannot report %s to %s: %s", type(record).__name__, self.shard.label, exc)
            return None

    def send(self, record: bytes | None) -> None:
        if record is None:
            return
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.send(record)
        else:
            self.stats["dropped_reports"] += 1  # the next Sync carries the truth

    def up(self) -> bool:
        conn = self.conn
        return conn is not None and not conn.closed

    def buffered(self) -> int:
        transport = getattr(self.conn, "transport", None)
        return transport.get_write_buffer_size() if transport is not None else 0

    # -- session events -------------------------------------------------------------------------
    def disconnected(self, channel: Channel) -> None:
        self.reports.forget(channel)
        self.send(self._encode(Disconnect(channel.key)))

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self.send(self._encode(Upstream(channel.key, channel.mid, op, body)))

    # -- records from the router --------------------------------------------------------------
    def on_record(self, record: records.RouterRecord) -> None:
        assert self.sessions is not None and self.delivery is not None
        match record:  # (class patterns only: the pushes are the hot path)
            case PushKeys():
                self.delivery.push_keys(record.op, record.keys, record.body, record.at)
            case PushMids():
                self.delivery.push_mids(record.op, record.keys, record.seqs, record.body, record.at)
            case Confirmed():
                self.calls.confirmed(record.reqs)
            case Denied():
                self.calls.denied(record.reqs, record.reason)
            case Kick():
                self.sessions.kick(record.keys)
            case RoomCounts():
                self.delivery.set_room_online(self.totals.add(self.shard.index, record.rooms))
            case FenceRequest():
                self.bus.send_fence()
            case Resync():
                log.info("%s asked worker %s for its sessions again", self.shard.label, self.id)
                if self.conn is not None:
                    self._sync(self.conn)
            case Replayed():
                self.calls.replayed(record)
            case ChatAck():
                self.calls.answered(record)
            case Drained():
                self.calls.drained(record)
