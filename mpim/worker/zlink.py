"""A worker's link under the master: the stream to the router and the XSUB socket on the bus.

How this works:

- **Router stream** (:mod:`mpim.stream`): connected at start and again whenever it
  drops (the router restarted), each time opening with ``Hello`` and the complete
  session list (``Sync``), then resending every request still waiting. Session
  events go up as they happen (batched per loop turn); unicast pushes, kicks and
  confirmations come down. A registration (``Connect``) or ``RoomChange`` is
  answered by ``Confirmed``, and only then is the client answered.
- **Bus** (:mod:`mpim.bus`): an XSUB socket subscribed to the broadcast topic and
  to the topic of every room with local members (or a client about to join).
  After the subscriptions of a loop turn it sends one numbered ``BusFence``
  upstream; a request that needs a new room carries that fence number, and the
  router confirms it only after the fence came through (so the room is live).
  Room and broadcast pushes come down with the router's ``Mark`` s, which are
  reported back (``BusSeen``) so the router can answer room pushes with certainty.
- Every ``report_interval`` an ``Alive`` record carries the connection count, the
  keys that heart-beat meanwhile and, every ``online_interval``, local room counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
from itertools import count
from typing import TYPE_CHECKING

import zmq

from mpim import bus, records, stream
from mpim.config import Config
from mpim.records import (
    Acked,
    AckEntry,
    Alive,
    BusFence,
    BusSeen,
    Bye,
    Chat,
    ChatAck,
    Confirmed,
    Connect,
    Denied,
    Disconnect,
    Drained,
    Draining,
    FenceRequest,
    Hello,
    Kick,
    Mark,
    Presence,
    PushAll,
    PushKeys,
    PushMids,
    PushRoom,
    Replayed,
    Resume,
    Resync,
    RoomChange,
    RoomCounts,
    Sync,
    Upstream,
)
from mpim.runtime import Endpoints, server_name
from mpim.worker.channel import CLOSED

if TYPE_CHECKING:
    from mpim.worker.channel import Channel
    from mpim.worker.link import DeliveryTarget, OnAck, OnReplayed, RoomCounter, SessionTarget

log = logging.getLogger("mpim.link")

_decode_router = records.Decoder(list[records.RouterRecord])
_decode_bus = records.Decoder(list[records.BusRecord])
_RETRY_MIN, _RETRY_MAX = 0.05, 1.0


class _RouterConn(stream.FrameProtocol):
    """The worker's end of the router stream."""

    def __init__(self, link: HostLink) -> None:
        super().__init__(link.loop)
        self.link = link
        self.lost = asyncio.Event()

    def on_frame(self, payload: bytes) -> None:
        try:
            batch = _decode_router(payload)
        except records.BadRecord as exc:
            self.link.stats["bad_records"] += 1
            log.warning("ignoring a malformed frame from the router: %s", exc)
            return
        for record in batch:
            try:
                self.link.on_router(record)
            except Exception:
                log.exception("error handling %s from the router", type(record).__name__)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


class HostLink:
    def __init__(self, cfg: Config, endpoints: Endpoints, name: str) -> None:
        self.endpoints = endpoints.configured(cfg)
        self.cfg = cfg
        self.host = server_name(cfg)
        self.pid = os.getpid()
        # The name is the worker slot; our id adds the pid, so a ".<pid>" suffix is redundant.
        self.name = name.removesuffix(f".{self.pid}")
        self.id = f"{self.host}/{self.name}/{self.pid}"
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.XSUB)
        self.sub.setsockopt(zmq.RCVHWM, cfg.bus.hwm)
        self.sub.setsockopt(zmq.SNDHWM, cfg.bus.hwm)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.endpoints.bus_out)
        self.sub.send(bus.SUBSCRIBE + bus.BROADCAST)
        self.loop: asyncio.AbstractEventLoop  # set by attach(), in the running loop
        self.sessions: SessionTarget | None = None
        self.delivery: DeliveryTarget | None = None
        self.rooms: RoomCounter | None = None
        self.reader: bus.SocketReader[bytes] | None = None
        self.conn: _RouterConn | None = None
        self.stats = dict.fromkeys(
            (
                *("bad_records", "bad_messages", "syncs", "dropped_reports", "bus_messages"),
                *("chat_refused", "call_timeouts"),
            ),
            0,
        )
        self._reqs: dict[int, Channel] = {}
        self._req_of: dict[Channel, int] = {}
        self._req_records: dict[int, bytes] = {}
        self._req_fence: dict[int, int] = {}
        self._req_ids = count(1)
        self._fence = 0  # last bus fence sent (or due this turn)
        self._fence_due = False
        self._fence_seen = 0  # highest fence the router confirmed having seen
        self._room_fence: dict[str, int] = {}
        self._beats: set[str] = set()
        self._mark_seen = 0
        self._mark_reported = 0
        self._drains: dict[int, asyncio.Future[int]] = {}
        self._resumes: dict[int, tuple[Channel, OnReplayed]] = {}
        self._chats: dict[int, tuple[Channel, OnAck]] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()  # (when, req), in order
        self._expiry: asyncio.TimerHandle | None = None
        self._acks: dict[tuple[int, str], int] = {}  # this turn's acks, per device
        self._rooms_at = -math.inf  # the first report carries the counts, however young the clock
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._alive_handle: asyncio.TimerHandle | None = None
        self._down_logged = False

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, sessions: SessionTarget, delivery: DeliveryTarget, rooms: RoomCounter) -> None:
        self.loop = asyncio.get_running_loop()
        self.sessions, self.delivery, self.rooms = sessions, delivery, rooms
        self.reader = bus.SocketReader(self.loop, self.sub, self.sub.recv, self._on_bus)
        self.reader.start()
        self._tasks.append(self.loop.create_task(self._keep_connected()))
        self._alive_handle = self.loop.call_later(self.cfg.router.report_interval, self._alive)
        log.info("worker %s linking to the router at %s", self.id, self.endpoints.router)

    async def close(self) -> None:
        """Say goodbye (the router forgets our sessions at once) and close everything."""
        self._closing = True
        if self._alive_handle is not None:
            self._alive_handle.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        for task in self._tasks:
            task.cancel()
        if self.reader is not None:
            self.reader.stop()
        conn = self.conn
        if conn is not None and not conn.closed:
            if self.rooms is not None and self.sessions is not None:  # the last counts, for the metrics
                conn.send(records.encode(Alive(self.sessions.online, [], None, self._stats())))
            conn.send(records.encode(Bye()))
            conn.close()
        self.sub.close(linger=0)
        self.ctx.destroy(linger=0)

    async def _keep_connected(self) -> None:
        delay = _RETRY_MIN
        while not self._closing:
            try:
                conn = await stream.connect(self.loop, self.endpoints.router, lambda: _RouterConn(self))
            except OSError as exc:
                if not self._down_logged:
                    log.warning("cannot reach the router at %s (%s); retrying", self.endpoints.router, exc)
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
                log.warning("lost the link to the router; reconnecting")
                self._fail_calls()

    def _fail_calls(self) -> None:
        """The router went away with answers owed: messages get an error, resumes start over."""
        assert self.sessions is not None
        resumes, self._resumes = self._resumes, {}
        chats, self._chats = self._chats, {}
        for channel, _ in resumes.values():
            if channel.state != CLOSED:
                self.sessions.lost(channel, "the router restarted during its resume")
        for req, (channel, done) in chats.items():
            if channel.state != CLOSED:
                done(ChatAck(req, -503, "the router restarted; the message may not have been processed"))

    def _greet(self, conn: _RouterConn) -> None:
        assert self.sessions is not None
        conn.send(records.encode(Hello(self.host, self.name, self.pid)))
        self._sync(conn)
        for req in sorted(self._req_records):
            conn.send(self._req_records[req])
        self._send_fence()
        log.info(
            "worker %s linked to the router (%d sessions, %d waiting)",
            self.id,
            self.sessions.online,
            len(self._reqs),
        )

    def _sync(self, conn: _RouterConn) -> None:
        assert self.sessions is not None
        self.stats["syncs"] += 1
        entries = self.sessions.entries()
        data = self._encode(Sync(entries))
        if data is None:  # one bad entry must not blind the router to every other session
            entries = [e for e in entries if self._encode(Sync([e])) is not None]
            data = records.encode(Sync(entries))
        conn.send(data)

    def _encode(self, record: records.WorkerRecord) -> bytes | None:
        """One record's bytes; a value that cannot be encoded costs only this record."""
        try:
            return records.encode(record)
        except (UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
            self.stats["dropped_reports"] += 1
            log.error("cannot report %s to the router: %s", type(record).__name__, exc)
            return None

    def _send(self, record: bytes | None) -> None:
        if record is None:
            return
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.send(record)
        else:
            self.stats["dropped_reports"] += 1  # the next Sync carries the truth

    # -- requests (registration and room changes) ---------------------------------------------
    def _fence_for(self, room: str) -> int:
        """The bus fence the router must have seen before ``room`` is live (0: it is)."""
        fence = self._room_fence.get(room, 0) if room else 0
        return fence if fence > self._fence_seen else 0

    def _request(self, channel: Channel, req: int, record: Connect | RoomChange) -> None:
        data = self._encode(record)
        if data is None:
            return  # never confirmed: the client's handshake deadline closes it
        self._reqs[req] = channel
        self._req_of[channel] = req
        self._req_records[req] = data
        self._req_fence[req] = record.fence
        self._send(data)

    def register(self, channel: Channel, room: str, ip: str) -> None:
        req = next(self._req_ids)
        self._request(channel, req, Connect(req, channel.key, channel.mid, room, ip, self._fence_for(room)))

    def change_room(self, channel: Channel, room: str) -> None:
        req = next(self._req_ids)
        self._request(channel, req, RoomChange(req, channel.key, room, self._fence_for(room)))

    def cancel(self, channel: Channel) -> None:
        req = self._req_of.pop(channel, None)
        if req is not None:
            self._reqs.pop(req, None)
            self._req_records.pop(req, None)
            self._req_fence.pop(req, None)

    def _confirmed(self, reqs: list[int]) -> None:
        assert self.sessions is not None
        for req in reqs:
            channel = self._reqs.pop(req, None)
            self._req_records.pop(req, None)
            fence = self._req_fence.pop(req, 0)
            if fence > self._fence_seen:
                self._fence_seen = fence
                self._room_fence = {r: f for r, f in self._room_fence.items() if f > fence}
            if channel is not None:
                self._req_of.pop(channel, None)
                self.sessions.confirmed(channel)

    # -- reliable delivery and client messages --------------------------------------------------
    # Every call that waits for the router's answer (a resume, a message with an ack) gets one
    # within ``[upstream] timeout``: the router's, or ours when the link is down or too slow.
    def _up(self) -> bool:
        conn = self.conn
        return conn is not None and not conn.closed

    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None:
        assert self.sessions is not None
        req = next(self._req_ids)
        data = self._encode(Resume(req, channel.key, channel.mid, epoch, seq, cursor, page))
        if data is None or not self._up():
            why = "its resume could not be sent" if data is None else "the router is unreachable"
            self.sessions.lost(channel, f"{why}; it resumes on its next connection")
            return
        self._resumes[req] = (channel, done)
        self._due(req)
        self._send(data)

    def ack(self, channel: Channel, seq: int) -> None:
        if not self._acks:
            self.loop.call_soon(self._send_acks)
        key = (channel.mid, channel.key)
        if seq > self._acks.get(key, 0):
            self._acks[key] = seq

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        if acks:
            self._send(self._encode(Acked([AckEntry(mid, key, seq) for (mid, key), seq in acks.items()])))

    def chat(self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None) -> None:
        req = next(self._req_ids)
        data = self._encode(Chat(req, channel.key, channel.mid, op, body, msg_id, to, done is not None))
        if done is None:
            self._send(data)  # (no answer owed: at most once, as goim's upstream)
            return
        if data is None:
            done(ChatAck(req, -400, "the message could not be encoded"))
            return
        if not self._up():
            self.stats["chat_refused"] += 1
            done(ChatAck(req, -503, "the router is unreachable; resend the message with the same id"))
            return
        self._chats[req] = (channel, done)
        self._due(req)
        self._send(data)

    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None:
        """Which of ``mids`` are online: answered like a message (a :class:`ChatAck`, its body the
        JSON list), within ``[upstream] timeout``."""
        req = next(self._req_ids)
        data = self._encode(Presence(req, channel.key, channel.mid, mids))
        if data is None:
            done(ChatAck(req, -400, "the question could not be encoded"))
            return
        if not self._up():
            self.stats["chat_refused"] += 1
            done(ChatAck(req, -503, "the router is unreachable; ask again"))
            return
        self._chats[req] = (channel, done)
        self._due(req)
        self._send(data)

    def _due(self, req: int) -> None:
        """The router owes an answer to ``req`` within ``[upstream] timeout``."""
        timeout = self.cfg.upstream.timeout
        self._deadlines.append((self.loop.time() + timeout, req))
        if self._expiry is None:
            self._expiry = self.loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        """Answer the calls the router left unanswered past their deadline."""
        assert self.sessions is not None
        self._expiry = None
        now = self.loop.time()
        deadlines = self._deadlines
        timeout = self.cfg.upstream.timeout
        while deadlines and deadlines[0][0] <= now:
            _, req = deadlines.popleft()
            resume = self._resumes.pop(req, None)
            if resume is not None and resume[0].state != CLOSED:
                self.stats["call_timeouts"] += 1
                self.sessions.lost(resume[0], f"the router did not answer its resume within {timeout:g}s")
            chat = self._chats.pop(req, None)
            if chat is not None and chat[0].state != CLOSED:
                self.stats["call_timeouts"] += 1
                chat[1](
                    ChatAck(
                        req, -504, f"no answer from the router within {timeout:g}s; resend with the same id"
                    )
                )
        while deadlines and deadlines[0][1] not in self._resumes and deadlines[0][1] not in self._chats:
            deadlines.popleft()  # (answered already)
        if deadlines:
            self._expiry = self.loop.call_later(max(0.0, deadlines[0][0] - now), self._expire)

    def _replayed(self, record: Replayed) -> None:
        call = self._resumes.pop(record.req, None)
        if call is not None and call[0].state != CLOSED:
            call[1](record)

    def _chat_ack(self, record: ChatAck) -> None:
        call = self._chats.pop(record.req, None)
        if call is not None and call[0].state != CLOSED:
            call[1](record)

    def _denied(self, reqs: list[int], reason: str) -> None:
        assert self.sessions is not None
        for req in reqs:
            channel = self._reqs.pop(req, None)
            self._req_records.pop(req, None)
            self._req_fence.pop(req, None)
            if channel is not None:
                self._req_of.pop(channel, None)
                self.sessions.denied(channel, reason)

    # -- session events -------------------------------------------------------------------------
    def disconnected(self, channel: Channel) -> None:
        self._beats.discard(channel.key)
        self._send(self._encode(Disconnect(channel.key)))

    def heartbeat(self, channel: Channel) -> None:
        self._beats.add(channel.key)

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self._send(self._encode(Upstream(channel.key, channel.mid, op, body)))

    def _alive(self) -> None:
        assert self.sessions is not None and self.rooms is not None
        cfg = self.cfg.router
        self._alive_handle = self.loop.call_later(cfg.report_interval, self._alive)
        rooms = None
        now = self.loop.time()
        if now - self._rooms_at >= cfg.online_interval - 1e-3:
            self._rooms_at = now
            rooms = self.rooms.local_counts()
        beats, self._beats = list(self._beats), set()
        self._send(records.encode(Alive(self.sessions.online, beats, rooms, self._stats())))

    def _stats(self) -> dict[str, int]:
        """The worker's counters (every report: the metrics stay fresh) and the link's."""
        assert self.rooms is not None
        transport = getattr(self.conn, "transport", None)
        queued = transport.get_write_buffer_size() if transport is not None else 0
        return {
            **self.rooms.counters(),
            **{f"link_{k}": v for k, v in self.stats.items()},
            "link_buffer": queued,
        }

    # -- the bus ---------------------------------------------------------------------------------
    def room_opened(self, room_id: str) -> None:
        self.sub.send(bus.SUBSCRIBE + bus.room_topic(room_id))
        if not self._fence_due:
            self._fence_due = True
            self._fence += 1
            self.loop.call_soon(self._send_fence)
        self._room_fence[room_id] = self._fence
        if self.reader is not None:
            self.reader.poke()

    def room_closed(self, room_id: str) -> None:
        self.sub.send(bus.UNSUBSCRIBE + bus.room_topic(room_id))
        self._room_fence.pop(room_id, None)
        if self.reader is not None:
            self.reader.poke()

    def _send_fence(self) -> None:
        """One fence after this turn's subscriptions (or again, when the router asks)."""
        self._fence_due = False
        with contextlib.suppress(zmq.ZMQError):
            self.sub.send(records.encode(BusFence(self.id, self._fence)), zmq.NOBLOCK)

    def _on_bus(self, message: bytes) -> None:
        assert self.delivery is not None
        try:
            self.stats["bus_messages"] += 1
            topic, payload = bus.split(message)
            batch = _decode_bus(payload)
        except (ValueError, records.BadRecord) as exc:
            self.stats["bad_messages"] += 1
            log.warning("ignoring a malformed bus message: %s", exc)
            return
        for record in batch:
            if type(record) is PushRoom:
                try:
                    self.delivery.push_room(record.op, bus.room_of(topic), record.body, record.at)
                except ValueError as exc:
                    self.stats["bad_messages"] += 1
                    log.warning("ignoring a room push on %r: %s", topic[:40], exc)
            elif type(record) is PushAll:
                self.delivery.push_all(record.op, record.speed, record.body, record.at)
            elif type(record) is Mark:
                self._saw_mark(record.mark)

    def _saw_mark(self, mark: int) -> None:
        if mark > self._mark_seen:
            if self._mark_seen == self._mark_reported:
                self.loop.call_soon(self._report_mark)
            self._mark_seen = mark

    def _report_mark(self) -> None:
        if self._mark_seen > self._mark_reported:
            self._mark_reported = self._mark_seen
            self._send(records.encode(BusSeen(self._mark_seen)))

    # -- records from the router --------------------------------------------------------------
    def on_router(self, record: records.RouterRecord) -> None:
        assert self.sessions is not None and self.delivery is not None
        kind = type(record)
        if kind is PushKeys:
            push: PushKeys = record  # type: ignore[assignment]
            self.delivery.push_keys(push.op, push.keys, push.body, push.at)
        elif kind is PushMids:
            mids: PushMids = record  # type: ignore[assignment]
            self.delivery.push_mids(mids.op, mids.body, mids.keys, mids.seqs, mids.at)
        elif kind is Confirmed:
            self._confirmed(record.reqs)  # type: ignore[union-attr]
        elif kind is Denied:
            self._denied(record.reqs, record.reason)  # type: ignore[union-attr]
        elif kind is Kick:
            self.sessions.kick(record.keys)  # type: ignore[union-attr]
        elif kind is RoomCounts:
            self.delivery.set_room_online(record.rooms)  # type: ignore[union-attr]
        elif kind is FenceRequest:
            self._send_fence()
        elif kind is Resync:
            log.info("the router asked worker %s for its sessions again", self.id)
            if self.conn is not None:
                self._sync(self.conn)
        elif kind is Replayed:
            self._replayed(record)  # type: ignore[arg-type]
        elif kind is ChatAck:
            self._chat_ack(record)  # type: ignore[arg-type]
        elif kind is Drained:
            future = self._drains.get(record.req)  # type: ignore[union-attr]
            if future is not None and not future.done():
                future.set_result(record.mark)  # type: ignore[union-attr]

    # -- drain -----------------------------------------------------------------------------------
    async def drain_barrier(self, timeout: float) -> None:
        """Wait until every push the router sent us before now has arrived (bounded by ``timeout``).

        The router stops routing to us, publishes a mark and tells us its number;
        once that mark came down the bus, nothing for us is still on its way.
        """
        conn = self.conn
        if conn is None or conn.closed:
            return
        req = next(self._req_ids)
        future: asyncio.Future[int] = self.loop.create_future()
        self._drains[req] = future
        conn.send(records.encode(Draining(req)))
        deadline = self.loop.time() + timeout
        try:
            mark = await asyncio.wait_for(asyncio.shield(future), timeout)
            while self._mark_seen < mark and self.loop.time() < deadline:
                await asyncio.sleep(0.005)
        except TimeoutError:
            log.warning("worker %s: the router did not answer the drain within %gs", self.id, timeout)
        finally:
            self._drains.pop(req, None)


def make_cluster_link(cfg: Config, endpoints: Endpoints, name: str) -> HostLink:
    """The link a worker under the master uses (call in the worker process, after the fork)."""
    return HostLink(cfg, endpoints, name)
