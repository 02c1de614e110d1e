"""The push API behind the HTTP server: goim logic's paths, parameters and JSON shapes.

Pure: :meth:`PushApi.handle` takes the method, path, raw query string and body
and returns a :class:`Reply` — or, for a room or broadcast push, a future that
resolves to one once the workers confirmed it (see :mod:`mpim.router.core`). The
HTTP adapter (:mod:`mpim.router.http`) only parses and writes bytes. Answers are
``{"code":0,"message":"","data":...}``; a bad parameter is
``{"code":-400,"message":"<what is wrong>"}`` with HTTP 200, as goim does. A push
the router cannot promise to deliver is ``-503`` (HTTP 503: stopping, restarting,
bus down) or ``-504`` (HTTP 504: not confirmed in time). Lists are repeated
parameters (``mids=1&mids=2``). A mid is a user id (1 .. 2**63 - 1), and one push
names at most ``[router] max_targets`` distinct mids or keys (:mod:`mpim.router.targets`).
Every -400 is logged, one INFO line per request.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import msgspec

from mpim.config import Config, parse_address
from mpim.limits import INT32, BadRequest, check_room_id, parse_int
from mpim.router import targets
from mpim.router.core import Refused, Router
from mpim.router.sse import EventStream
from mpim.router.streams import ChatError

log = logging.getLogger("mpim.http")

MAX_TOP = 10000
MAX_PAGE = 1000
MAX_PARAMS = 10000


JSON = "application/json"


class Reply(NamedTuple):
    status: int
    body: bytes
    allow: str = ""
    content_type: str = JSON


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def ok(data: Any = None) -> Reply:
    return Reply(200, _json({"code": 0, "message": "", "data": data}))


def error(code: int, message: str, status: int = 200, allow: str = "") -> Reply:
    return Reply(status, _json({"code": code, "message": message}), allow)


def refused(exc: Refused) -> Reply:
    return error(exc.code, exc.message, -exc.code if exc.code in (-503, -504) else 200)


OK_NULL = ok()
# A reply now, one later (a push waiting for the workers), or a stream of events (the console).
Answer = Reply | asyncio.Future[Reply] | EventStream


def _found(connections: int) -> Reply:
    """``ok({"connections": n})``, formatted directly (the push hot path)."""
    return Reply(200, b'{"code":0,"message":"","data":{"connections":%d}}' % connections)


def settled(future: asyncio.Future[Any], shape: Callable[[Any], Reply] = lambda _: OK_NULL) -> Answer:
    """A push that completes later as an answer: at once if already known, else a future answer.

    ``shape`` makes the ok answer from the future's result."""

    def outcome(f: asyncio.Future[Any]) -> Reply:
        exc = f.exception()
        if exc is None:
            return shape(f.result())
        if isinstance(exc, Refused):
            return refused(exc)
        if isinstance(exc, ChatError):
            return error(exc.code, exc.message)
        return error(-500, "internal error")

    if future.done():
        return outcome(future)
    answer: asyncio.Future[Reply] = future.get_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        if not answer.done():
            answer.set_result(outcome(f))

    future.add_done_callback(done)
    return answer


def _stored(result: tuple[int, dict[int, int]]) -> Reply:
    """goim's ``{"connections": n}`` and, beside it, each user's stream seq: ``"seqs": {"<mid>": seq}``."""
    connections, seqs = result
    if not seqs:
        return _found(connections)
    listed = ",".join(f'"{mid}":{seq}' for mid, seq in seqs.items())
    return Reply(
        200, b'{"code":0,"message":"","data":{"connections":%d,"seqs":{%s}}}' % (connections, listed.encode())
    )


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """``a=1&b=x&b=y`` -> ``{"a": ["1"], "b": ["x", "y"]}``; ``BadRequest`` if not UTF-8."""
    if not raw:
        return {}
    if b"%" not in raw and b"+" not in raw and raw.isascii():  # nothing to unquote: split it here
        parts = raw.decode().split("&")
        if len(parts) > MAX_PARAMS:
            raise BadRequest("query string: Max number of fields exceeded")
        params: dict[str, list[str]] = {}
        for part in parts:
            if part:
                name, _, value = part.partition("=")
                params.setdefault(name, []).append(value)
        return params
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


def user(params: dict[str, list[str]]) -> int:
    """The ``mid`` parameter: a user id (1 .. 2**63 - 1)."""
    return targets.parse_mid(one(params, "mid"), "mid")


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
            "/mpim/inbox": ("GET", self.inbox),
            "/mpim/stats": ("GET", self.stats),
            "/mpim/push": ("POST", self.push_batch),
            "/mpim/cursors": ("GET", self.cursors),
        }
        self.accept = b""  # the Accept header of the request being handled (the /metrics format)

    def add_routes(self, routes: dict[str, tuple[str, Handler]]) -> None:
        """More paths (metrics, console), served and protected like the push API's own."""
        self.routes.update(routes)

    def handle(self, method: str, path: str, query: bytes, body: bytes, accept: bytes = b"") -> Answer:
        self.accept = accept
        route = self.routes.get(path)
        if route is None:
            return error(-404, f"no such path: {path[:200]}", 404)
        allowed, handler = route
        if method != allowed:
            return error(-405, f"{path} takes {allowed}, not {method[:20]}", 405, allowed)
        try:
            return handler(parse_query(query), body)
        except BadRequest as exc:
            log.info("refusing %s %s: %s", method, path, exc)
            return error(exc.code, str(exc))
        except Refused as exc:
            return refused(exc)

    # -- push ---------------------------------------------------------------------------------
    def push_keys(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        keys = many(params, "keys")
        targets.check_keys(keys, self.cfg.router.max_targets)
        found = self.router.push.keys(op, keys, body)
        return _found(found) if isinstance(found, int) else settled(found, _found)

    def push_mids(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        mids = [targets.parse_mid(text) for text in many(params, "mids")]
        targets.check_count("mids", mids, self.cfg.router.max_targets)
        return settled(self.router.push.mids(op, mids, body), _stored)

    def push_room(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        rid = room_id(one(params, "type"), one(params, "room"))
        return settled(self.router.push.room(op, rid, body))

    def push_all(self, params: dict[str, list[str]], body: bytes) -> Answer:
        op = integer(params, "operation", INT32)
        speed = integer(params, "speed", (0, INT32[1]), 0)
        return settled(self.router.push.all(op, speed, body))

    # -- online ---------------------------------------------------------------------------------
    # (the fabric's numbers: this host's, or with several hosts the whole cluster's from Redis)
    def online_top(self, params: dict[str, list[str]], body: bytes) -> Answer:
        prefix = one(params, "type") + "://"
        limit = integer(params, "limit", (1, MAX_TOP))

        def shape(top: list[tuple[str, int]]) -> Reply:
            return ok([{"room_id": rid[len(prefix) :], "count": n} for rid, n in top])

        return self._fabric(self.router.fabric.top_rooms(prefix, limit), shape)

    def online_room(self, params: dict[str, list[str]], body: bytes) -> Answer:
        typ = one(params, "type")
        rooms = {room: f"{typ}://{room}" for room in many(params, "rooms")}

        def shape(counts: dict[str, int]) -> Reply:
            return ok({room: counts.get(rid, 0) for room, rid in rooms.items()})

        return self._fabric(self.router.fabric.online_rooms(list(rooms.values())), shape)

    def online_total(self, params: dict[str, list[str]], body: bytes) -> Answer:
        return self._fabric(
            self.router.fabric.totals(), lambda t: ok({"ip_count": t.ip_count, "conn_count": t.conn_count})
        )

    def _fabric(self, answer: Any, shape: Callable[[Any], Reply]) -> Answer:
        """The fabric's answer, known now or once Redis answered (-503 if it cannot)."""
        if not inspect.isawaitable(answer):
            return shape(answer)

        async def ask() -> Reply:
            from mpim.cluster import ClusterError

            try:
                return shape(await answer)
            except ClusterError as exc:
                return error(-503, f"the cluster's numbers are unavailable: {exc}", 503)

        return settled(self.router.loop.create_task(ask()), lambda reply: reply)

    def nodes_weighted(self, params: dict[str, list[str]], body: bytes) -> Answer:
        cfg = self.cfg
        nc = cfg.nodes
        domain = nc.domain or cfg.server.name or socket.gethostname()
        platform = one(params, "platform", "")
        nodes = [domain] if platform == "web" or not nc.addresses else list(nc.addresses)
        answer = self._nodes(domain, nodes)
        hosts = self.router.fabric.hosts()
        if hosts is None:  # this host is the only one
            return ok(answer)

        def shape(hosts: list[Any]) -> Reply:
            """Every live host, the least loaded first (goim's balancer idea), with its weight and count."""
            ranked = sorted(hosts, key=lambda h: (h.info.conns / max(1, h.info.weight), h.name))
            listed = []
            for host in ranked:
                addresses = list(host.info.addresses) if platform != "web" and host.info.addresses else []
                listed += addresses or [host.info.domain or host.name]
            return ok(
                {
                    **answer,
                    "nodes": listed or nodes,
                    "hosts": [
                        {
                            "name": h.name,
                            "domain": h.info.domain,
                            "weight": h.info.weight,
                            "conns": h.info.conns,
                        }
                        for h in ranked
                    ],
                }
            )

        return self._fabric(hosts, shape)

    def _nodes(self, domain: str, nodes: list[str]) -> dict[str, Any]:
        cfg = self.cfg
        nc = cfg.nodes
        return {
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

    # -- mpim's own ---------------------------------------------------------------------------
    def session(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """``?mid=N`` or ``?key=K``: where a user's connections (or one key) are."""
        store = self.router.store
        key = one(params, "key") if params.get("key") else ""
        mid = 0 if key else user(params)
        elsewhere = self.router.fabric.sessions(key, mid)
        if elsewhere is not None:  # (router shards: the rows of every shard)
            return self._fabric(elsewhere, lambda rows: ok([msgspec.structs.asdict(r) for r in rows]))
        if key:
            conn = store.conn_of(key)
            conns = [conn] if conn is not None else []
        else:
            conns = store.conns_of(mid)
        return ok(
            [
                {"key": c.key, "mid": c.mid, "seq": c.seq, "worker": c.worker.id, "room": c.room, "ip": c.ip}
                for c in conns
            ]
        )

    def workers(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """This host's workers in detail; with several hosts also one row per other live host."""
        rows = self.router.workers.view()
        fabric = self.router.fabric
        counts = fabric.worker_conns()
        if counts is not None:  # (router shards: each holds its own users' connections)

            def summed(counts: dict[str, int]) -> Reply:
                return ok([{**row, "conns": counts.get(row["id"], row["conns"])} for row in rows])

            return self._fabric(counts, summed)
        hosts = fabric.hosts()
        if hosts is None:
            return ok(rows)

        def shape(hosts: list[Any]) -> Reply:
            others = [  # another host: one row for all its workers (pid 0), its numbers from Redis
                {
                    "id": f"{h.name}/*",
                    "host": h.name,
                    "name": "*",
                    "pid": 0,
                    "conns": h.info.conns,
                    "rooms": 0,
                    "last_seen": 0.0,
                }
                for h in hosts
                if h.name != fabric.name
            ]
            return ok(rows + others)

        return self._fabric(hosts, shape)

    def push_batch(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """Many pushes in one request (a JSON array of the ZeroMQ ingress's requests)."""
        from mpim.router import batch

        items = batch.parse(body, self.cfg.router.max_targets)
        task = self.router.loop.create_task(batch.push_batch(self.router, items, self.cfg.http.max_body))
        return settled(task, ok)

    def stats(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """The router's own counters: records, resyncs, the user streams, the inbox store and the
        links to the workers (frames written and the records in them, over the links now open)."""
        router = self.router
        inbox = getattr(router.streams.inbox, "stats", None)
        links = {
            "frames": sum(getattr(link, "frames_out", 0) for link in router.workers.peers),
            "records": sum(getattr(link, "records_out", 0) for link in router.workers.peers),
        }
        return ok(
            {
                "router": dict(router.stats),
                "streams": router.streams.stats,
                "inbox": inbox or {},
                "links": links,
            }
        )

    def inbox(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """``?mid=N&after=S&limit=L``: a user's stored stream after seq S (default 0, 100 at most)."""
        mid = user(params)
        after = integer(params, "after", (0, INT32[1]), 0)
        limit = integer(params, "limit", (1, MAX_PAGE), 100)
        task = self.router.loop.create_task(self.router.streams.page(mid, after, limit))
        return settled(task, ok)

    def cursors(self, params: dict[str, list[str]], body: bytes) -> Answer:
        """``?mid=N``: the acked cursor of each of the user's devices (device = connection key)."""
        task = self.router.loop.create_task(self.router.streams.cursors(user(params)))
        return settled(task, ok)
