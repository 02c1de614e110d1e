"""The calls a worker makes to its router that wait for an answer, over one router link.

This class owns the :class:`~mpim.worker.calls.CallTable` and every rule about an answer:

- **Registrations** (``Connect``, ``RoomChange``) are answered ``Confirmed`` or ``Denied``,
  and only then is the client answered; those still waiting are sent again whenever the
  link comes back (:meth:`RouterCalls.waiting`).
- **Resumes, messages with an ack and presence questions** get an answer within
  ``[upstream] timeout``: the router's, or ours — at once when the link is down, -504 (a
  message) or a close (a resume) when the router is too slow, and the same for every call
  still waiting when the link drops (:meth:`RouterCalls.link_dropped`).
- **Drains** wait for the router's mark to come down the bus (with several router shards,
  each link's drain waits for its own shard's mark).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpim import records
from mpim.records import Chat, ChatAck, Connect, Drained, Draining, Presence, Replayed, Resume, RoomChange
from mpim.worker.calls import Call, CallTable, DrainCall, MessageCall, Registration, ResumeCall
from mpim.worker.channel import CLOSED

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.bussub import BusSubscription
    from mpim.worker.channel import Channel
    from mpim.worker.link import OnAck, OnReplayed, SessionTarget
    from mpim.worker.shards import Shard

log = logging.getLogger("mpim.link")


class RouterCalls:
    def __init__(
        self,
        cfg: Config,
        shard: Shard,
        worker_id: str,
        bus: BusSubscription,
        stats: dict[str, int],
        send: Callable[[bytes | None], None],
        encode: Callable[[records.WorkerRecord], bytes | None],
        up: Callable[[], bool],
    ) -> None:
        self.id = worker_id
        self.shard = shard.index  # (the fences this shard has seen, the marks it publishes)
        self.label = shard.label
        self.bus = bus
        self.stats = stats
        self.send = send  # (the link's: dropped while it is down)
        self.encode = encode
        self.up = up
        self.loop: asyncio.AbstractEventLoop  # set by start(), in the running loop
        self.sessions: SessionTarget | None = None
        self.table = CallTable(cfg.upstream.timeout, self._expired)

    def start(self, loop: asyncio.AbstractEventLoop, sessions: SessionTarget) -> None:
        self.loop = loop
        self.sessions = sessions
        self.table.start(loop)

    def close(self) -> None:
        self.table.close()

    # -- registrations and room changes ----------------------------------------------------------
    def _request(self, channel: Channel, req: int, record: Connect | RoomChange) -> None:
        data = self.encode(record)
        if data is None:
            return  # never confirmed: the client's handshake deadline closes it
        self.table.add(Registration(req, channel, data, record.fence))
        self.send(data)

    def register(self, channel: Channel, room: str, ip: str) -> None:
        req = self.table.next_id()
        self._request(
            channel,
            req,
            Connect(req, channel.key, channel.mid, room, ip, self.bus.fence_for(room, self.shard)),
        )

    def change_room(self, channel: Channel, room: str) -> None:
        req = self.table.next_id()
        self._request(channel, req, RoomChange(req, channel.key, room, self.bus.fence_for(room, self.shard)))

    def cancel(self, channel: Channel) -> None:
        self.table.cancel(channel)

    def waiting(self) -> list[Registration]:
        """The registrations still waiting, in order (sent again when the link comes back)."""
        return self.table.registrations()

    def confirmed(self, reqs: list[int]) -> None:
        assert self.sessions is not None
        for req in reqs:
            call = self.table.pop(req, Registration)
            if call is not None:
                self.bus.fence_seen(call.fence, self.shard)
                self.sessions.confirmed(call.channel)

    def denied(self, reqs: list[int], reason: str) -> None:
        assert self.sessions is not None
        for req in reqs:
            call = self.table.pop(req, Registration)
            if call is not None:
                self.sessions.denied(call.channel, reason)

    # -- calls that wait for an answer ---------------------------------------------------------
    def resume(
        self, channel: Channel, epoch: str, seq: int, cursor: bool, done: OnReplayed, page: bool = False
    ) -> None:
        assert self.sessions is not None
        req = self.table.next_id()
        data = self.encode(Resume(req, channel.key, channel.mid, epoch, seq, cursor, page))
        if data is None or not self.up():
            why = "its resume could not be sent" if data is None else "the router is unreachable"
            self.sessions.lost(channel, f"{why}; it resumes on its next connection")
            return
        self.table.add(ResumeCall(req, channel, done))
        self.send(data)

    def chat(self, channel: Channel, op: int, body: bytes, msg_id: str, to: int, done: OnAck | None) -> None:
        req = self.table.next_id()
        data = self.encode(Chat(req, channel.key, channel.mid, op, body, msg_id, to, done is not None))
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
        self.table.add(MessageCall(req, channel, done))
        self.send(data)

    def online(self, channel: Channel, mids: list[int], done: OnAck) -> None:
        """Which of ``mids`` are online: answered like a message (a :class:`ChatAck`, its body the
        JSON list), within ``[upstream] timeout``."""
        req = self.table.next_id()
        data = self.encode(Presence(req, channel.key, channel.mid, mids))
        if data is None:
            done(ChatAck(req, -400, "the question could not be encoded"))
            return
        if not self.up():
            self.stats["chat_refused"] += 1
            done(ChatAck(req, -503, "the router is unreachable; ask again"))
            return
        self.table.add(MessageCall(req, channel, done))
        self.send(data)

    def replayed(self, record: Replayed) -> None:
        resume = self.table.pop(record.req, ResumeCall)
        if resume is not None and resume.channel.state != CLOSED:
            resume.done(record)

    def answered(self, record: ChatAck) -> None:
        message = self.table.pop(record.req, MessageCall)
        if message is not None and message.channel.state != CLOSED:
            message.done(record)

    def _expired(self, call: Call) -> None:
        """The router left ``call`` unanswered past ``[upstream] timeout``: answer it ourselves."""
        assert self.sessions is not None
        timeout = self.table.timeout
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

    def link_dropped(self) -> None:
        """The router went away with answers owed: messages get an error, resumes start over."""
        assert self.sessions is not None
        for call in self.table.unanswerable():
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

    # -- drains ------------------------------------------------------------------------------------
    async def drain_barrier(self, timeout: float) -> None:
        """Wait until every push the router sent us before now has arrived (bounded by ``timeout``).

        The router stops routing to us, publishes a mark and tells us its number;
        once that mark came down the bus, nothing for us is still on its way.
        """
        if not self.up():
            return
        req = self.table.next_id()
        future: asyncio.Future[int] = self.loop.create_future()
        self.table.add(DrainCall(req, future))
        self.send(records.encode(Draining(req)))
        deadline = self.loop.time() + timeout
        try:
            mark = await asyncio.wait_for(asyncio.shield(future), timeout)
            marks = self.bus.marks_seen
            while marks[self.shard] < mark and self.loop.time() < deadline:
                await asyncio.sleep(0.005)
        except TimeoutError:
            log.warning("worker %s: %s did not answer the drain within %gs", self.id, self.label, timeout)
        finally:
            self.table.pop(req, DrainCall)

    def drained(self, record: Drained) -> None:
        call = self.table.get(record.req, DrainCall)
        if call is not None and not call.future.done():
            call.future.set_result(record.mark)
