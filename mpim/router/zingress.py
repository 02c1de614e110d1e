"""The ZeroMQ push ingress: a ROUTER socket taking msgpack requests.

A request is one frame (after the routing frames of a DEALER or REQ peer)
holding a msgpack map::

    {"kind": "keys", "op": 1000, "keys": ["k1", "k2"], "body": b"..."}
    {"kind": "mids", "op": 1000, "mids": [1, 2], "body": b"..."}
    {"kind": "room", "op": 1000, "room": "live://1000", "body": b"..."}
    {"kind": "all",  "op": 1000, "speed": 0, "body": b"..."}

plus optional ``"id"`` (any value, echoed in the reply) and ``"reply": false``
(fire and forget: no answer is sent). With ``[ingress] api_key`` set, every
request must carry it as ``"api_key"`` (compared in constant time), or it is
refused with -401. ``body`` may be bytes or a UTF-8 string;
``room`` is a full room id (``type://id``); ``mids`` are user ids (1 .. 2**63 - 1),
at most ``[router] max_targets`` distinct ones (keys too). The reply is one msgpack map
``{"id": ..., "code": 0, "message": "", "data": ...}`` with the HTTP API's codes:
-400 for a malformed request, -413 for a body over ``[http] max_body``, -503 /
-504 when the push cannot be promised (see :mod:`mpim.router.core`); ``data`` is
``{"connections": n}`` for keys and mids. A room or broadcast push is answered
once the workers confirmed it. (The Python client answers -504 itself when no
reply arrives in time.)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from mpim.limits import INT32, BadRequest, check_room_id
from mpim.router import targets
from mpim.router.core import Refused, Router

log = logging.getLogger("mpim.ingress")

Op = Annotated[int, msgspec.Meta(ge=INT32[0], le=INT32[1])]


class _Request(msgspec.Struct, tag_field="kind", kw_only=True):
    op: Op
    body: Any = b""  # bytes or str (msgspec cannot decode that union itself)
    id: Any = None
    reply: bool = True
    api_key: str = ""


class KeysRequest(_Request, tag="keys"):
    keys: Annotated[list[str], msgspec.Meta(min_length=1)]


class MidsRequest(_Request, tag="mids"):
    mids: Annotated[list[int], msgspec.Meta(min_length=1)]  # user ids: checked by execute()


class RoomRequest(_Request, tag="room"):
    room: Annotated[str, msgspec.Meta(min_length=1)]


class AllRequest(_Request, tag="all"):
    speed: Annotated[int, msgspec.Meta(ge=0, le=INT32[1])] = 0


Request = KeysRequest | MidsRequest | RoomRequest | AllRequest
_decode = msgspec.msgpack.Decoder(Request).decode
_encode = msgspec.msgpack.Encoder().encode
_WHERE = re.compile(r"^(.*) - at `\$\.?([^`\[]*)[^`]*`$")


def explain(exc: msgspec.MsgspecError) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.op``` -> ``op: expected `int`, got `str```."""
    text = str(exc)
    if text.startswith("Object missing required field"):
        return f"{text.split('`')[1]}: required"
    match = _WHERE.match(text)
    if match is None:
        if not isinstance(exc, msgspec.ValidationError):
            return f"malformed msgpack: {text}"
        what, field = text, ""
    else:
        what, field = match.groups()
    if field == "kind" and what.startswith("Invalid value"):
        what += " (one of keys, mids, room, all)"
    return f"{field or 'request'}: {what[:1].lower()}{what[1:]}"


def _request_id(payload: bytes) -> Any:
    try:
        value = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError:
        return None
    return value.get("id") if isinstance(value, dict) else None


def execute(router: Router, req: Request, max_body: int) -> Any:
    """Carry out one typed push request: its answer's data, or a future of it.

    Raises :class:`BadRequest` (-400 / -413) or :class:`~mpim.router.core.Refused`. Every mid
    must be a user id, and at most ``[router] max_targets`` distinct mids or keys are named
    (:mod:`mpim.router.targets`)."""
    body = req.body.encode() if isinstance(req.body, str) else req.body
    if not isinstance(body, bytes):
        raise BadRequest(f"body: expected bytes or a string, got {type(body).__name__}")
    if len(body) > max_body:
        raise BadRequest(f"body of {len(body)} bytes is over the {max_body}-byte limit", -413)
    if isinstance(req, KeysRequest):
        targets.check_keys(req.keys, router.cfg.router.max_targets)
        found = router.push.keys(req.op, req.keys, body)
        return {"connections": found} if isinstance(found, int) else found
    if isinstance(req, MidsRequest):
        targets.check_mids(req.mids, router.cfg.router.max_targets)
        return router.push.mids(req.op, req.mids, body)
    if isinstance(req, RoomRequest):
        try:
            check_room_id(req.room)
        except ValueError as exc:
            raise BadRequest(f"room: {exc}") from None
        return router.push.room(req.op, req.room, body)
    return router.push.all(req.op, req.speed, body)


def outcome_data(result: Any) -> Any:
    """A finished push's answer data: ``None`` for room / all, connections and seqs for mids."""
    if isinstance(result, int):  # keys, across hosts
        return {"connections": result}
    if isinstance(result, tuple):  # a push by mid: connections and each user's seq
        connections, seqs = result
        data: dict[str, Any] = {"connections": connections}
        if seqs:  # (string keys, as over HTTP: strict msgpack decoders refuse int keys)
            data["seqs"] = {str(mid): seq for mid, seq in seqs.items()}
        return data
    return None


Send = Callable[[list[bytes]], None]


class Ingress:
    def __init__(self, router: Router, max_body: int, api_key: str = "") -> None:
        self.router = router
        self.max_body = max_body
        self.api_key = api_key
        self.requests = 0
        self.refused = 0

    def handle(self, payload: bytes) -> tuple[dict[str, Any] | asyncio.Future[dict[str, Any]], bool]:
        """One request -> (reply, or a future reply; whether the peer wants it)."""
        self.requests += 1
        try:
            req = _decode(payload)
        except msgspec.MsgspecError as exc:
            message = explain(exc)
            if message.startswith("request: expected `object`"):
                message = "request must be a msgpack map; " + message
            return self._refuse(payload, -400, message, _request_id(payload)), True
        if self.api_key and not hmac.compare_digest(req.api_key.encode(), self.api_key.encode()):
            why = "api_key: missing" if not req.api_key else "api_key: wrong key"
            return self._refuse(payload, -401, why, req.id), req.reply
        try:
            data = self._push(req)
        except BadRequest as exc:
            return self._refuse(payload, exc.code, str(exc), req.id), req.reply
        except Refused as exc:
            return self._refuse(payload, exc.code, exc.message, req.id), req.reply
        if isinstance(data, asyncio.Future):
            return self._settled(req.id, data), req.reply
        return {"id": req.id, "code": 0, "message": "", "data": data}, req.reply

    def _refuse(self, payload: bytes, code: int, message: str, rid: Any) -> dict[str, Any]:
        self.refused += 1
        log.info("refusing a ZeroMQ push (%d bytes): %s", len(payload), message)
        return {"id": rid, "code": code, "message": message}

    def _settled(self, rid: Any, future: asyncio.Future[Any]) -> Any:
        def outcome(f: asyncio.Future[Any]) -> dict[str, Any]:
            exc = f.exception()
            if exc is None:
                return {"id": rid, "code": 0, "message": "", "data": outcome_data(f.result())}
            if isinstance(exc, Refused):
                return {"id": rid, "code": exc.code, "message": exc.message}
            return {"id": rid, "code": -500, "message": "internal error"}

        if future.done():
            return outcome(future)
        answer: asyncio.Future[dict[str, Any]] = future.get_loop().create_future()

        def done(f: asyncio.Future[Any]) -> None:
            if not answer.done():
                answer.set_result(outcome(f))

        future.add_done_callback(done)
        return answer

    def _push(self, req: Request) -> Any:
        return execute(self.router, req, self.max_body)

    def on_message(self, frames: list[bytes], send: Send) -> None:
        """A ROUTER message: routing frames, then the request; answer on the same route."""
        if len(frames) < 2:
            return
        reply, wants = self.handle(frames[-1])
        if not wants:
            return
        route = frames[:-1]
        if isinstance(reply, asyncio.Future):
            reply.add_done_callback(lambda f: send([*route, _encode(f.result())]))
        else:
            send([*route, _encode(reply)])
