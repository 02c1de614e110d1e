"""Acks and resume on a worker (ops 18, 20, 21): reliable delivery to clients with the ``ack`` cap.

This module is the worker's one home for both: the resume (op 20) and its answer (op 21),
the catch-up reads, the acks (op 18) and the ack timeout. The window's plain state is
:mod:`mpim.worker.outbox`, the ack rate limit :mod:`mpim.worker.ratelimit`; the router's
side (the stream, device cursors) is :mod:`mpim.router.streams`.

How this works. Such a client gets every push by mid (and private message) with its
stream seq in the frame header. After its Auth reply it sends op 20 (resume) once; the
router reads the user's stream after the client's position (or its device's cursor) and
the worker writes the missing messages, then op 21 with the stream's position, then the
live pushes above it — nothing lost or written twice across the replay. The client acks
cumulatively (op 18, header seq = the highest seq it processed); acks go to the router,
which moves this device's cursor in the inbox.

Each connection's stream goes through an :class:`~mpim.worker.outbox.Outbox`: at most
``[delivery] max_unacked`` pushes are written and unacked at any time, the rest leave as
acks arrive, so a replay of any length is paced by the client and always ends in op 21.
A live push that finds the outbox full is left in the inbox and read again from there
once the client caught up. The server never resends on a connection: a client that
leaves its oldest push unacked for ``ack_timeout`` is told op 6 and closed, and resumes
on its next connection.
"""

from __future__ import annotations

import json
import logging
import string
from typing import TYPE_CHECKING, Any

from mpim.proto import Op, RemoteProtocolError, encode
from mpim.records import Replayed
from mpim.worker.channel import CLOSED
from mpim.worker.outbox import Item, Outbox
from mpim.worker.room import ws_batch
from mpim.worker.wsframe import binary_frame

if TYPE_CHECKING:
    import asyncio

    from mpim.config import Config
    from mpim.proto import Frame
    from mpim.worker.channel import Channel, Registry
    from mpim.worker.link import ClusterLink

log = logging.getLogger("mpim.worker")

CAP_ACK, CAP_SEQ = 1, 2
MAX_EPOCH = 64
_EPOCH_CHARS = frozenset(string.ascii_letters + string.digits + "._-:")

Reliable = Outbox  # (what a channel's ``rel`` holds)


class ReliableDelivery:
    def __init__(
        self,
        cfg: Config,
        loop: asyncio.AbstractEventLoop,
        registry: Registry,
        link: ClusterLink,
        stats: dict[str, int],
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.link = link
        self.stats = stats
        self.reconfigure(cfg)
        self.awaiting: set[Channel] = set()  # channels with unacked pushes

    def reconfigure(self, cfg: Config) -> None:
        self.window = cfg.delivery.max_unacked
        self.ack_timeout = cfg.delivery.ack_timeout

    # -- pushes ---------------------------------------------------------------------------------
    def push(self, channel: Channel, op: int, body: bytes, seq: int) -> None:
        rel: Outbox = channel.rel
        rel.offer((seq, op, body), self.window)
        if rel.queued or rel.gap:
            self._pump(channel, rel)

    def _pump(self, channel: Channel, rel: Outbox) -> None:
        """Write what the window allows, then op 21 when it is due, then a catch-up read if one is."""
        answer = rel.owed()
        if answer is None:
            items = rel.take(self.window)
            if items:
                self._write(channel, rel, items)
            answer = rel.owed()
        if answer is not None:
            body = json.dumps({"epoch": answer.epoch, "seq": answer.top, "recovered": answer.recovered})
            channel.send_frame(encode(Op.RESUMED, body.encode(), rel.reply[0], rel.reply[1]))
            self.stats["resumes"] += 1
            if not answer.recovered:
                self.stats["unrecovered"] += 1
            items = rel.take(self.window)  # (live pushes queued behind the replay)
            if items:
                self._write(channel, rel, items)
        if rel.wants_read() and channel.state != CLOSED:
            self._read(channel, rel, rel.epoch, rel.last, cursor=False, page=True)
            self.stats["catchups"] += 1

    def _write(self, channel: Channel, rel: Outbox, items: list[Item]) -> None:
        frames = [encode(op, body, seq=seq) for seq, op, body in items]
        if channel.is_ws:
            channel.write(binary_frame(frames[0]) if len(frames) == 1 else ws_batch(b"".join(frames)))
        else:
            channel.write(frames[0] if len(frames) == 1 else b"".join(frames))
        now = self.loop.time()
        rel.unacked.extend((seq, now) for seq, _, _ in items)
        self.awaiting.add(channel)
        self.stats["reliable_sent"] += len(items)

    # -- resume ---------------------------------------------------------------------------------
    def resume(self, channel: Channel, frame: Frame) -> None:
        rel: Outbox = channel.rel
        if rel.requested:
            log.info("ignoring a second resume (op 20) from %s key=%s", channel.peer(), channel.key)
            return
        epoch, seq, cursor = parse_resume(frame.body)
        rel.requested = True
        rel.reply = (frame.ver, frame.seq)
        self._read(channel, rel, epoch, seq, cursor, page=False)

    def _read(self, channel: Channel, rel: Outbox, epoch: str, seq: int, cursor: bool, page: bool) -> None:
        rel.fetching = True

        def answered(rec: Replayed) -> None:
            self.answered(channel, rec)

        self.link.resume(channel, epoch, seq, cursor, answered, page)

    def answered(self, channel: Channel, rec: Replayed) -> None:
        """The router's read of the stream: the resume's, or a catch-up after a gap."""
        rel: Outbox | None = channel.rel
        if channel.state == CLOSED or rel is None or not rel.fetching:
            return
        items = [(m.seq, m.op, m.body) for m in rec.messages]
        why = rel.answered(items, rec.epoch, rec.top, rec.recovered, self.window)
        if why:
            self._cut(channel, why)
            return
        self._pump(channel, rel)

    # -- acks -----------------------------------------------------------------------------------
    def ack(self, channel: Channel, seq: int) -> None:
        rel: Outbox = channel.rel
        if seq > rel.written:
            self.stats["acks_clamped"] += 1
        if seq > rel.written and not rel.noted:  # (one line per connection)
            rel.noted = True
            if rel.written:
                log.info(
                    "ack of seq %d from %s key=%s, which was sent up to %d: taken as %d",
                    seq, channel.peer(), channel.key, rel.written, rel.written,
                )  # fmt: skip
            else:
                log.info(
                    "ignoring an ack (seq %d) from %s key=%s: nothing was sent to it yet (acks follow op 20)",
                    seq, channel.peer(), channel.key,
                )  # fmt: skip
        acked = rel.ack(seq)
        if not acked:
            return
        if not rel.unacked:
            self.awaiting.discard(channel)
        self.link.ack(channel, acked)
        if rel.queued:
            self._pump(channel, rel)

    def tick(self) -> None:
        """Close the clients whose oldest unacked push is older than the ack timeout."""
        limit = self.loop.time() - self.ack_timeout
        for channel in [c for c in self.awaiting if c.rel.unacked and c.rel.unacked[0][1] < limit]:
            self._cut(channel, f"no ack for seq {channel.rel.unacked[0][0]} within {self.ack_timeout:g}s")

    def forget(self, channel: Channel) -> None:
        self.awaiting.discard(channel)

    def _cut(self, channel: Channel, why: str) -> None:
        self.stats["ack_cut"] += 1
        log.info("closing %s key=%s: %s; it resumes on its next connection", channel.peer(), channel.key, why)
        self.registry.close(channel, notify=True)


def parse_resume(body: bytes) -> tuple[str, int, bool]:
    """Op 20's body: ``{"epoch": str, "seq": int}``, or ``{}`` / empty = from this device's cursor."""
    if not body.strip():
        return "", 0, True
    try:
        value: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise RemoteProtocolError("resume (op 20) body is not JSON") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("resume (op 20) body must be a JSON object")
    if not value:
        return "", 0, True
    epoch, seq = value.get("epoch"), value.get("seq")
    if not isinstance(epoch, str) or type(seq) is not int or not 0 <= seq < 1 << 31:
        raise RemoteProtocolError('resume (op 20) body must be {"epoch": "<str>", "seq": <int32 >= 0>} or {}')
    if len(epoch) > MAX_EPOCH or not _EPOCH_CHARS.issuperset(epoch):
        raise RemoteProtocolError(
            f"resume (op 20) epoch {epoch[:MAX_EPOCH]!a} is not one the server gave"
            f" (at most {MAX_EPOCH} letters, digits and ._-:)"
        )
    return epoch, seq, False


def caps_bits(caps: frozenset[str]) -> int:
    return (CAP_ACK if "ack" in caps else 0) | (CAP_SEQ if "seq" in caps else 0)
