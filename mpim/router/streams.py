"""Per-user streams on the router: pushes by mid and private chat through the inbox, resume, acks.

Every push by mid and every private message is appended to the recipient's inbox
first (one transaction per loop turn, or per group window under load,
:mod:`mpim.inbox`); only when the append is durable is it pushed live, carrying its
stream seq, and answered. So a seq a client
saw is always in the store, and a client that was offline (or lost its connection
mid-stream) finds every accepted message there when it resumes.

Private chat: the server stamps the sender's mid (a ``from`` in the client's body is
ignored), appends the message to the recipient's stream and to the sender's own (for
the sender's other devices), and pushes it to every connection of both. The stored
and pushed body is a small JSON envelope ``{"id", "from", "to", "body"}``. A message
id seen again from the same sender within ``[upstream] dedup_window`` gets the first
answer again and is not delivered twice: the inbox records the id with the message
(:meth:`~mpim.inbox.base.Inbox.append_chat`, one transaction or script call), so this
holds across a restart of the router and between hosts. The router itself only joins a
retry that arrives while the first is still being stored to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mpim.config import Config
from mpim.inbox import Inbox, InboxError, InboxUnknown, Page
from mpim.inbox.base import Item, Position, check_text
from mpim.outage import OutageLog
from mpim.router.errors import Refused

if TYPE_CHECKING:
    from mpim.router.core import Router

log = logging.getLogger("mpim.router")

T = TypeVar("T")
SendKeys = Callable[[int, list[int], bytes, list[int]], int]
Stored = tuple[int, dict[int, int]]  # a push by mid: connections, and each user's stream seq


class ChatError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Resumed:
    """What a resume gives back: the missing messages, the stream's position, whether complete."""

    __slots__ = ("epoch", "messages", "recovered", "top")

    def __init__(self, messages: list[tuple[int, int, bytes]], epoch: str, top: int, recovered: bool) -> None:
        self.messages = messages
        self.epoch = epoch
        self.top = top
        self.recovered = recovered


def envelope(msg_id: str, sender: int, to: int, body: Any) -> bytes:
    """The private message as stored and pushed."""
    return json.dumps(
        {"id": msg_id, "from": sender, "to": to, "body": body}, separators=(",", ":"), ensure_ascii=False
    ).encode()


class UserStreams:
    def __init__(self, cfg: Config, inbox: Inbox | None, router: Router) -> None:
        self.cfg = cfg
        self.inbox = inbox
        self.router = router
        self._storing: dict[tuple[int, str], asyncio.Future[tuple[int, int]]] = {}  # chats in flight
        self.stats = dict.fromkeys(
            ("appends", "replays", "unrecovered", "acks", "chats", "dups", "write_failures", "ack_failures"),
            0,
        )
        self.outage = OutageLog(log, "inbox write", "pushes by mid and private chat are refused with -503")
        self.ack_outage = OutageLog(log, "inbox ack", "device cursors do not move (clients may get repeats)")

    @property
    def enabled(self) -> bool:
        return self.inbox is not None

    # -- pushes by mid --------------------------------------------------------------------------
    async def push_mids(self, op: int, mids: list[int], body: bytes) -> tuple[int, dict[int, int]]:
        """Append for every user, then push live with each one's seq; (connections, {mid: seq})."""
        unique = list(dict.fromkeys(mids))
        if self.inbox is None:
            return await self._deliver(op, unique, [0] * len(unique), body), {}
        positions = await self._append([(mid, op, body, 0) for mid in unique])
        seqs = [p.seq for p in positions]
        self.stats["appends"] += len(unique)
        return await self._deliver(op, unique, seqs, body), dict(zip(unique, seqs, strict=True))

    async def _deliver(self, op: int, mids: list[int], seqs: list[int], body: bytes) -> int:
        """A stored message to every connection of these users, on this host and the others."""
        found = self.router.push.deliver_mids(op, mids, seqs, body)
        return found if isinstance(found, int) else await found

    def push_mids_here(self, op: int, mids: list[int], body: bytes) -> asyncio.Future[Stored]:
        """:meth:`push_mids` on one host, without a task: the append's future calls back, and
        the callback pushes live and resolves the answer (fewer loop turns and objects per push)."""
        unique = list(dict.fromkeys(mids))
        router = self.router
        out: asyncio.Future[Stored] = router.loop.create_future()
        if self.inbox is None:
            out.set_result((router.push.send_mids(op, unique, [0] * len(unique), body), {}))
            return out
        try:
            stored = append_soon(self.inbox, [(mid, op, body, 0) for mid in unique], router.loop)
        except (InboxError, OSError) as exc:
            out.set_exception(self._not_stored(exc))
            return out

        def then(done: asyncio.Future[list[Position]]) -> None:
            if out.done():
                return
            exc = done.exception() if not done.cancelled() else InboxError("the append was cancelled")
            if exc is not None:
                out.set_exception(self._not_stored(exc) if isinstance(exc, InboxError | OSError) else exc)
                return
            self.outage.ok()
            seqs = [p.seq for p in done.result()]
            self.stats["appends"] += len(unique)
            try:
                found = router.push.send_mids(op, unique, seqs, body)
            except Exception as error:  # (a bug: the caller hears of it rather than the loop's log)
                out.set_exception(error)
                return
            out.set_result((found, dict(zip(unique, seqs, strict=True))))

        stored.add_done_callback(then)
        return out

    async def _append(self, items: list[tuple[int, int, bytes, int]]) -> list[Position]:
        assert self.inbox is not None
        return await self._stored(self.inbox.append(items))

    # -- private chat ---------------------------------------------------------------------------
    async def chat(self, sender: int, msg_id: str, to: int, op: int, body: Any) -> tuple[int, int]:
        """Store and push a private message; returns (the sender's seq, the recipient's seq).
        A retry of ``msg_id`` within ``[upstream] dedup_window`` gets the first answer."""
        if self.inbox is None:
            raise ChatError(-501, "private chat needs the inbox ([inbox] enabled = true)")
        if sender <= 0:
            raise ChatError(-403, "private chat needs an authenticated user (mid > 0)")
        try:
            check_text("message id", msg_id)
        except (TypeError, ValueError) as exc:
            raise ChatError(-400, str(exc)) from None
        window = self.cfg.upstream.dedup_window if msg_id else 0.0
        if window <= 0:
            return await self._store_chat(sender, msg_id, to, op, body, 0.0)
        key = (sender, msg_id)
        storing = self._storing.get(key)
        if storing is not None:  # the first is being stored: its answer is this one's
            self.stats["dups"] += 1
            return await asyncio.shield(storing)
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._storing[key] = future
        try:
            result = await self._store_chat(sender, msg_id, to, op, body, window)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # (retrieved: a waiting retry re-raises it)
            raise
        else:
            future.set_result(result)
        finally:
            del self._storing[key]
        return result

    async def _store_chat(
        self, sender: int, msg_id: str, to: int, op: int, body: Any, window: float
    ) -> tuple[int, int]:
        assert self.inbox is not None
        limit = self.cfg.delivery.max_unread
        try:
            top, cursors = await self.inbox.top(to), await self.inbox.cursors(to)
        except (InboxError, OSError) as exc:  # (nothing is written yet)
            log.error("inbox read failed: %s", exc)
            raise ChatError(-503, f"the inbox could not be read (nothing was stored): {exc}") from None
        if top.seq - max(cursors.values(), default=0) >= limit and top.seq >= limit:
            first = await self.inbox.find_chat(sender, msg_id) if window > 0 else None
            if first is None:
                raise ChatError(-429, f"the recipient has {limit} unread messages; try later")
            self.stats["dups"] += 1  # (its first copy counts among the unread)
            return first[-1].seq, first[0].seq
        data = envelope(msg_id, sender, to, body)
        mids = [sender] if to == sender else [to, sender]
        items = [(mid, op, data, sender) for mid in mids]
        if window > 0:
            positions, duplicate = await self._stored(self.inbox.append_chat(sender, msg_id, items, window))
        else:
            positions, duplicate = await self._stored(self.inbox.append(items)), False
        if duplicate:  # stored (and pushed) before, maybe by a router that died since
            self.stats["dups"] += 1
            return positions[-1].seq, positions[0].seq
        await self._deliver(op, mids, [p.seq for p in positions], data)
        self.stats["chats"] += 1
        return positions[-1].seq, positions[0].seq

    async def _stored(self, write: Awaitable[T]) -> T:
        try:
            result = await write
        except (InboxError, OSError) as exc:
            raise self._not_stored(exc) from None
        self.outage.ok()
        return result

    def _not_stored(self, exc: BaseException) -> Exception:
        self.stats["write_failures"] += 1
        self.outage.failed(exc)
        if isinstance(exc, InboxUnknown):  # (it may run yet: a retry could store it twice)
            return Refused(
                -504, f"the inbox did not confirm the write; the message may have been stored: {exc}"
            )
        return Refused(-503, f"the inbox could not store the message (nothing was pushed): {exc}")

    def _acked(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.ack_outage.ok()
        else:
            self.stats["ack_failures"] += 1
            self.ack_outage.failed(exc)

    # -- resume and acks ------------------------------------------------------------------------
    async def resume(
        self, mid: int, device: str, epoch: str, seq: int, cursor: bool, page: bool = False
    ) -> Resumed:
        """The stream after a position (or the device's cursor): up to ``replay_max`` messages.
        A resume further back than that is not recovered (nothing replayed); a catch-up read
        (``page``) of a connection that resumed gets the next ``replay_max`` and reads on."""
        if self.inbox is None or mid <= 0:
            return Resumed([], "", 0, False)
        if cursor:
            seq = (await self.inbox.cursors(mid)).get(device, 0)
            epoch = (await self.inbox.top(mid)).epoch
        top = await self.inbox.top(mid)
        cap = self.cfg.delivery.replay_max
        if epoch != top.epoch or (top.seq - seq > cap and not page) or seq > top.seq:
            self.stats["unrecovered"] += 1
            return Resumed([], top.epoch, top.seq, False)
        got: Page = await self.inbox.read(mid, seq, cap)
        self.stats["replays"] += len(got.messages)
        if not got.complete:
            self.stats["unrecovered"] += 1
        messages = [(m.seq, m.op, m.body) for m in got.messages]
        return Resumed(messages, got.top.epoch, got.top.seq, got.complete)

    def ack(self, mid: int, device: str, seq: int) -> None:
        if self.inbox is None or mid <= 0 or seq <= 0:
            return
        self.stats["acks"] += 1
        task = asyncio.ensure_future(self.inbox.ack(mid, device, seq))
        task.add_done_callback(self._acked)

    async def page(self, mid: int, after: int, limit: int) -> dict[str, Any]:
        """GET /mpim/inbox: a user's stored messages after a seq (bodies as text when they are UTF-8)."""
        if self.inbox is None:
            raise ChatError(-501, "the inbox is off ([inbox] enabled = false)")
        page = await self.inbox.read(mid, after, limit)
        return {
            "epoch": page.top.epoch,
            "top": page.top.seq,
            "complete": page.complete,
            "messages": [
                {"seq": m.seq, "op": m.op, "at": round(m.at, 3), "from": m.sender, **_body(m.body)}
                for m in page.messages
            ],
        }

    async def cursors(self, mid: int) -> dict[str, int]:
        if self.inbox is None:
            raise ChatError(-501, "the inbox is off ([inbox] enabled = false)")
        return await self.inbox.cursors(mid)

    async def trim(self) -> None:
        if self.inbox is not None:
            dropped = await self.inbox.trim(time.time())
            if dropped:
                log.info("inbox: dropped %d messages older than %gs", dropped, self.cfg.inbox.max_age)


def append_soon(
    inbox: Inbox, items: list[Item], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[list[Position]]:
    """The append as a future: the store's own when it has one (no task), else a task on ``loop``
    (also when the loop is not running yet: tests drive the router from outside it)."""
    soon: Callable[[list[Item]], asyncio.Future[list[Position]]] | None = getattr(inbox, "append_soon", None)
    if soon is not None and loop.is_running():
        return soon(items)
    return loop.create_task(inbox.append(items))


def _body(raw: bytes) -> dict[str, str]:
    try:
        return {"body": raw.decode()}
    except UnicodeDecodeError:
        import base64

        return {"body_base64": base64.b64encode(raw).decode()}
