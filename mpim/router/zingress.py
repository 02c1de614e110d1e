"""The ZeroMQ push ingress: a ROUTER socket taking msgpack requests.

A request is one frame (after the routing frames of a DEALER or REQ peer)
holding a msgpack map::

    {"kind": "keys", "op": 1000, "keys": ["k1", "k2"], "body": b"..."}
    {"kind": "mids", "op": 1000, "mids": [1, 2], "body": b"..."}
    {"kind": "room", "op": 1000, "room": "live://1000", "body": b"..."}
    {"kind": "all",  "op": 1000, "speed": 0, "body": b"..."}

plus optional ``"id"`` (any value, echoed in the reply) and ``"reply": false``
(fire and forget: no answer is sent). ``body`` may be bytes or a UTF-8 string.
The reply is one msgpack map ``{"id": ..., "code": 0, "message": "", "data": ...}``
with the HTTP API's codes: -400 for a malformed request, -413 for a body over
``[http] max_body``; ``data`` is ``{"connections": n}`` for keys and mids.
"""

from __future__ import annotations

import logging
from typing import Any

from mpim import bus
from mpim.auth import check_room_id
from mpim.router.api import INT32, INT64
from mpim.router.core import Router

log = logging.getLogger("mpim.ingress")

KINDS = ("keys", "mids", "room", "all")


class BadRequest(Exception):
    def __init__(self, message: str, code: int = -400) -> None:
        super().__init__(message)
        self.code = code


def _int(req: dict[str, Any], name: str, bounds: tuple[int, int], default: int | None = None) -> int:
    value = req.get(name, default)
    if value is None:
        raise BadRequest(f"{name}: required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name}: expected an integer, got {type(value).__name__}")
    if not bounds[0] <= value <= bounds[1]:
        raise BadRequest(f"{name}: {value} is out of range [{bounds[0]}, {bounds[1]}]")
    return value


def _list(req: dict[str, Any], name: str, tp: type) -> list[Any]:
    values = req.get(name)
    if not isinstance(values, list) or not values:
        raise BadRequest(f"{name}: expected a non-empty list")
    for v in values:
        if not isinstance(v, tp) or isinstance(v, bool):
            raise BadRequest(f"{name}: {v!r} is not {'a string' if tp is str else 'an integer'}")
    return values


class Ingress:
    def __init__(self, router: Router, max_body: int) -> None:
        self.router = router
        self.max_body = max_body
        self.requests = 0
        self.refused = 0

    def handle(self, payload: bytes) -> tuple[dict[str, Any], bool]:
        """One request -> (reply, whether the peer wants it)."""
        self.requests += 1
        req: Any = None
        try:
            req = bus.unpack(payload)
            if not isinstance(req, dict):
                raise BadRequest(f"request must be a msgpack map, not {type(req).__name__}")
            data = self._push(req)
            reply: dict[str, Any] = {"id": req.get("id"), "code": 0, "message": "", "data": data}
        except (BadRequest, ValueError) as exc:
            self.refused += 1
            code = exc.code if isinstance(exc, BadRequest) else -400
            log.info("refusing a ZeroMQ push (%d bytes): %s", len(payload), exc)
            rid = req.get("id") if isinstance(req, dict) else None
            reply = {"id": rid, "code": code, "message": str(exc)}
        wants = not (isinstance(req, dict) and req.get("reply") is False)
        return reply, wants

    def _push(self, req: dict[str, Any]) -> Any:
        kind = req.get("kind")
        if kind not in KINDS:
            raise BadRequest(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        op = _int(req, "op", INT32)
        body = req.get("body", b"")
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            raise BadRequest(f"body: expected bytes or a string, got {type(body).__name__}")
        if len(body) > self.max_body:
            raise BadRequest(f"body of {len(body)} bytes is over the {self.max_body}-byte limit", -413)
        router = self.router
        if kind == "keys":
            return {"connections": router.push_keys(op, _list(req, "keys", str), body)}
        if kind == "mids":
            mids = _list(req, "mids", int)
            if any(not INT64[0] <= m <= INT64[1] for m in mids):
                raise BadRequest("mids: out of the int64 range")
            return {"connections": router.push_mids(op, mids, body)}
        if kind == "room":
            room = req.get("room")
            if not isinstance(room, str) or not room:
                raise BadRequest("room: expected a room id such as 'live://1000'")
            try:
                check_room_id(room)
            except ValueError as exc:
                raise BadRequest(f"room: {exc}") from None
            router.push_room(op, room, body)
            return None
        router.push_all(op, _int(req, "speed", (0, INT32[1]), 0), body)
        return None

    def on_message(self, frames: list[bytes], send: Any) -> None:
        """A ROUTER message: routing frames, then the request; answer on the same route."""
        if len(frames) < 2:
            return
        reply, wants = self.handle(frames[-1])
        if wants:
            send([*frames[:-1], bus.pack(reply)])
