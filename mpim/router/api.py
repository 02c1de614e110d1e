"""The push API behind the HTTP server: goim logic's paths, parameters and JSON shapes.

Pure: :meth:`PushApi.handle` takes the method, path, raw query string and body
and returns a :class:`Reply`; the HTTP adapter (:mod:`mpim.router.http`) only
parses and writes bytes. Answers are ``{"code":0,"message":"","data":...}``; a
bad parameter is ``{"code":-400,"message":"<what is wrong>"}`` with HTTP 200, as
goim does. Lists are repeated parameters (``mids=1&mids=2``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from mpim.auth import check_room_id
from mpim.config import Config, parse_address
from mpim.router.core import Router

INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_TOP = 10000


class Reply(NamedTuple):
    status: int
    body: bytes
    allow: str = ""


class BadRequest(Exception):
    pass


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def ok(data: Any = None) -> Reply:
    return Reply(200, _json({"code": 0, "message": "", "data": data}))


def error(code: int, message: str, status: int = 200, allow: str = "") -> Reply:
    return Reply(status, _json({"code": code, "message": message}), allow)


OK_NULL = ok()


def _found(connections: int) -> Reply:
    """``ok({"connections": n})``, formatted directly (the push hot path)."""
    return Reply(200, b'{"code":0,"message":"","data":{"connections":%d}}' % connections)


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """``a=1&b=x&b=y`` -> ``{"a": ["1"], "b": ["x", "y"]}``; ``BadRequest`` if not UTF-8."""
    params: dict[str, list[str]] = {}
    if not raw:
        return params
    try:
        text = raw.decode()
        encoded = "%" in text or "+" in text
        for part in text.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            if encoded:
                name = unquote_plus(name, errors="strict")
                value = unquote_plus(value, errors="strict")
            values = params.get(name)
            if values is None:
                params[name] = [value]
            else:
                values.append(value)
    except UnicodeDecodeError:
        raise BadRequest("query string is not UTF-8") from None
    return params


def one(params: dict[str, list[str]], name: str, default: str | None = None) -> str:
    values = params.get(name)
    if not values or values[0] == "":
        if default is None:
            raise BadRequest(f"{name}: required")
        return default
    return values[0]


def integer(
    params: dict[str, list[str]], name: str, bounds: tuple[int, int], default: int | None = None
) -> int:
    text = one(params, name, None if default is None else str(default))
    return _int(name, text, bounds)


def _int(name: str, text: str, bounds: tuple[int, int]) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise BadRequest(f"{name}: {text[:40]!r} is not an integer") from None
    if not bounds[0] <= value <= bounds[1]:
        raise BadRequest(f"{name}: {value} is out of range [{bounds[0]}, {bounds[1]}]")
    return value


def many(params: dict[str, list[str]], name: str) -> list[str]:
    values = [v for v in params.get(name, ()) if v]
    if not values:
        raise BadRequest(f"{name}: at least one value is required (repeat the parameter)")
    return values


def room_id(typ: str, room: str) -> str:
    rid = f"{typ}://{room}"
    try:
        return check_room_id(rid)
    except ValueError as exc:
        raise BadRequest(f"room: {exc}") from None


Handler = Callable[[dict[str, list[str]], bytes], Reply]


class PushApi:
    def __init__(self, cfg: Config, router: Router) -> None:
        self.cfg = cfg
        self.router = router
        self.routes: dict[str, tuple[str, Handler]] = {
            "/goim/push/keys": ("POST", self.push_keys),
            "/goim/push/mids": ("POST", self.push_mids),
            "/goim/push/room": ("POST", self.push_room),
            "/goim/push/all": ("POST", self.push_all),
            "/goim/online/top": ("GET", self.online_top),
            "/goim/online/room": ("GET", self.online_room),
            "/goim/online/total": ("GET", self.online_total),
            "/goim/nodes/weighted": ("GET", self.nodes_weighted),
            "/mpim/session": ("GET", self.session),
            "/mpim/workers": ("GET", self.workers),
        }

    def handle(self, method: str, path: str, query: bytes, body: bytes) -> Reply:
        route = self.routes.get(path)
        if route is None:
            return error(-404, f"no such path: {path[:200]}", 404)
        allowed, handler = route
        if method != allowed:
            return error(-405, f"{path} takes {allowed}, not {method[:20]}", 405, allowed)
        try:
            return handler(parse_query(query), body)
        except BadRequest as exc:
            return error(-400, str(exc))

    # -- push ---------------------------------------------------------------------------------
    def push_keys(self, params: dict[str, list[str]], body: bytes) -> Reply:
        op = integer(params, "operation", INT32)
        return _found(self.router.push_keys(op, many(params, "keys"), body))

    def push_mids(self, params: dict[str, list[str]], body: bytes) -> Reply:
        op = integer(params, "operation", INT32)
        mids = [_int("mids", text, INT64) for text in many(params, "mids")]
        return _found(self.router.push_mids(op, mids, body))

    def push_room(self, params: dict[str, list[str]], body: bytes) -> Reply:
        op = integer(params, "operation", INT32)
        rid = room_id(one(params, "type"), one(params, "room"))
        self.router.push_room(op, rid, body)
        return OK_NULL

    def push_all(self, params: dict[str, list[str]], body: bytes) -> Reply:
        op = integer(params, "operation", INT32)
        speed = integer(params, "speed", (0, INT32[1]), 0)
        self.router.push_all(op, speed, body)
        return OK_NULL

    # -- online ---------------------------------------------------------------------------------
    def online_top(self, params: dict[str, list[str]], body: bytes) -> Reply:
        prefix = one(params, "type") + "://"
        limit = integer(params, "limit", (1, MAX_TOP))
        top = self.router.table.top_rooms(prefix, limit)
        return ok([{"room_id": rid[len(prefix) :], "count": n} for rid, n in top])

    def online_room(self, params: dict[str, list[str]], body: bytes) -> Reply:
        typ = one(params, "type")
        counts = self.router.table.room_count
        return ok({room: counts.get(f"{typ}://{room}", 0) for room in many(params, "rooms")})

    def online_total(self, params: dict[str, list[str]], body: bytes) -> Reply:
        table = self.router.table
        return ok({"ip_count": table.ip_total, "conn_count": len(table)})

    def nodes_weighted(self, params: dict[str, list[str]], body: bytes) -> Reply:
        cfg = self.cfg
        nc = cfg.nodes
        domain = nc.domain or cfg.server.name or socket.gethostname()
        platform = one(params, "platform", "")
        nodes = [domain] if platform == "web" or not nc.addresses else list(nc.addresses)
        return ok(
            {
                "domain": domain,
                "tcp_port": parse_address(cfg.tcp.bind[0])[1] if cfg.tcp.bind else 0,
                "ws_port": parse_address(cfg.websocket.bind[0])[1] if cfg.websocket.bind else 0,
                "wss_port": nc.wss_port,
                "heartbeat": int(cfg.protocol.heartbeat),
                "heartbeat_max": cfg.protocol.heartbeat_max,
                "nodes": nodes,
                "backoff": {
                    "max_delay": nc.backoff_max_delay,
                    "base_delay": nc.backoff_base_delay,
                    "factor": nc.backoff_factor,
                    "jitter": nc.backoff_jitter,
                },
            }
        )

    # -- mpim's own ---------------------------------------------------------------------------
    def session(self, params: dict[str, list[str]], body: bytes) -> Reply:
        """``?mid=N`` or ``?key=K``: where a user's connections (or one key) are."""
        table = self.router.table
        if params.get("key"):
            conn = table.by_key.get(one(params, "key"))
            conns = [conn] if conn is not None else []
        else:
            session = table.sessions.get(integer(params, "mid", INT64))
            conns = list(session.conns.values()) if session is not None else []
        return ok(
            [
                {"key": c.key, "mid": c.mid, "seq": c.seq, "worker": c.worker.id, "room": c.room, "ip": c.ip}
                for c in conns
            ]
        )

    def workers(self, params: dict[str, list[str]], body: bytes) -> Reply:
        now = self.router.now
        return ok(
            [
                {
                    "id": w.id,
                    "host": w.host,
                    "name": w.name,
                    "pid": w.pid,
                    "conns": len(w.conns),
                    "rooms": len(w.room_count),
                    "last_seen": round(now - w.last_seen, 3),
                }
                for w in self.router.table.workers.values()
            ]
        )
