"""Reliable delivery on a worker: clients that opted in with the ``ack`` cap.

Such a client gets every push by mid (and private message) with its stream seq in
the frame header. After its Auth reply it sends op 20 (resume) once; until the
router's replay comes back, its reliable pushes are held here. The replay is
written first (the missing messages in seq order), then op 21 with the stream's
position, then the held live pushes above that position — so nothing is lost or
written twice across the replay. The client acks cumulatively (op 18, header seq =
the highest seq it processed); acks go to the router, which moves this device's
cursor in the inbox. The server never resends on a connection: a client with more
than ``[delivery] max_unacked`` pushes unacked, or one unacked for longer than
``ack_timeout``, is told op 6 and closed, and resumes on its next connection.
"""

from __future__ import annotations

import collections
import json
import logging
from typing import TYPE_CHECKING, Any

from mpim.proto import RemoteProtocolError, encode
from mpim.records import Replayed
from mpim.worker.channel import CLOSED
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
OP_ACK, OP_RESUME, OP_RESUMED, OP_CONFIRM = 18, 20, 21, 22


class Reliable:
    """One ack client's delivery state."""

    __slots__ = ("acked", "held", "reply", "requested", "resumed", "unacked")

    def __init__(self) -> None:
        self.resumed = False
        self.requested = False
        self.reply = (1, 0)  # ver and seq of the op-20 frame, echoed by op 21
        self.held: list[tuple[int, int, bytes]] = []  # (seq, op, body) pushed before the replay
        self.unacked: collections.deque[tuple[int, float]] = collections.deque()  # (seq, written at)
        self.acked = 0


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
        self.max_unacked = cfg.delivery.max_unacked
        self.ack_timeout = cfg.delivery.ack_timeout

    # -- pushes ---------------------------------------------------------------------------------
    def push(self, channel: Channel, op: int, body: bytes, seq: int) -> None:
        rel: Reliable = channel.rel
        if not rel.resumed:
            rel.held.append((seq, op, body))
            if len(rel.held) > self.max_unacked:
                self._cut(channel, f"{len(rel.held)} pushes waiting for its resume (op 20)")
            return
        self._write(channel, rel, [(seq, op, body)])

    def _write(self, channel: Channel, rel: Reliable, items: list[tuple[int, int, bytes]]) -> None:
        if not items:
            return
        frames = [encode(op, body, seq=seq) for seq, op, body in items]
        if channel.is_ws:
            channel.write(binary_frame(frames[0]) if len(frames) == 1 else ws_batch(b"".join(frames)))
        else:
            channel.write(frames[0] if len(frames) == 1 else b"".join(frames))
        now = self.loop.time()
        rel.unacked.extend((seq, now) for seq, _, _ in items)
        self.awaiting.add(channel)
        self.stats["reliable_sent"] += len(items)
        if len(rel.unacked) > self.max_unacked and channel.state != CLOSED:
            self._cut(channel, f"{len(rel.unacked)} pushes unacked")

    # -- resume ---------------------------------------------------------------------------------
    def resume(self, channel: Channel, frame: Frame) -> None:
        rel: Reliable = channel.rel
        if rel.requested:
            log.info("ignoring a second resume (op 20) from %s key=%s", channel.peer(), channel.key)
            return
        epoch, seq, cursor = parse_resume(frame.body)
        rel.requested = True
        rel.reply = (frame.ver, frame.seq)

        def replayed(rec: Replayed) -> None:
            self.replayed(channel, rec)

        self.link.resume(channel, epoch, seq, cursor, replayed)

    def replayed(self, channel: Channel, rec: Replayed) -> None:
        """The router's answer: the missing messages, op 21, then what was held above the top."""
        rel: Reliable | None = channel.rel
        if channel.state == CLOSED or rel is None or rel.resumed:
            return
        rel.resumed = True
        self._write(channel, rel, [(m.seq, m.op, m.body) for m in rec.messages])
        body = json.dumps({"epoch": rec.epoch, "seq": rec.top, "recovered": rec.recovered}).encode()
        channel.send_frame(encode(OP_RESUMED, body, rel.reply[0], rel.reply[1]))
        held, rel.held = rel.held, []
        self._write(channel, rel, [item for item in held if item[0] > rec.top])
        self.stats["resumes"] += 1
        if not rec.recovered:
            self.stats["unrecovered"] += 1

    # -- acks -----------------------------------------------------------------------------------
    def ack(self, channel: Channel, seq: int) -> None:
        rel: Reliable = channel.rel
        if seq <= rel.acked:
            return
        rel.acked = seq
        unacked = rel.unacked
        while unacked and unacked[0][0] <= seq:
            unacked.popleft()
        if not unacked:
            self.awaiting.discard(channel)
        self.link.ack(channel, seq)

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
    if not isinstance(epoch, str) or len(epoch) > 64 or type(seq) is not int or not 0 <= seq < 1 << 31:
        raise RemoteProtocolError('resume (op 20) body must be {"epoch": "<str>", "seq": <int32 >= 0>} or {}')
    return epoch, seq, False


def caps_bits(caps: frozenset[str]) -> int:
    return (CAP_ACK if "ack" in caps else 0) | (CAP_SEQ if "seq" in caps else 0)
