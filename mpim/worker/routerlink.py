"""A worker's stream to one router process (:mod:`mpim.stream`): sessions up, pushes and answers down.

How this works:

- **Connection.** Connected at start and again whenever it drops (the router restarted),
  each time opening with ``Hello`` and the complete session list (``Sync``), then
  resending every registration still waiting (:class:`~mpim.worker.calls.CallTable`).
- **Session events** go up as they happen; acks are folded per device and loop turn.
  A registration (``Connect``) or ``RoomChange`` is answered by ``Confirmed`` (or
  ``Denied``), and only then is the client answered.
- **Calls that wait for an answer** (a resume, a message with an ack, a presence question)
  get one within ``[upstream] timeout``: the router's, or ours — at once when the link is
  down, -504 (a message) or a close (a resume) when the router is too slow, and the same
  for every call still waiting when the link drops.
- **Down the stream**: unicast pushes, kicks, counts and the answers, dispatched by record
  type in :meth:`RouterLink.on_record`.
- **Liveness.** Every ``report_interval`` an ``Alive`` record carries the connection count,
  the keys that heart-beat meanwhile and, every ``online_interval``, local room counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from mpim import records, stream
from mpim.records import (
    Acked,
    AckEntry,
    Alive,
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
    Presence,
    PushKeys,
    PushMids,
    Replayed,
    Resume,
    Resync,
    RoomChange,
    RoomCounts,
    Sync,
    Upstream,
)
from mpim.worker.calls import Call, CallTable, DrainCall, MessageCall, Registration, ResumeCall
from mpim.worker.channel import CLOSED

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.bussub import BusSubscription
    from mpim.worker.channel import Channel
    from mpim.worker.link import DeliveryTarget, OnAck, OnReplayed, RoomCounter, SessionTarget

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
            log.warning("ignoring a malformed frame from the router: %s", exc)
            return
        for record in batch:
            try:
                self.link.on_record(record)
            except Exception:
                log.exception("error handling %s from the router", type(record).__name__)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


class RouterLink:
    def __init__(
        self,
        cfg: Config,
        endpoint: str,
        hello: Hello,
        worker_id: str,
        bus: BusSubscription,
        stats: dict[str, int],
    ) -> None:
        self.cfg = cfg
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
        self.calls = CallTable(cfg.upstream.timeout, self._expired)
        self._beats: set[str] = set()
        self._acks: dict[tuple[int, str], int] = {}  # this turn's acks, per device
        self._rooms_at = -math.inf  # the first report carries the counts, however young the clock
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._alive_handle: asyncio.TimerHandle | None = None
        self._down_logged = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        sessions: SessionTarget,
        delivery: DeliveryTarget,
        rooms: RoomCounter,
    ) -> None:
        self.loop = loop
        self.sessions, self.delivery, self.rooms = sessions, delivery, rooms
        self.calls.start(loop)
        self._tasks.append(loop.create_task(self._keep_connected()))
        self._alive_handle = loop.call_later(self.cfg.router.report_interval, self._alive)
        log.info("worker %s linking to the router at %s", self.id, self.endpoint)

    def close(self) -> None:
        """Say goodbye (the router forgets our sessions at once) and close the stream."""
        self._closing = True
        if self._alive_handle is not None:
            self._alive_handle.cancel()
        self.calls.close()
        for task in self._tasks:
            task.cancel()
        conn = self.conn
        if conn is not None and not conn.closed:
            if self.rooms is not None and self.sessions is not None:  # the last counts, for the metrics
                conn.send(records.encode(Alive(self.sessions.online, [], None, self._stats())))
            conn.send(records.encode(Bye()))
            conn.close()

    async def _keep_connected(self) -> None:
        delay = _RETRY_MIN
        while not self._closing:
            try:
                conn = await stream.connect(self.loop, self.endpoint, lambda: _RouterConn(self))
            except OSError as exc:
                if not self._down_logged:
                    log.warning("cannot reach the router at %s (%s); retrying", self.endpoint, exc)
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
        for call in self.calls.unanswerable():
            if call.channel.state == CLOSED:
                continue
            match call:
                case ResumeCall():
                    self.sessions.lost(call.channel, "the router restarted during its resume")
                case MessageCall():
                    call.done(
                        ChatAck(
                            call.req, -503, "the router restarted; the message may not have been processed"
                        )
                    )

    def _greet(self, conn: _RouterConn) -> None:
        assert self.sessions is not None
        conn.send(records.encode(self.hello))
        self._sync(conn)
        waiting = self.calls.registrations()
        for call in waiting:
            conn.send(call.record)
        self.bus.send_fence()
        log.info(
            "worker %s linked to the router (%d sessions, %d waiting)",
            self.id,
            self.sessions.online,
            len(waiting),
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

    # -- registrations and room changes ----------------------------------------------------------
    def _request(self, channel: Channel, req: int, record: Connect | RoomChange) -> None:
        data = self._encode(record)
        if data is None:
            return  # never confirmed: the client's handshake deadline closes it
        self.calls.add(Registration(req, channel, data, record.fence))
        self.send(data)

    def register(self, channel: Channel, room: str, ip: str) -> None:
        req = self.calls.next_id()
        self._request(
            channel, req, Connect(req, channel.key, channel.mid, room, ip, self.bus.fence_for(room))
        )

    def change_room(self, channel: Channel, room: str) -> None:
        req = self.calls.next_id()
        self._request(channel, req, RoomChange(req, channel.key, room, self.bus.fence_for(room)))

    def cancel(self, channel: Channel) -> None:
        self.calls.cancel(channel)

    def _confirmed(self, reqs: list[int]) -> None:
        assert self.sessions is not None
        for req in reqs:
            call = self.calls.pop(req, Registration)
            if call is not None:
                self.bus.fence_seen(call.fence)
                self.sessions.confirmed(call.channel)

    def _denied(self, reqs: list[int], reason: str) -> None:
        assert self.sessions is not None
        for req in reqs:
            call = self.calls.pop(req, Registration)
            if call is not None:
                self.sessions.denied(call.channel, reason)

    # -- calls that wait for an answer ---------------------------------------------------------
    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None:
        assert self.sessions is not None
        req = self.calls.next_id()
        data = self._encode(Resume(req, channel.key, channel.mid, epoch, seq, cursor, page))
        if data is None or not self.up():
            why = "its resume could not be sent" if data is None else "the router is unreachable"
            self.sessions.lost(channel, f"{why}; it resumes on its next connection")
            return
        self.calls.add(ResumeCall(req, channel, done))
        self.send(data)

    def chat(self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None) -> None:
        req = self.calls.next_id()
        data = self._encode(Chat(req, channel.key, channel.mid, op, body, msg_id, to, done is not None))
        if done is None:
            self.send(data)  # (no answer owed: at most once, as goim's upstream)
            return
        if data is None:
            done(ChatAck(req, -400, "the message could not be encoded"))
            return
        if not self.up():
            self.stats["chat_refused"] += 1
            done(ChatAck(req, -503, "the router is unreachable; resend the message with the same id"))
            return
        self.calls.add(MessageCall(req, channel, done))
        self.send(data)

    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None:
        """Which of ``mids`` are online: answered like a message (a :class:`ChatAck`, its body the
        JSON list), within ``[upstream] timeout``."""
        req = self.calls.next_id()
        data = self._encode(Presence(req, channel.key, channel.mid, mids))
        if data is None:
            done(ChatAck(req, -400, "the question could not be encoded"))
            return
        if not self.up():
            self.stats["chat_refused"] += 1
            done(ChatAck(req, -503, "the router is unreachable; ask again"))
            return
        self.calls.add(MessageCall(req, channel, done))
        self.send(data)

    def _expired(self, call: Call) -> None:
        """The router left ``call`` unanswered past ``[upstream] timeout``: answer it ourselves."""
        assert self.sessions is not None
        timeout = self.calls.timeout
        if call.channel is None or call.channel.state == CLOSED:
            return
        match call:
            case ResumeCall():
                self.stats["call_timeouts"] += 1
                self.sessions.lost(call.channel, f"the router did not answer its resume within {timeout:g}s")
            case MessageCall():
                self.stats["call_timeouts"] += 1
                call.done(
                    ChatAck(
                        call.req,
                        -504,
                        f"no answer from the router within {timeout:g}s; resend with the same id",
                    )
                )

    async def drain_barrier(self, timeout: float) -> None:
        """Wait until every push the router sent us before now has arrived (bounded by ``timeout``).

        The router stops routing to us, publishes a mark and tells us its number;
        once that mark came down the bus, nothing for us is still on its way.
        """
        conn = self.conn
        if conn is None or conn.closed:
            return
        req = self.calls.next_id()
        future: asyncio.Future[int] = self.loop.create_future()
        self.calls.add(DrainCall(req, future))
        conn.send(records.encode(Draining(req)))
        deadline = self.loop.time() + timeout
        try:
            mark = await asyncio.wait_for(asyncio.shield(future), timeout)
            while self.bus.mark_seen < mark and self.loop.time() < deadline:
                await asyncio.sleep(0.005)
        except TimeoutError:
            log.warning("worker %s: the router did not answer the drain within %gs", self.id, timeout)
        finally:
            self.calls.pop(req, DrainCall)

    # -- session events -------------------------------------------------------------------------
    def ack(self, channel: Channel, seq: int) -> None:
        if not self._acks:
            self.loop.call_soon(self._send_acks)
        key = (channel.mid, channel.key)
        if seq > self._acks.get(key, 0):
            self._acks[key] = seq

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        if acks:
            self.send(self._encode(Acked([AckEntry(mid, key, seq) for (mid, key), seq in acks.items()])))

    def disconnected(self, channel: Channel) -> None:
        self._beats.discard(channel.key)
        self.send(self._encode(Disconnect(channel.key)))

    def heartbeat(self, channel: Channel) -> None:
        self._beats.add(channel.key)

    def upstream(self, channel: Channel, op: int, body: bytes) -> None:
        self.send(self._encode(Upstream(channel.key, channel.mid, op, body)))

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
        self.send(records.encode(Alive(self.sessions.online, beats, rooms, self._stats())))

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

    # -- records from the router --------------------------------------------------------------
    def on_record(self, record: records.RouterRecord) -> None:
        assert self.sessions is not None and self.delivery is not None
        match record:  # (class patterns only: the pushes are the hot path)
            case PushKeys():
                self.delivery.push_keys(record.op, record.keys, record.body, record.at)
            case PushMids():
                self.delivery.push_mids(record.op, record.keys, record.seqs, record.body, record.at)
            case Confirmed():
                self._confirmed(record.reqs)
            case Denied():
                self._denied(record.reqs, record.reason)
            case Kick():
                self.sessions.kick(record.keys)
            case RoomCounts():
                self.delivery.set_room_online(record.rooms)
            case FenceRequest():
                self.bus.send_fence()
            case Resync():
                log.info("the router asked worker %s for its sessions again", self.id)
                if self.conn is not None:
                    self._sync(self.conn)
            case Replayed():
                resume = self.calls.pop(record.req, ResumeCall)
                if resume is not None and resume.channel.state != CLOSED:
                    resume.done(record)
            case ChatAck():
                message = self.calls.pop(record.req, MessageCall)
                if message is not None and message.channel.state != CLOSED:
                    message.done(record)
            case Drained():
                call = self.calls.get(record.req, DrainCall)
                if call is not None and not call.future.done():
                    call.future.set_result(record.mark)
