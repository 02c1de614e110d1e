"""``GET /console``: a live page of the host, fed by Server-Sent Events from the router.

The router ticks the console once a second: it adds up the workers' counters
(:class:`~mpim.router.metrics.WorkerTotals`), keeps the last minutes of pushes/s
and deliveries/s, turns what changed into warnings (slow consumers cut,
connections refused over the limit, pushes refused or not confirmed, workers
that left or came back, bus down, reloads and restarts), and sends every open
stream a snapshot: connections in total, per worker and per host, the fullest
rooms, the rates, new warnings. A stream starts with the history, so a page
opened late still draws the last minutes.

The page is one HTML document with its script and style inline (so a protected
``/console`` needs the key once, and no CDN is needed); it sends the API key, if
any, as ``X-API-Key`` on its event stream and pushes. Routes go through
:meth:`~mpim.router.api.PushApi.add_routes`, so they are checked like the push API.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from mpim.metrics import procfs
from mpim.router.api import Answer, Handler, PushApi, Reply, error, ok, settled
from mpim.router.metrics import Exposition, ShardMetrics, Sources
from mpim.router.sse import EventStream

if TYPE_CHECKING:
    from mpim.master.statusfile import MasterStatus

log = logging.getLogger("mpim.console")

MAX_STREAMS = 16  # open console streams; more are refused with 503
HISTORY = 300  # seconds of rates kept (5 minutes at one point per tick)
MAX_EVENTS = 200
TOP_ROOMS = 10
DELIVERED = ("room_deliveries", "keys_deliveries", "all_deliveries")

# (worker counter, level, message with {n}) -- a change in one of these is worth a line on the page
WORKER_WARNINGS = (
    ("slow_cut", "warning", "{n} slow consumer(s) cut"),
    ("refused", "warning", "{n} connection(s) refused over the connection limit"),
    ("rejected", "warning", "{n} connection(s) closed for bad input"),
    ("register_timeout", "warning", "{n} client(s) not confirmed by the router in time"),
    ("link_dropped_reports", "warning", "{n} session report(s) lost while the router link was down"),
    ("limit_conns", "warning", "{n} connection(s) refused by the per-IP connection limit"),
    ("limit_rate", "warning", "{n} connection(s) refused by the per-IP rate limit"),
    ("bans", "warning", "{n} client IP(s) banned after repeated auth failures"),
    ("ack_cut", "warning", "{n} ack client(s) cut: no ack in time"),
    ("rate_cut", "warning", "{n} client(s) cut over the upstream rate"),
    ("replay_cut", "warning", "{n} client(s) cut for a replayed or skipped frame seq"),
    ("auth_denied", "warning", "{n} auth(s) denied by the router (the key belongs to another user)"),
    ("auth_fail", "info", "{n} auth failure(s)"),
    ("tls_failed", "info", "{n} TLS handshake(s) failed"),
    ("proxy_refused", "info", "{n} PROXY protocol header(s) refused"),
    ("kicked", "info", "{n} connection(s) kicked by a newer one with the same key"),
)
ROUTER_WARNINGS = (
    ("refused", "warning", "{n} push(es) refused (-503)"),
    ("push_timeouts", "warning", "{n} room/broadcast push(es) not confirmed in time (-504)"),
    ("ghost_workers", "warning", "{n} worker(s) dropped as gone or silent"),
    ("resyncs", "info", "asked workers for their sessions again ({n})"),
)
MASTER_EVENTS = (
    ("reload_done", "info", "reload done: generation {generation} serving"),
    ("reload_abandoned", "warning", "reload abandoned ({n}); the old generation keeps serving"),
    ("reload_refused", "warning", "reload refused: invalid config ({n})"),
    ("restart_worker", "warning", "{n} worker(s) died and were restarted"),
    ("restart_router", "warning", "the router was restarted ({n})"),
    ("restart_bus", "warning", "the bus died and was restarted ({n})"),
    ("hung_killed", "warning", "{n} hung worker(s) killed"),
)


def _page() -> bytes:
    """index.html with its style and scripts put inline (one request loads everything)."""
    static = resources.files("mpim.console").joinpath("static")
    html = static.joinpath("index.html").read_text()
    for marker, name in (("/*STYLE*/", "console.css"), ("/*CHART*/", "chart.js"), ("/*APP*/", "console.js")):
        html = html.replace(marker, static.joinpath(name).read_text())
    return html.encode()


class Console:
    def __init__(self, sources: Sources, host_pushes: Callable[[], Awaitable[int]] | None = None) -> None:
        self.sources = sources
        self.host_pushes = host_pushes  # (router shards: the host's, summed over the shards)
        self._host_seen = 0  # the host's pushes as last summed
        self._summing: asyncio.Future[int] | None = None
        self.exposition: Exposition | None = None  # (set by install)
        self.router = sources.router
        self.totals = sources.totals
        self.streams: set[EventStream] = set()
        self.history: collections.deque[list[float]] = collections.deque(maxlen=HISTORY)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_EVENTS)
        self._event_id = 0
        self._page: bytes | None = None
        self._last_tick: float | None = None
        self._pushes = 0
        self._worker_seen: dict[tuple[str, str], collections.Counter[str]] = {}
        self._router_seen = dict(self.router.stats)
        self._master_seen: dict[str, int] | None = None
        self._peer_ids: set[str] = set()
        self._bus_up: bool | None = None
        self._redis_errors = 0
        self._reports: dict[Any, tuple[dict[str, int], float]] = {}  # peer -> (stats, deliveries/s)
        self._cpu: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, when)
        self._cpu_now: dict[int, float] = {}  # pid -> % of one core over the last tick
        self.rates = {"pushes": 0.0, "deliveries": 0.0}

    def routes(self) -> dict[str, tuple[str, Handler]]:
        return {
            "/console": ("GET", self.page),
            "/console/events": ("GET", self.open_stream),
            "/console/snapshot": ("GET", self.snapshot_route),
        }

    # -- routes --------------------------------------------------------------------------------
    def page(self, params: dict[str, list[str]], body: bytes) -> Answer:
        if self._page is None:
            self._page = _page()
        return Reply(200, self._page, content_type="text/html; charset=utf-8")

    def open_stream(self, params: dict[str, list[str]], body: bytes) -> Answer:
        if len(self.streams) >= MAX_STREAMS:
            log.info("refusing a console stream: %d are open", len(self.streams))
            return error(-503, f"too many console streams ({MAX_STREAMS} open)", 503)
        stream = EventStream(self._opened, self.streams.discard)
        self.streams.add(stream)
        return stream

    def snapshot_route(self, params: dict[str, list[str]], body: bytes) -> Answer:
        return ok(self.snapshot([]))

    def _opened(self, stream: EventStream) -> None:
        hello = {"history": list(self.history), "events": list(self.events), "snapshot": self.snapshot([])}
        stream.send("hello", json.dumps(hello, separators=(",", ":")))

    # -- the tick --------------------------------------------------------------------------------
    def tick(self) -> None:
        """Once a second: rates, warnings, and a snapshot to every open stream."""
        now = self.router.loop.time()
        self.totals.sync()
        counters = self.totals.counters()
        self._rates(now)
        # each process's CPU only while someone watches (five /proc reads a second otherwise)
        self._cpu_now = self._cpu_percent(self._master()) if self.streams else {}
        last = self._event_id
        self._watch(counters)
        fresh = [e for e in self.events if e["id"] > last]
        if self.streams:
            data = json.dumps(self.snapshot(fresh), separators=(",", ":"))
            for stream in list(self.streams):
                stream.send("snapshot", data)

    def _pushes_now(self) -> int:
        """The pushes taken in so far: this router's, or (shards) the host's as of the last tick."""
        if self.host_pushes is None:
            return sum(self.router.push.counts.values())
        if self._summing is None:
            summing = self._summing = asyncio.ensure_future(self.host_pushes(), loop=self.router.loop)

            def summed(done: asyncio.Future[int]) -> None:
                self._summing = None
                if not done.cancelled() and done.exception() is None:
                    self._host_seen = done.result()

            summing.add_done_callback(summed)
        return self._host_seen

    def _rates(self, now: float) -> None:
        pushes = self._pushes_now()
        if self._last_tick is not None and now > self._last_tick:
            # (never below 0: a router shard that restarted counts from 0 again)
            self.rates["pushes"] = max(0, pushes - self._pushes) / (now - self._last_tick)
        self._last_tick, self._pushes = now, pushes
        # deliveries/s from each worker's own two latest reports (their clock, so no aliasing)
        live = {peer for _, peer in self.totals.live()}
        for peer in [p for p in self._reports if p not in live]:
            del self._reports[peer]
        for peer in live:
            current = peer.stats
            seen = self._reports.get(peer)
            if seen is None:
                self._reports[peer] = (current, 0.0)
            elif seen[0] is not current and "now_ms" in current:
                old = seen[0]
                span = (current["now_ms"] - old.get("now_ms", 0)) / 1000
                delta = sum(current.get(k, 0) - old.get(k, 0) for k in DELIVERED)
                self._reports[peer] = (current, delta / span if span > 0 and old else 0.0)
        self.rates["deliveries"] = sum(rate for _, rate in self._reports.values())
        self.history.append(
            [round(time.time(), 3), round(self.rates["pushes"], 1), round(self.rates["deliveries"], 1)]
        )

    def _event(self, level: str, text: str) -> None:
        self._event_id += 1
        self.events.append({"id": self._event_id, "t": round(time.time(), 3), "level": level, "text": text})
        (log.warning if level == "warning" else log.info)("console: %s", text)

    def _watch(self, counters: dict[tuple[str, str], collections.Counter[str]]) -> None:
        """Turn what changed since the last tick into events (nothing on the first tick)."""
        for slot, stats in counters.items():
            seen = self._worker_seen.get(slot)
            self._worker_seen[slot] = collections.Counter(stats)
            if seen is None:
                continue
            for key, level, text in WORKER_WARNINGS:
                n = stats[key] - seen[key]
                if n > 0:
                    self._event(level, f"worker {slot[0]}/{slot[1]}: " + text.format(n=n))
        stats = self.router.stats
        for key, level, text in ROUTER_WARNINGS:
            n = stats[key] - self._router_seen.get(key, 0)
            if n > 0:
                self._event(level, text.format(n=n))
        self._router_seen = dict(stats)
        errors = self.router.fabric.stats.get("errors", 0)
        if errors > self._redis_errors:
            self._event(
                "warning", f"Redis failed {errors - self._redis_errors} time(s): this host serves alone"
            )
        self._redis_errors = errors
        ids = {peer.id for _, peer in self.totals.live()}
        if self._peer_ids or ids:
            for wid in sorted(ids - self._peer_ids):
                self._event("info", f"worker {wid} linked")
            for wid in sorted(self._peer_ids - ids):
                self._event("info", f"worker {wid} left")
        self._peer_ids = ids
        busport = self.sources.busport
        if busport is not None:
            up = bool(busport.connected)
            if self._bus_up is not None and up != self._bus_up:
                self._event("info" if up else "warning", "bus connected" if up else "bus connection lost")
            self._bus_up = up
        self._watch_master()

    def _watch_master(self) -> None:
        status = self._master()
        if status is None:
            return
        seen, self._master_seen = self._master_seen, dict(status.counts)
        if seen is None:
            return
        for key, level, text in MASTER_EVENTS:
            n = status.counts.get(key, 0) - seen.get(key, 0)
            if n > 0:
                self._event(level, text.format(n=n, generation=status.generation))

    def _master(self) -> MasterStatus | None:
        reader = self.sources.master
        return reader.read() if reader is not None else None

    # -- the snapshot ----------------------------------------------------------------------------
    def snapshot(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        self.totals.sync()
        router = self.router
        store = router.store
        status = self._master()
        cpu = self._cpu_now
        workers = []
        hosts: dict[str, dict[str, int]] = {}
        for (host, slot), peer in sorted(self.totals.live(), key=lambda item: item[0]):
            info = peer.info
            if info is None:
                continue
            conns = len(info.conns)
            stats = peer.stats
            workers.append(
                {
                    "id": info.id,
                    "host": host,
                    "slot": slot,
                    "pid": info.pid,
                    "conns": conns,
                    "tcp": stats.get("conns_tcp", 0),
                    "ws": stats.get("conns_ws", 0),
                    "rooms": len(info.room_count),
                    "draining": peer.draining,
                    "bus": peer.bus_ready,
                    "cpu": cpu.get(info.pid),
                }
            )
            row = hosts.setdefault(host, {"conns": 0, "workers": 0})
            row["conns"] += conns
            row["workers"] += 1
        processes = []
        if status is not None:
            processes.append({"role": "master", "pid": status.pid, "cpu": cpu.get(status.pid)})
            processes.extend(
                {
                    "role": f"{c.kind} {c.slot}"
                    if c.kind == "worker" or (c.kind == "router" and status.shards > 1)
                    else c.kind,
                    "pid": c.pid,
                    "cpu": cpu.get(c.pid),
                }
                for c in status.children
            )
        rooms = set().union(*(w.room_count for w in store.workers.values()))
        return {
            "t": round(time.time(), 3),
            "host": router.workers.host,
            "total": len(store),
            "ips": store.ip_total,
            "workers": workers,
            "hosts": [{"host": h, **row} for h, row in sorted(hosts.items())],
            "rooms": [{"room": r, "count": n} for r, n in store.top_rooms("", TOP_ROOMS)],
            "room_total": len(rooms),
            "rates": {k: round(v, 1) for k, v in self.rates.items()},
            "point": self.history[-1] if self.history else None,
            "bus": bool(getattr(self.sources.busport, "connected", True)),
            "generation": status.generation if status is not None else None,
            "processes": processes,
            "events": events,
        }

    def _cpu_percent(self, status: MasterStatus | None) -> dict[int, float]:
        """CPU use of each process of the host since the last call, in % of one core."""
        if status is None:
            return {}
        now = time.monotonic()
        out: dict[int, float] = {}
        pids = [status.pid, *(c.pid for c in status.children)]
        for pid in pids:
            figures = procfs.read(pid)
            if figures is None:
                continue
            seen = self._cpu.get(pid)
            self._cpu[pid] = (figures.cpu_seconds, now)
            if seen is not None and now > seen[1]:
                out[pid] = round(100 * (figures.cpu_seconds - seen[0]) / (now - seen[1]), 1)
        for pid in [p for p in self._cpu if p not in pids]:
            del self._cpu[pid]
        return out


def install(
    api: PushApi,
    sources: Sources,
    shard: int | None = None,
    peers: Callable[[], Awaitable[list[ShardMetrics]]] | None = None,
    host_pushes: Callable[[], Awaitable[int]] | None = None,
) -> Console:
    """Serve ``/metrics`` and the console's routes beside the push API (and behind its checks).
    Router shard ``shard``: ``/metrics`` is the host's, with every shard's own families (``peers``)."""
    console = Console(sources, host_pushes)
    exposition = console.exposition = Exposition(
        sources._replace(console_streams=lambda: len(console.streams)), shard
    )

    def metrics(params: dict[str, list[str]], body: bytes) -> Answer:
        accept = api.accept.decode("latin-1")
        if peers is None:
            return exposition.render(accept)

        async def merged() -> Reply:
            return exposition.render(accept, await peers())

        return settled(sources.router.loop.create_task(merged()), lambda reply: reply)

    api.add_routes({"/metrics": ("GET", metrics), **console.routes()})
    return console
