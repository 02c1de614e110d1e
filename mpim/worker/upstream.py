"""What a client sends up after Auth: admission (rate limit, anti-replay), messages and their acks.

Admission, for every frame after Auth: the per-connection rate limit on frames and
bytes (:mod:`mpim.worker.ratelimit`); a client
over it is told op 6 and closed with one log line. A client that asked for the
``seq`` cap must number its frames: each one's header seq is the previous one's
plus 1 (starting after its Auth frame's), heartbeats included — a replayed, skipped
or reordered seq is told op 6 and closed (gonet's anti-replay). Acks (op 18) are
outside the numbering: their header seq is the stream seq they ack, and they are
idempotent. goim clients that
did not ask for ``seq`` are never checked (goim's client.js sends seq 1 always).

Messages (any op that is not part of the protocol):

- A goim client (no ``ack`` cap): the message goes to the backend and the client
  gets goim's echo — the same op and seq with an empty body, at once; with
  ``[upstream] url`` the echo waits for the backend and carries its answer.
- An ``ack`` client's op 4 carries JSON ``{"id": "<its id>", "to": <mid>, "op":
  <push op>, "body": <any JSON>}`` (private chat when ``to`` is set, else for the
  backend). How it is acknowledged is ``[upstream] ack``:
  ``none`` — goim's echo, then processed; ``only`` — processed (stored, for private
  chat), then op 5 ``{"id", "code", "message", "seq", "state": "done"}``;
  ``rigor`` — op 5 ``{"id", "code": 0, "state": "received"}`` at once, re-sent every
  ``resend`` seconds until the client confirms with op 22 ``{"id": ...}``; only then
  is it processed and answered ``"state": "done"``; an unconfirmed one expires after
  ``confirm_timeout`` with op 5 ``{"id", "code": -408}``. A retried id is answered
  again but processed once (here while it waits, on the router afterwards).

The go-zero endpoint (:mod:`mpim.worker.gzservice`) hands its data frames to
:meth:`UpstreamService.submit` as :class:`Message` s with answers of its own, so
both protocols share the admission, the rigor wait and the router calls.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from mpim.limits import INT32, INT64, in_range
from mpim.proto import Op, RemoteProtocolError, encode
from mpim.records import ChatAck
from mpim.worker.channel import CLOSED
from mpim.worker.reliable import CAP_ACK, CAP_SEQ

if TYPE_CHECKING:
    import asyncio

    from mpim.config import Config
    from mpim.proto import Frame
    from mpim.worker.channel import Channel, Registry
    from mpim.worker.link import ClusterLink
    from mpim.worker.ratelimit import RateLimits

log = logging.getLogger("mpim.worker")

MAX_ID = 64
MAX_UNCONFIRMED = 256  # rigor: messages of one client waiting for its confirmation


class Answers(Protocol):
    """How a client hears about its message: goim's op 5 (:class:`GoimAnswers`), or the go-zero
    endpoint's frames (:mod:`mpim.worker.gzservice`)."""

    def received(self, channel: Channel, msg: Message) -> None:
        """Rigor: the message is held until the client confirms this (sent again every ``resend``)."""

    def done(self, channel: Channel, msg: Message, ack: ChatAck) -> None:
        """The router's answer: processed (code 0), or an error code."""

    def refused(self, channel: Channel, msg: Message, code: int, message: str) -> None:
        """Not processed: -429 too many unconfirmed, -408 not confirmed in time."""


class Message:
    """One client message: an ack client's op 4 (its JSON body), or a go-zero data frame."""

    __slots__ = (
        "ack_seq",
        "answers",
        "body",
        "first",
        "id",
        "last",
        "method",
        "online",
        "op",
        "reply",
        "rigor",
        "to",
    )

    def __init__(
        self,
        msg_id: str,
        to: int,
        op: int,
        body: bytes,
        reply: tuple[int, int],
        answers: Answers,
        *,
        method: str = "",
        ack_seq: int = 0,
        online: list[int] | None = None,
    ) -> None:
        self.id = msg_id
        self.to = to
        self.op = op
        self.body = body
        self.reply = reply  # ver and seq of the client's frame, echoed by op 5
        self.answers = answers
        self.method = method  # (go-zero) the frame's method
        self.ack_seq = ack_seq  # (go-zero) the ackSeq of the acks owed to it; -1: none (NoAck)
        self.online = online  # (go-zero) user.online: the users asked about, instead of a chat
        self.rigor = False  # it waited for the client's confirmation
        self.first = self.last = 0.0


def parse_message(raw: bytes) -> tuple[str, int, int, bytes]:
    """Op 4's JSON body -> (id, to, op, body as JSON bytes); ValueError says what is wrong."""
    try:
        value: Any = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("body is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object")
    msg_id, to, op = value.get("id"), value.get("to", 0), value.get("op")
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID:
        raise ValueError(f"id must be a string of 1 to {MAX_ID} characters")
    if not _utf8(msg_id):
        raise ValueError("id is not valid UTF-8 text")
    if type(to) is not int or to < 0 or not in_range(to, INT64):
        raise ValueError("to must be a user id (mid > 0), or absent for the backend")
    if type(op) is not int or not in_range(op, INT32):
        raise ValueError("op must be an int32 (the push op the recipient watches)")
    try:
        body = json.dumps(value.get("body"), separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("body is not valid UTF-8 text (a lone surrogate)") from None
    return msg_id, to, op, body


def parse_confirm(raw: bytes) -> str:
    """Op 22's body ``{"id": "<message id>"}`` -> the id; RemoteProtocolError says what is wrong."""
    try:
        value: Any = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    msg_id = value.get("id") if isinstance(value, dict) else None
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID or not _utf8(msg_id):
        raise RemoteProtocolError(
            f'confirm (op 22) body must be {{"id": "<message id, 1 to {MAX_ID} characters>"}}'
        )
    return msg_id


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class UpstreamService:
    def __init__(
        self,
        cfg: Config,
        loop: asyncio.AbstractEventLoop,
        registry: Registry,
        link: ClusterLink,
        stats: dict[str, int],
        limits: RateLimits,
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.link = link
        self.stats = stats
        self.limits = limits
        self.pending: dict[Channel, dict[str, Message]] = {}  # rigor: waiting for op 22
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        up = cfg.upstream
        self.mode = up.ack
        self.answers = bool(up.url)
        self.resend, self.confirm_timeout = up.resend, up.confirm_timeout
        self.max_body = cfg.protocol.max_body

    # -- admission ------------------------------------------------------------------------------
    def start(self, channel: Channel, auth_seq: int) -> None:
        """A confirmed session: full buckets, and the seq its next frame must carry."""
        self.limits.fill(channel)
        channel.useq = auth_seq if channel.caps & CAP_SEQ else -1

    def admit(self, channel: Channel, frame: Frame) -> bool:
        if not self.limits.take(channel, 16 + len(frame.body)):
            return False
        if channel.useq >= 0 and frame.op != Op.ACK:  # (an ack's header seq is the seq it acks)
            expected = (channel.useq + 1) & 0x7FFFFFFF
            if frame.seq != expected:
                self.stats["replay_cut"] += 1
                self._cut(channel, f"frame seq {frame.seq}, expected {expected} (replayed or skipped)")
                return False
            channel.useq = expected
        return True

    def _cut(self, channel: Channel, why: str) -> None:
        log.warning("closing %s key=%s: %s", channel.peer(), channel.key, why)
        self.registry.close(channel, notify=True)

    # -- messages --------------------------------------------------------------------------------
    def message(self, channel: Channel, frame: Frame) -> None:
        if not channel.caps & CAP_ACK or frame.op != Op.SEND_MSG:
            self._goim(channel, frame)
            return
        try:
            msg_id, to, op, body = parse_message(frame.body)
        except ValueError as exc:
            _answer(
                channel, (frame.ver, frame.seq), {"id": _id_of(frame.body), "code": -400, "message": str(exc)}
            )
            return
        msg = Message(msg_id, to, op, body, (frame.ver, frame.seq), GOIM)
        if self.mode == "none":
            channel.send_frame(encode(frame.op, b"", frame.ver, frame.seq))
        self.submit(channel, msg, hold=self.mode == "rigor", reply=self.mode != "none")

    def submit(self, channel: Channel, msg: Message, *, hold: bool, reply: bool) -> None:
        """Process a message now (``reply``: its answer goes to ``msg.answers.done``), or ``hold``
        it until the client confirms (rigor), then process it and answer."""
        if hold:
            self._hold(channel, msg)
        else:
            self._send(channel, msg, reply)

    def _goim(self, channel: Channel, frame: Frame) -> None:
        if not self.answers:
            self.link.upstream(channel, frame.op, frame.body)
            channel.send_frame(encode(frame.op, b"", frame.ver, frame.seq))
            return

        def echo(ack: ChatAck) -> None:  # goim's echo, carrying the backend's answer
            if ack.code:
                log.info(
                    "backend refused a message of %s key=%s: %s", channel.peer(), channel.key, ack.message
                )
            channel.send_frame(encode(frame.op, b"" if ack.code else ack.body, frame.ver, frame.seq))

        self.link.chat(channel, frame.op, frame.body, "", 0, echo)

    def _send(self, channel: Channel, msg: Message, reply: bool) -> None:
        self.stats["messages"] += 1

        def done(ack: ChatAck) -> None:
            if channel.state != CLOSED:
                msg.answers.done(channel, msg, ack)

        if msg.online is not None:
            self.link.online(channel, msg.online, done)
        else:
            self.link.chat(channel, msg.op, msg.body, msg.id, msg.to, done if reply else None)

    # -- rigor ---------------------------------------------------------------------------------
    def _hold(self, channel: Channel, msg: Message) -> None:
        waiting = self.pending.setdefault(channel, {})
        known = waiting.get(msg.id)
        if known is None:
            if len(waiting) >= MAX_UNCONFIRMED:
                msg.answers.refused(channel, msg, -429, "too many unconfirmed")
                return
            msg.first = self.loop.time()
            msg.rigor = True
            waiting[msg.id] = known = msg
        known.last = self.loop.time()
        known.answers.received(channel, known)

    def confirm(self, channel: Channel, frame: Frame) -> None:
        """Op 22 ``{"id": ...}``: the client saw our ack; now the message is processed."""
        self.confirmed(channel, parse_confirm(frame.body))

    def waiting(self, channel: Channel, msg_id: str) -> Message | None:
        """The message ``msg_id`` of this client that waits for its confirmation (rigor), if any."""
        waiting = self.pending.get(channel)
        return waiting.get(msg_id) if waiting is not None else None

    def confirmed(self, channel: Channel, msg_id: str) -> None:
        """The client confirmed ``msg_id``: process it (a late or repeated confirm changes nothing)."""
        msg = self.pending.get(channel, {}).pop(msg_id, None)
        if msg is not None:
            self._send(channel, msg, reply=True)

    def tick(self) -> None:
        """Rigor: re-send unconfirmed acks; expire the ones past the confirm timeout."""
        now = self.loop.time()
        for channel, waiting in list(self.pending.items()):
            for msg in list(waiting.values()):
                if now - msg.first >= self.confirm_timeout:
                    del waiting[msg.id]
                    self.stats["unconfirmed"] += 1
                    if channel.state != CLOSED:
                        msg.answers.refused(channel, msg, -408, "not confirmed in time")
                elif now - msg.last >= self.resend:
                    msg.last = now
                    if channel.state != CLOSED:
                        msg.answers.received(channel, msg)
            if not waiting:
                del self.pending[channel]

    def forget(self, channel: Channel) -> None:
        self.pending.pop(channel, None)


def _answer(channel: Channel, reply: tuple[int, int], answer: dict[str, Any]) -> None:
    """Op 5 with the JSON ``answer``, echoing the message's ver and seq."""
    if channel.state == CLOSED:
        return
    body = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    channel.send_frame(encode(Op.SEND_MSG_REPLY, body, reply[0], reply[1]))


class GoimAnswers:
    """An ack client's op 5 answers (the README's "Reliable delivery and chat")."""

    def received(self, channel: Channel, msg: Message) -> None:
        _answer(channel, msg.reply, {"id": msg.id, "code": 0, "state": "received"})

    def done(self, channel: Channel, msg: Message, ack: ChatAck) -> None:
        answer: dict[str, Any] = {"id": msg.id, "code": ack.code, "message": ack.message, "seq": ack.seq}
        if ack.body:
            answer["body"] = ack.body.decode("utf-8", "replace")
        answer["state"] = "done"
        _answer(channel, msg.reply, answer)

    def refused(self, channel: Channel, msg: Message, code: int, message: str) -> None:
        _answer(channel, msg.reply, {"id": msg.id, "code": code, "message": message})


GOIM = GoimAnswers()


def _id_of(raw: bytes) -> Any:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    msg_id = value.get("id") if isinstance(value, dict) else None
    return msg_id if isinstance(msg_id, str) and len(msg_id) <= MAX_ID and _utf8(msg_id) else None
