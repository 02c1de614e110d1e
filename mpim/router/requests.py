"""Requests from clients that the router answers through their worker: resumes (ops 20/21),
messages (op 4: private chat, the business backend, or the receive hook) and presence
(``user.online``). Each runs as a task of its own; its answer goes back on the worker's link.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpim.records import Chat, ChatAck, InboxEntry, Presence, Replayed, Resume
from mpim.router.backend import Backend, BackendError
from mpim.router.errors import Refused
from mpim.router.peers import Peer
from mpim.router.store import SessionStore
from mpim.router.streams import ChatError, UserStreams

if TYPE_CHECKING:
    from mpim.router.fabric import Fabric

log = logging.getLogger("mpim.router")

ReceiveHook = Callable[[int, str, int, bytes], None]


class Requests:
    def __init__(
        self,
        streams: UserStreams,
        store: SessionStore,
        fabric: Fabric,
        receive: ReceiveHook,
        loop: asyncio.AbstractEventLoop,
        backend: Backend | None = None,
    ) -> None:
        self.streams = streams
        self.store = store
        self.fabric = fabric
        self.receive = receive
        self.loop = loop
        self.backend = backend
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("router task failed", exc_info=task.exception())

    # -- resume ---------------------------------------------------------------------------------
    def resume(self, peer: Peer, rec: Resume) -> None:
        self.spawn(self._resume(peer, rec))

    async def _resume(self, peer: Peer, rec: Resume) -> None:
        try:
            got = await self.streams.resume(rec.mid, rec.key, rec.epoch, rec.seq, rec.cursor, rec.page)
        except Exception as exc:  # the store failed: the client cannot be told it recovered
            log.error("resume for mid=%d failed: %s", rec.mid, exc)
            got = None
        if got is None:
            peer.send(Replayed(rec.req, [], "", 0, False))
            return
        entries = [InboxEntry(seq, op, body) for seq, op, body in got.messages]
        peer.send(Replayed(rec.req, entries, got.epoch, got.top, got.recovered))

    # -- messages -------------------------------------------------------------------------------
    def chat(self, peer: Peer, rec: Chat) -> None:
        self.spawn(self._chat(peer, rec))

    async def _chat(self, peer: Peer, rec: Chat) -> None:
        ack: ChatAck
        try:
            if rec.to:
                own, _ = await self.streams.chat(rec.mid, rec.id, rec.to, rec.op, _json_body(rec.body))
                ack = ChatAck(rec.req, 0, "", own)
            elif self.backend is not None:
                answer = await self.backend.deliver(rec.mid, rec.key, rec.op, rec.body)
                ack = ChatAck(rec.req, 0, "", 0, answer)
            else:
                self.receive(rec.mid, rec.key, rec.op, rec.body)
                ack = ChatAck(rec.req, 0)
        except (ChatError, BackendError, Refused) as exc:
            ack = ChatAck(rec.req, exc.code, exc.message)
        if rec.reply:
            peer.send(ack)

    # -- presence -------------------------------------------------------------------------------
    def presence(self, peer: Peer, rec: Presence) -> None:
        """``user.online``: which of the users asked about have a session, on this host (the
        tables) or on another one (the fabric)."""
        conns_of = self.store.conns_of
        online = {mid for mid in rec.mids if conns_of(mid)}
        others = [mid for mid in rec.mids if mid not in online]
        elsewhere = self.fabric.online_elsewhere(others) if others else set()
        if isinstance(elsewhere, set):
            self._online_answer(peer, rec, online | elsewhere)
        else:
            self.spawn(self._presence_elsewhere(peer, rec, online, elsewhere))

    async def _presence_elsewhere(self, peer: Peer, rec: Presence, online: set[int], elsewhere: Any) -> None:
        self._online_answer(peer, rec, online | await elsewhere)

    def _online_answer(self, peer: Peer, rec: Presence, online: set[int]) -> None:
        body = json.dumps([mid for mid in rec.mids if mid in online]).encode()
        peer.send(ChatAck(rec.req, 0, "", 0, body))


def _json_body(raw: bytes) -> Any:
    """A private message's body as the client sent it (JSON, checked by its worker)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ChatError(-400, "body is not JSON") from None


__all__ = ["ReceiveHook", "Requests"]
