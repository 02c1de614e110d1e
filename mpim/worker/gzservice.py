"""The go-zero endpoint's service: auth at the upgrade, and what its JSON frames ask for.

How this works. A WebSocket upgrade on ``[gozero] path`` carries a token (the
``[auth]`` settings) in ``Authorization: Bearer``, in ``?token=`` or as the
offered ``Sec-WebSocket-Protocol`` (then echoed, as browsers require); no valid
token is HTTP 401 and counts as a failed Auth against the client's IP. The user
is the token's ``mid`` (or its ``sub``, a decimal string). The client is then
filed like a goim client that asked for ``ack``, with the key ``gozero-<mid>``:
one connection per user on this endpoint, so a second one kicks the first
(anywhere in the cluster), and the user's goim devices (other keys) are never
kicked. Once filed it resumes from that key's cursor: the user's inbox past what
this endpoint acked comes first, then live pushes, paced by the same window.

Frames (after admission: the upstream rate limit, or the ack limit for
``frameType`` 2; every frame keeps the connection alive like a heartbeat):

- 1 ping -> ping. 9 from a client is ignored; 6 (transpond, between go-zero
  servers) and unknown types get an error frame.
- 2 ack: with ``method`` "push" it acks the pushes up to stream seq ``ackSeq``
  (cumulative, like op 18; the push frames' own ``method``); otherwise, ``id``
  naming a message of the client waiting for its confirmation (rigor) with a
  higher ``ackSeq`` confirms it, and anything else (a late or repeated
  confirmation) is ignored.
- 0 data / 3 no-ack data, by ``method``: ``conversation.chat`` (private chat),
  ``user.online`` (built in, unless ``[gozero] user_online = false``), anything
  else to the business backend when one is configured (``[upstream] url`` or
  ``[router] receive_hook``; body ``{"id", "method", "data"}``, op ``[gozero]
  op``), else a data frame saying the method is unknown. They go through
  :meth:`UpstreamService.submit` in ``[upstream] ack``'s mode (3: never acked):
  only -> ``{"frameType": 2, "id", "ackSeq": ackSeq + 1}`` once processed (stored);
  rigor -> that ack at once (``ackSeq``: the client's, or 1), re-sent every
  ``resend`` s until the client sends the id with a higher ``ackSeq``, then
  processed; an error (or a rigor message that expired) is an error frame.

A frame that is not a go-zero frame (not JSON, wrong types, too large) gets an
error frame, one log line and a close.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, cast

from websockets.protocol import State
from websockets.typing import Subprotocol

from mpim.auth import AuthError
from mpim.gozero.chat import chat_body, online_query
from mpim.gozero.frames import (
    FRAME_ACK,
    FRAME_DATA,
    FRAME_ERR,
    FRAME_NOACK,
    FRAME_PING,
    FRAME_TRANSPOND,
    FrameError,
    GzFrame,
    body_json,
    decode,
    dumps,
    encode,
    error_frame,
)
from mpim.gozero.push import PUSH_METHOD, ROOT
from mpim.proto import Frame, Op
from mpim.worker.channel import ALL_OPS, CLOSED
from mpim.worker.upstream import Message

if TYPE_CHECKING:
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    from mpim.config import Config
    from mpim.records import ChatAck
    from mpim.worker.channel import Channel, Registry
    from mpim.worker.deadlines import Deadlines
    from mpim.worker.gzchannel import GoZeroChannel
    from mpim.worker.link import ClusterLink
    from mpim.worker.ratelimit import RateLimits
    from mpim.worker.reliable import ReliableDelivery
    from mpim.worker.sessions import Sessions
    from mpim.worker.upstream import UpstreamService
    from mpim.worker.ws import WsChannel

log = logging.getLogger("mpim.worker")

CHAT, ONLINE = "conversation.chat", "user.online"
KEY_PREFIX = "gozero-"
PING = encode(FRAME_PING)
_ACK_CAPS = frozenset({"ack"})
_RESUME = Frame(1, Op.RESUME, 0, b"")  # from this endpoint's cursor


def token_of(request: Request) -> tuple[str, str]:
    """The token of an upgrade request and, when it came as a subprotocol, that subprotocol
    (echoed in the answer). ``("", "")``: none."""
    for header in request.headers.get_all("Authorization"):  # (the first bearer token)
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), ""
    query = urllib.parse.parse_qs(request.path.partition("?")[2])
    if query.get("token", [""])[0]:
        return query["token"][0], ""
    offered = [
        part.strip()
        for header in request.headers.get_all("Sec-WebSocket-Protocol")
        for part in header.split(",")
        if part.strip()
    ]
    if not offered:
        return "", ""
    chosen = next((p for p in reversed(offered) if p.count(".") == 2), offered[-1])  # a JWT, or the last
    return chosen, chosen


class GoZeroAnswers:
    """How a go-zero client hears about its data frames (:class:`~mpim.worker.upstream.Answers`)."""

    def __init__(self, stats: dict[str, int]) -> None:
        self.stats = stats

    def received(self, channel: Channel, msg: Message) -> None:
        _send(channel, encode(FRAME_ACK, id=msg.id, ack_seq=msg.ack_seq))

    def done(self, channel: Channel, msg: Message, ack: ChatAck) -> None:
        if ack.code:
            self.refused(channel, msg, ack.code, ack.message or f"error {ack.code}")
            return
        if msg.ack_seq >= 0 and not msg.rigor:  # OnlyAck: acked once processed
            _send(channel, encode(FRAME_ACK, id=msg.id, ack_seq=msg.ack_seq + 1))
        if msg.online is not None:
            _send(channel, online_frame(msg, ack.body, channel.mid))
        elif msg.to == 0 and ack.body:  # the backend's answer
            data, b64 = body_json(ack.body)
            extra = b',"base64":true' if b64 else b""
            _send(
                channel,
                encode(FRAME_DATA, id=msg.id, method=msg.method, form_id=ROOT, data=data, extra=extra),
            )

    def refused(self, channel: Channel, msg: Message, code: int, message: str) -> None:
        self.stats["gozero_errors"] += 1
        _send(channel, error_frame(message, id=msg.id, method=msg.method, code=code))


def online_frame(msg: Message, body: bytes, caller: int) -> bytes:
    """``user.online``'s answer: the users asked about that are online, as go-zero's string ids."""
    try:
        online = [str(mid) for mid in json.loads(body) if type(mid) is int]
    except (ValueError, TypeError, RecursionError):
        online = []
    return encode(FRAME_DATA, id=msg.id, method=msg.method, form_id=str(caller), data=dumps(online))


def _send(channel: Channel, payload: bytes) -> None:
    cast("GoZeroChannel", channel).send_json(payload)  # (messages of this endpoint's channels only)


class GoZeroService:
    def __init__(
        self,
        cfg: Config,
        registry: Registry,
        deadlines: Deadlines,
        sessions: Sessions,
        reliable: ReliableDelivery,
        upstream: UpstreamService,
        link: ClusterLink,
        stats: dict[str, int],
        limits: RateLimits,
    ) -> None:
        self.registry = registry
        self.deadlines = deadlines
        self.sessions = sessions
        self.reliable = reliable
        self.upstream = upstream
        self.link = link
        self.stats = stats
        self.limits = limits
        self.answers = GoZeroAnswers(stats)
        self.channel_class: type[WsChannel] | None = None  # the hub's bound GoZeroChannel
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        self.op = cfg.gozero.op
        self.user_online = cfg.gozero.user_online
        self.mode = cfg.upstream.ack
        self.backend = bool(cfg.upstream.url or cfg.router.receive_hook)
        self.max_body = cfg.protocol.max_body

    # -- the upgrade --------------------------------------------------------------------------
    def upgrade(self, channel: WsChannel, ws: ServerProtocol, request: Request) -> bool:
        """A request on ``[gozero] path``: accept it and file the user, or refuse it (401)."""
        token, subprotocol = token_of(request)
        try:
            if not token:
                raise AuthError("no token (Authorization: Bearer, Sec-WebSocket-Protocol or ?token=)")
            ident = self.sessions.auth.verify(token.encode(), subject=True)
            if ident.mid <= 0:
                raise AuthError("the go-zero endpoint needs a user id (mid > 0)")
        except AuthError as exc:
            ws.send_response(ws.reject(401, "Unauthorized\n"))
            self.sessions.refused(channel, str(exc), " on the go-zero path")
            self.registry.close(channel)
            return False
        if subprotocol:
            ws.available_subprotocols = [Subprotocol(subprotocol)]
        ws.send_response(ws.accept(request))
        if ws.state is not State.OPEN:
            self.registry.reject(channel, f"websocket handshake failed: {ws.handshake_exc}")
            return False
        assert self.channel_class is not None
        channel.__class__ = self.channel_class
        self.stats["opened_gozero"] += 1
        ident = dataclasses.replace(ident, key=f"{KEY_PREFIX}{ident.mid}", accepts=ALL_OPS, caps=_ACK_CAPS)
        self.sessions.login(channel, ident, b"", then=lambda: self.reliable.resume(channel, _RESUME))
        self.upstream.start(channel, 0)  # (its frames are admitted from now on, held until it is filed)
        return True

    # -- frames ---------------------------------------------------------------------------------
    def receive(self, channel: WsChannel, payload: bytes) -> None:
        """One complete message from a go-zero client."""
        if channel.state == CLOSED:  # (read while our close waits for the client's)
            return
        if len(payload) > self.max_body:
            self.bad(
                channel, f"a frame of {len(payload)} bytes is over [protocol] max_body ({self.max_body})"
            )
            return
        try:
            frame = decode(payload)
        except FrameError as exc:
            self.bad(channel, exc.reason)
            return
        if frame.frame_type == FRAME_ACK:
            admitted = self.limits.take_ack(channel)
        else:
            admitted = self.limits.take(channel, len(payload))
        if admitted:
            cast("GoZeroChannel", channel).on_frame(frame)

    def bad(self, channel: WsChannel, reason: str) -> None:
        """Not a go-zero frame: an error frame saying why, one log line, a close."""
        self.stats["gozero_bad"] += 1
        self.stats["gozero_errors"] += 1
        _send(channel, error_frame(reason, code=-400))
        self.registry.reject(channel, f"go-zero frame: {reason}")

    def dispatch(self, channel: GoZeroChannel, frame: GzFrame) -> None:
        """A frame of a filed client (in order, after any held while it was being filed)."""
        self.deadlines.beat(channel)
        self.link.heartbeat(channel)
        kind = frame.frame_type
        if kind == FRAME_PING:
            self.stats["gozero_pings"] += 1
            channel.send_json(PING)
        elif kind == FRAME_ACK:
            self.stats["gozero_acks"] += 1
            self._ack(channel, frame)
        elif kind in (FRAME_DATA, FRAME_NOACK):
            self.stats["gozero_data"] += 1
            self._data(channel, frame, kind == FRAME_NOACK)
        elif kind != FRAME_ERR:
            why = (
                "frameType 6 (transpond) is for go-zero servers; send conversation.chat"
                if kind == FRAME_TRANSPOND
                else f"unknown frameType {kind}"
            )
            self._error(channel, frame, -400, why)

    def _error(self, channel: GoZeroChannel, frame: GzFrame, code: int, message: str) -> None:
        self.stats["gozero_errors"] += 1
        channel.send_json(error_frame(message, id=frame.id, method=frame.method, code=code))

    def _ack(self, channel: GoZeroChannel, frame: GzFrame) -> None:
        if frame.method == PUSH_METHOD:  # pushes processed up to ackSeq (cumulative)
            if frame.ack_seq > 0:
                self.reliable.ack(channel, frame.ack_seq)
            return
        waiting = self.upstream.waiting(channel, frame.id) if frame.id else None
        if waiting is not None and frame.ack_seq > waiting.ack_seq:
            self.upstream.confirmed(channel, frame.id)  # (a late or repeated one changes nothing)

    def _data(self, channel: GoZeroChannel, frame: GzFrame, noack: bool) -> None:
        if frame.id:
            waiting = self.upstream.waiting(channel, frame.id)
            if waiting is not None and frame.ack_seq > waiting.ack_seq:  # go-zero: a confirmation too
                self.upstream.confirmed(channel, frame.id)
                return
        noack = noack or self.mode == "none"
        method = frame.method
        if not noack and not frame.id:
            self._error(channel, frame, -400, f'"id" is required: [upstream] ack = "{self.mode}" acks by id')
            return
        ack_seq = -1 if noack else frame.ack_seq if self.mode == "only" else max(frame.ack_seq, 1)
        try:
            if method == CHAT:
                to, body = chat_body(frame.data, channel.mid, int(time.time() * 1000))
                msg = Message(
                    frame.id, to, self.op, body, (1, 0), self.answers, method=method, ack_seq=ack_seq
                )
            elif method == ONLINE and self.user_online:
                mids = online_query(frame.data, channel.mid)
                msg = Message(
                    frame.id,
                    0,
                    self.op,
                    b"",
                    (1, 0),
                    self.answers,
                    method=method,
                    ack_seq=ack_seq,
                    online=mids,
                )
            elif self.backend:
                request = dumps({"id": frame.id, "method": method, "data": frame.data})
                msg = Message(
                    frame.id, 0, self.op, request, (1, 0), self.answers, method=method, ack_seq=ack_seq
                )
            else:
                channel.send_json(
                    encode(
                        FRAME_DATA,
                        id=frame.id,
                        method=method,
                        form_id=ROOT,
                        data=dumps(f"unknown method: {method}"),
                    )
                )
                return
        except ValueError as exc:
            self._error(channel, frame, -400, str(exc))
            return
        self.upstream.submit(channel, msg, hold=not noack and self.mode == "rigor", reply=True)
