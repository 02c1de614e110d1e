"""``GET /metrics``: the whole host in the Prometheus text format, rendered by the router.

How the numbers get here. Workers count in plain integers (:mod:`mpim.worker.meter`,
the hub's stats) and send the totals with every liveness report (``Alive.stats``,
each ``[router] report_interval``). :class:`~mpim.router.totals.WorkerTotals` adds
them up per worker *slot* (the ``host`` and ``worker`` labels), keeping what a
worker that left had counted, so a counter never goes back when a worker restarts
or a generation retires, and nothing is counted twice; :mod:`mpim.metrics.names`
says which worker stat is which metric. The router's own counters, the
master's (reloads, restarts: :mod:`mpim.master.statusfile`) and every process's
CPU and memory (``/proc``) are read when the scrape comes. prometheus-client
renders the text (its multiprocess mode is not used: nothing is shared on disk).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from mpim import __version__
from mpim.metrics import hist, procfs
from mpim.metrics.names import (
    CLUSTER_COUNTERS,
    INBOX_COUNTERS,
    STREAM_COUNTERS,
    WORKER_COUNTERS,
    WORKER_GAUGES,
)
from mpim.router.api import Reply
from mpim.router.totals import WorkerTotals

if TYPE_CHECKING:
    from mpim.master.statusfile import StatusReader
    from mpim.router.core import Router
    from mpim.router.http import HttpState

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Sources(NamedTuple):
    """Everything the router process can tell about itself, for the collector."""

    router: Router
    totals: WorkerTotals
    http: HttpState | None = None
    busport: Any = None  # BusPort: .stats, .connected, .next_mark
    ingress: Any = None  # Ingress: .requests, .refused
    master: StatusReader | None = None
    console_streams: Callable[[], int] | None = None


def _family(kind: str, name: str, doc: str, labels: list[str]) -> Any:
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _one(kind: str, name: str, doc: str, value: float) -> Metric:
    family = _family(kind, name, doc, [])
    family.add_metric([], value)
    return family  # type: ignore[no-any-return]


class Collector:
    """A prometheus-client collector over :class:`Sources` (no state of its own)."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self.host()
        yield from self.local()

    def host(self) -> Iterator[Metric]:
        """The host's own: the workers' totals (reported to router shard 0), the master's, the build."""
        self.sources.totals.sync()
        yield from self._workers()
        yield from self._master()
        info = GaugeMetricFamily("mpim_build_info", "mpim version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def local(self) -> Iterator[Metric]:
        """This router process's (one router shard's) own."""
        src = self.sources
        yield from self._peers()
        yield from self._router()
        yield from self._http()
        router = src.router
        streams = getattr(getattr(router, "streams", None), "stats", {})
        for name, doc, key in STREAM_COUNTERS:
            yield _one("counter", name, doc, streams.get(key, 0))
        store = getattr(router.streams.inbox, "stats", None)
        if store is not None:  # (the SQLite store; the Redis one counts in Redis)
            for name, doc, key in INBOX_COUNTERS:
                yield _one("counter", name, doc, store.get(key, 0))
        cluster = router.fabric.stats  # (empty on one host)
        for name, doc, key in CLUSTER_COUNTERS:
            yield _one("counter", name, doc, cluster.get(key, 0))

    # -- workers ----------------------------------------------------------------------------
    def _workers(self) -> Iterator[Metric]:
        totals = self.sources.totals
        counters = totals.counters()
        gauges = totals.gauges()
        for table, kind, values in ((WORKER_COUNTERS, "counter", counters), (WORKER_GAUGES, "gauge", gauges)):
            for name, doc, label, keys in table:
                labels = ["host", "worker"] + ([label] if label else [])
                family = _family(kind, name, doc, labels)
                for (host, slot), stats in sorted(values.items()):
                    for key, label_value in keys:
                        family.add_metric([host, slot] + ([label_value] if label else []), stats.get(key, 0))
                yield family
        batch = HistogramMetricFamily(
            "mpim_room_batch_frames",
            "Frames per room flush (one write per member)",
            labels=["host", "worker"],
        )
        latency = HistogramMetricFamily(
            "mpim_push_write_latency_seconds",
            "From the router accepting a push to a worker writing it (room: the oldest frame of a flush)",
            labels=["host", "worker", "kind"],
        )
        for (host, slot), stats in sorted(counters.items()):
            cumulative, total = hist.read(stats, "batch", hist.BATCH_BOUNDS)
            batch.add_metric([host, slot], _buckets(hist.BATCH_BOUNDS, cumulative, 1), total)
            for kind in ("room", "keys", "all"):
                cumulative, total = hist.read(stats, f"latency_{kind}", hist.LATENCY_US_BOUNDS)
                buckets = _buckets(hist.LATENCY_US_BOUNDS, cumulative, 1e-6)
                latency.add_metric([host, slot, kind], buckets, total / 1e6)
        yield batch
        yield latency

    def _peers(self) -> Iterator[Metric]:
        """What the router sees of each live worker: its link, its bus position, its reports."""
        src = self.sources
        router = src.router
        now = router.loop.time()
        next_mark = getattr(src.busport, "next_mark", 1)
        first_mark = getattr(src.busport, "first_mark", 1)
        buffers = GaugeMetricFamily(
            "mpim_link_buffer_bytes",
            "Bytes waiting on a worker's link to the router, by direction",
            labels=["host", "worker", "direction"],
        )
        lag = GaugeMetricFamily(
            "mpim_bus_mark_lag",
            "Router marks published on the bus that a worker has not reported yet (its bus backlog)",
            labels=["host", "worker"],
        )
        age = GaugeMetricFamily(
            "mpim_worker_report_age_seconds", "Since a worker's last record", labels=["host", "worker"]
        )
        states = Counter({"linked": 0, "draining": 0, "off_bus": 0})
        for (host, slot), peer in sorted(src.totals.live(), key=lambda item: item[0]):
            transport = getattr(peer.link, "transport", None)
            queued = transport.get_write_buffer_size() if transport is not None else 0
            buffers.add_metric([host, slot, "to_worker"], queued)
            buffers.add_metric([host, slot, "to_router"], peer.stats.get("link_buffer", 0))
            lag.add_metric([host, slot], max(0, next_mark - 1 - max(peer.mark_seen, first_mark - 1)))
            age.add_metric([host, slot], round(now - peer.last_seen, 3))
            states["linked"] += 1
            states["draining"] += peer.draining
            states["off_bus"] += not peer.bus_ready
        yield buffers
        yield lag
        yield age
        workers = GaugeMetricFamily(
            "mpim_workers", "Workers linked to the router; draining / off_bus: of those", labels=["state"]
        )
        for state, n in states.items():
            workers.add_metric([state], n)
        yield workers

    # -- router -----------------------------------------------------------------------------
    def _router(self) -> Iterator[Metric]:
        src = self.sources
        router = src.router
        stats = router.stats
        store = router.store
        pushes = CounterMetricFamily("mpim_pushes", "Pushes the router accepted, by kind", labels=["kind"])
        for kind, n in router.push.counts.items():
            pushes.add_metric([kind], n)
        yield pushes
        yield _one("counter", "mpim_pushes_refused", "Pushes refused with -503", stats["refused"])
        yield _one(
            "counter", "mpim_push_timeouts", "Room/broadcast pushes answered -504", stats["push_timeouts"]
        )
        yield _one(
            "gauge", "mpim_push_waiting", "Room/broadcast pushes waiting for workers", router.push.waiting
        )
        yield _one("gauge", "mpim_sessions", "Sessions in the router's tables", len(store))
        rooms = set().union(*(w.room_count for w in store.workers.values()))
        yield _one("gauge", "mpim_rooms", "Rooms with members anywhere on the host", len(rooms))
        yield _one("gauge", "mpim_client_ips", "Distinct client IPs online", store.ip_total)
        yield _one("counter", "mpim_link_records", "Records received from workers", stats["records"])
        bad = CounterMetricFamily(
            "mpim_link_bad_records", "Undecodable records on the links, by receiver", labels=["side"]
        )
        bad.add_metric(["router"], stats["bad_records"])
        bad.add_metric(["worker"], sum(c["link_bad_records"] for c in src.totals.counters().values()))
        yield bad
        yield _one("counter", "mpim_resyncs", "Full session lists the router asked for", stats["resyncs"])
        yield _one("counter", "mpim_sessions_expired", "Sessions expired by the router", stats["expired"])
        yield _one(
            "counter", "mpim_ghost_workers", "Workers dropped as gone or silent", stats["ghost_workers"]
        )
        busport = src.busport
        if busport is not None:
            bus_stats = getattr(busport, "stats", {})
            yield _one("gauge", "mpim_bus_connected", "The router is connected to the bus", busport.connected)
            yield _one(
                "counter", "mpim_bus_published", "Records the router published", bus_stats.get("published", 0)
            )
            yield _one(
                "counter", "mpim_bus_bad_messages", "Unknown bus messages", bus_stats.get("bad_fences", 0)
            )
        if src.ingress is not None:
            yield _one("counter", "mpim_ingress_requests", "ZeroMQ push requests", src.ingress.requests)
        receiver = router.requests.receive  # the Receiver in the router process: it counts
        calls, failed = getattr(receiver, "calls", 0), getattr(receiver, "failed", 0)
        yield _one("counter", "mpim_upstream_messages", "Client messages to the receive hook", calls)
        yield _one("counter", "mpim_upstream_hook_errors", "Receive hook failures", failed)
        if src.console_streams is not None:
            yield _one("gauge", "mpim_console_streams", "Open console event streams", src.console_streams())

    def _http(self) -> Iterator[Metric]:
        http = self.sources.http
        if http is None:
            return
        family = CounterMetricFamily(
            "mpim_http_requests",
            "HTTP answers by route (other: unknown paths; -: refused before the path was read) and status",
            labels=["path", "status"],
        )
        for path, by_status in sorted(http.counts.items()):
            for status, n in sorted(by_status.items()):
                family.add_metric([path, str(status)], n)
        yield family
        yield _one("gauge", "mpim_http_connections", "Open HTTP connections", len(http.connections))

    # -- the master and every process -----------------------------------------------------------
    def _master(self) -> Iterator[Metric]:
        reader = self.sources.master
        status = reader.read() if reader is not None else None
        reloads = CounterMetricFamily("mpim_reloads", "Reloads (SIGHUP), by outcome", labels=["outcome"])
        restarts = CounterMetricFamily(
            "mpim_restarts", "Children restarted after they died, by role", labels=["role"]
        )
        counts = status.counts if status is not None else {}
        for outcome in ("done", "abandoned", "refused"):
            reloads.add_metric([outcome], counts.get(f"reload_{outcome}", 0))
        for role in ("worker", "router", "bus"):
            restarts.add_metric([role], counts.get(f"restart_{role}", 0))
        yield reloads
        yield restarts
        yield _one(
            "counter",
            "mpim_hung_workers_killed",
            "Workers killed for a hung loop",
            counts.get("hung_killed", 0),
        )
        yield _one(
            "gauge", "mpim_generation", "The serving worker generation", status.generation if status else 0
        )
        labels = ["role", "slot", "generation"]
        cpu = CounterMetricFamily(
            "mpim_process_cpu_seconds", "User + system CPU time per process", labels=labels
        )
        rss = GaugeMetricFamily(
            "mpim_process_resident_memory_bytes", "Resident memory per process", labels=labels
        )
        start = GaugeMetricFamily(
            "mpim_process_start_time_seconds", "Start time per process (since the epoch)", labels=labels
        )
        for pid, role, slot, generation in _processes(status):
            figures = procfs.read(pid)
            if figures is None:
                continue
            values = [role, slot, generation]
            cpu.add_metric(values, figures.cpu_seconds)
            rss.add_metric(values, figures.rss_bytes)
            start.add_metric(values, figures.start_time)
        yield cpu
        yield rss
        yield start


def _buckets(bounds: tuple[int, ...], cumulative: list[int], scale: float) -> list[tuple[str, float]]:
    out = [(_le(bound * scale), float(n)) for bound, n in zip(bounds, cumulative, strict=False)]
    out.append(("+Inf", float(cumulative[-1])))
    return out


def _le(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}.0"


def _processes(status: Any) -> list[tuple[int, str, str, str]]:
    """(pid, role, slot, generation) of the master and its children, or the router alone."""
    if status is None:
        return [(os.getpid(), "router", "", "")]
    out = [(status.pid, "master", "", "")]
    shards = getattr(status, "shards", 1)
    for child in status.children:
        if child.kind == "worker":
            out.append((child.pid, "worker", str(child.slot), str(child.generation)))
        elif child.kind == "router" and shards > 1:  # one series per shard
            out.append((child.pid, "router", str(child.slot), ""))
        else:
            out.append((child.pid, child.kind, "", ""))
    return out


def wants_openmetrics(accept: str) -> bool:
    """Content negotiation as Prometheus does it: OpenMetrics 1.0.0 if asked for, else text 0.0.4.

    Anything unparsable (a malformed Accept) falls back to the text format."""
    for part in accept.split(","):
        media, *params = part.split(";")
        if media.strip().lower() != "application/openmetrics-text":
            continue
        version = ""
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "version":
                version = value.strip().strip('"')
        if version in ("", "1.0.0"):
            return True
    return False


class _Families:
    """A fixed list of families, as a collector (one rendering)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _text(families: Iterator[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families)))
    return generate_latest(registry).decode()


def merged(own: int, local: list[Metric], host: list[Metric], peers: list[ShardMetrics]) -> list[Metric]:
    """The host's families: ``host`` (shard 0's, where the workers report), then every shard's
    own families, each sample labelled with its ``shard``, one family per name."""
    families: dict[str, Metric] = {}
    parts = [(own, local), *((p.shard, list(text_string_to_metric_families(p.local))) for p in peers)]
    for shard, part in parts:
        for family in part:
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                into.samples.append(sample._replace(labels={**sample.labels, "shard": str(shard)}))
    return [*host, *families.values()]


class ShardMetrics(NamedTuple):
    """Another router shard's families as text: its own, and (shard 0) the host's."""

    shard: int
    local: str
    host: str


class Exposition:
    """Renders :class:`Collector` for one request. With router shards, :meth:`texts` is what a
    shard tells the others, and :meth:`render` puts every shard's in one exposition."""

    def __init__(self, sources: Sources, shard: int | None = None) -> None:
        self.collector = Collector(sources)
        self.shard = shard  # None: the only router of the host (no shard label)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def texts(self) -> tuple[str, str]:
        """This shard's own families and the host's, in the text format."""
        return _text(self.collector.local()), _text(self.collector.host())

    def render(self, accept: str = "", peers: list[ShardMetrics] | None = None) -> Reply:
        registry = self.registry
        if self.shard is not None:
            peers = peers or []
            zero = next((p for p in peers if p.shard == 0 and p.host), None)
            host = list(text_string_to_metric_families(zero.host)) if zero else list(self.collector.host())
            registry = CollectorRegistry(auto_describe=False)
            families = merged(self.shard, list(self.collector.local()), host, peers)
            registry.register(_Families(families))
        if wants_openmetrics(accept):
            return Reply(200, generate_openmetrics(registry), content_type=OPENMETRICS)  # type: ignore[no-untyped-call]
        return Reply(200, generate_latest(registry), content_type=TEXT)
