"""The push API behind the HTTP server: goim logic's paths, parameters and JSON shapes.

Pure: :meth:`PushApi.handle` takes the method, path, raw query string and body
and returns a :class:`Reply` — or, for a room or broadcast push, a future that
resolves to one once the workers confirmed it (see :mod:`mpim.router.core`). The
HTTP adapter (:mod:`mpim.router.http`) only parses and writes bytes. Answers are
``{"code":0,"message":"","data":...}``; a bad parameter is
``{"code":-400,"message":"<what is wrong>"}`` with HTTP 200, as goim does. A push
the router cannot promise to deliver is ``-503`` (HTTP 503: stopping, restarting,
bus down) or ``-504`` (HTTP 504: not confirmed in time). Lists are repeated
parameters (``mids=1&mids=2``).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from mpim.config import Config, parse_address
from mpim.limits import INT32, INT64, BadRequest, check_room_id, parse_int
from mpim.router.core import Refused, Router

MAX_TOP = 10000
MAX_PARAMS = 10000


class Reply(NamedTuple):
    status: int
    body: bytes
    allow: str = ""


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def ok(data: Any = None) -> Reply:
    return Reply(200, _json({"code": 0, "message": "", "data": data}))


def error(code: int, message: str, status: int = 200, allow: str = "") -> Reply:
    return Reply(status, _json({"code": code, "message": message}), allow)


def refused(exc: Refused) -> Reply:
    return error(exc.code, exc.message, -exc.code if exc.code in (-503, -504) else 200)


OK_NULL = ok()
Answer = Reply | asyncio.Future[Reply]


def _found(connections: int) -> Reply:
    """``ok({"connections": n})``, formatted directly (the push hot path)."""
    return Reply(200, b'{"code":0,"message":"","data":{"connections":%d}}' % connections)


def settled(future: asyncio.Future[None]) -> Answer:
    """A confirmed push as an answer: at once if already known, else a future answer."""
    if future.done():
        return _outcome(future)
    answer: asyncio.Future[Reply] = future.get_loop().create_future()

    def done(f: asyncio.Future[None]) -> None:
        if not answer.done():
            answer.set_result(_outcome(f))

    future.add_done_callback(done)
    return answer


def _outcome(future: asyncio.Future[None]) -> Reply:
    exc = future.exception()
    if exc is None:
        return OK_NULL
    return refused(exc) if isinstance(exc, Refused) else error(-500, "internal error")


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """``a=1&b=x&b=y`` -> ``{"a": ["1"], "b": ["x", "y"]}``; ``BadRequest`` if not UTF-8."""
    if not raw:
        return {}
    try:
        return parse_qs(raw.decode(), keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMS)
    except UnicodeDecodeError:
        raise BadRequest("query string is not UTF-8") from None
    except ValueError as exc:
        raise BadRequest(f"query string: {exc}") from None


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
    return parse_int(name, one(params, name, None if default is None else str(default)), bounds)


def many(params: dict[str, list[str]], name: str) -> list[str]:
    values = [v for v in params.get(name, ()) if v]
    if not values:
        raise BadRequest(f"{name}: at least one value is required (repeat the parameter)")
    return values


def room_id(typ: str, room: str) -> str:
    try:
        return check_room_id(f"{typ}://{room}")
    except ValueError as exc:
        raise BadRequest(f"room: {exc}") from None


Handler = Callable[[dict[str, list[str]], bytes], Answer]


def wss_listening(cfg: Config) -> int:
    """The port of the first WSS listener, or 0 when none listens (no certificate, no tls_bind)."""
    if cfg.tls.cert_file and cfg.websocket.tls_bind:
        return parse_address(cfg.websocket.tls_bind[0])[1]
    return 0


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

    def handle(self, method: str, path: str, query: bytes, body: bytes) -> Answer:
        route = self.routes.get(path)
        if route is None:
            return error(-404, f"no such path: {path[:200]}", 404)
        allowed, handler = route
        if method != allowed:
            return error(-405, f"{path} takes {allowed}, not {method[:20]}", 405, allowed)
        try:
            return handler(parse_query(query), body)
        except BadRequest as exc:
            return error(exc.code, str(exc))
        except Refused as exc:
            return refused(exc)

    # -- push ---------------------------------------------------------------------------------
    def push_keys(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        return _found(self.router.push_keys(op, many(params, "keys"), body))

    def push_mids(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        mids = [parse_int("mids", text, INT64) for text in many(params, "mids")]
        return _found(self.router.push_mids(op, mids, body))

    def push_room(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        rid = room_id(one(params, "type"), one(params, "room"))
        return settled(self.router.push_room(op, rid, body))

    def push_all(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        speed = integer(params, "speed", (0, INT32[1]), 0)
        return settled(self.router.push_all(op, speed, body))

    # -- online ---------------------------------------------------------------------------------
    def online_top(self, params: dict[str, list[str]], body: bytes) -> Answer:
        prefix = one(params, "type") + "://"
        limit = integer(params, "limit", (1, MAX_TOP))
        top = self.router.store.top_rooms(prefix, limit)
        return ok([{"room_id": rid[len(prefix) :], "count": n} for rid, n in top])

    def online_room(self, params: dict[str, list[str]], body: bytes) -> Answer:
        typ = one(params, "type")
        online = self.router.store.online
        return ok({room: online(f"{typ}://{room}") for room in many(params, "rooms")})

    def online_total(self, params: dict[str, list[str]], body: bytes) -> Answer:
        store = self.router.store
        return ok({"ip_count": store.ip_total, "conn_count": len(store)})

    def nodes_weighted(self, params: dict[str, list[str]], body: bytes) -> Answer:
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
                "wss_port": nc.wss_port or wss_listening(cfg),
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
    def session(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """``?mid=N`` or ``?key=K``: where a user's connections (or one key) are."""
        store = self.router.store
        if params.get("key"):
            conn = store.conn_of(one(params, "key"))
            conns = [conn] if conn is not None else []
        else:
            conns = store.conns_of(integer(params, "mid", INT64))
        return ok(
            [
                {"key": c.key, "mid": c.mid, "seq": c.seq, "worker": c.worker.id, "room": c.room, "ip": c.ip}
                for c in conns
            ]
        )

    def workers(self, params: dict[str, list[str]], body: bytes) -> Answer:
        return ok(self.router.workers())
