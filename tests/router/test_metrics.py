"""The router's metrics without sockets: workers' counters added up per slot (monotonic across
restarts and reloads), the exposition and its content negotiation, the master's numbers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from mpim import records
from mpim.master.statusfile import StatusReader
from mpim.metrics.hist import BATCH_BOUNDS, LATENCY_US_BOUNDS, IntHistogram
from mpim.records import Alive, Bye
from mpim.router.metrics import OPENMETRICS, TEXT, Exposition, Sources, wants_openmetrics
from mpim.router.totals import WorkerTotals
from tests.router.fakes import FakeLink, Harness


@pytest.fixture
def rig() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def report(h: Harness, link: FakeLink, **stats: int) -> None:
    h.send(link, Alive(0, [], None, dict(stats)))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[name, tuple(sorted(labels.items()))]


def render(h: Harness, totals: WorkerTotals | None = None, **kw: Any) -> str:
    sources = Sources(h.router, totals or WorkerTotals(h.router), **kw)
    return Exposition(sources).render().body.decode()


def test_a_restarted_worker_adds_to_its_slot_and_nothing_goes_back(rig: Harness) -> None:
    totals = WorkerTotals(rig.router)
    first = rig.worker("1", pid=10)
    report(rig, first, opened_tcp=5, auth_ok=4, conns_tcp=3)
    assert value(render(rig, totals), "mpim_connects_total", host="h", worker="1", transport="tcp") == 5
    rig.router.workers.detach(first)  # kill -9: the link closes
    text = render(rig, totals)
    assert value(text, "mpim_connects_total", host="h", worker="1", transport="tcp") == 5
    assert value(text, "mpim_connections", host="h", worker="1", transport="tcp") == 0  # a level: gone
    second = rig.worker("1", pid=11)
    report(rig, second, opened_tcp=2, auth_ok=1, conns_tcp=2)
    text = render(rig, totals)
    assert value(text, "mpim_connects_total", host="h", worker="1", transport="tcp") == 7
    assert value(text, "mpim_auth_total", host="h", worker="1", result="ok") == 5
    assert value(text, "mpim_connections", host="h", worker="1", transport="tcp") == 2


def test_a_reload_overlap_sums_both_generations_then_keeps_the_old_one_s_count(rig: Harness) -> None:
    totals = WorkerTotals(rig.router)
    old = rig.worker("1", pid=10)
    new = rig.worker("1", pid=20)  # the new generation's worker 1, while the old one retires
    report(rig, old, room_deliveries=100, online=3)
    report(rig, new, room_deliveries=7, online=1)
    text = render(rig, totals)
    assert value(text, "mpim_deliveries_total", host="h", worker="1", kind="room") == 107
    assert value(text, "mpim_online", host="h", worker="1") == 4
    report(rig, old, room_deliveries=110, online=0)  # its last count, sent just before Bye
    rig.send(old, Bye())
    report(rig, new, room_deliveries=9, online=1)
    text = render(rig, totals)
    assert value(text, "mpim_deliveries_total", host="h", worker="1", kind="room") == 119
    assert value(text, "mpim_online", host="h", worker="1") == 1
    rig.router.workers.detach(old)  # the link of a worker that said goodbye closes later: not counted again
    assert value(render(rig, totals), "mpim_deliveries_total", host="h", worker="1", kind="room") == 119


def test_counters_never_decrease_over_a_sequence_of_restarts(rig: Harness) -> None:
    totals = WorkerTotals(rig.router)
    seen = 0.0
    for pid in range(100, 106):
        link = rig.worker("2", pid=pid)
        for n in (1, 4, 9):
            report(rig, link, keys_deliveries=n)
            now = value(render(rig, totals), "mpim_deliveries_total", host="h", worker="2", kind="keys")
            assert now >= seen
            seen = now
        rig.router.workers.detach(link)
    assert seen == 6 * 9


def test_histograms_are_cumulative_and_in_seconds(rig: Harness) -> None:
    link = rig.worker("1")
    batch = IntHistogram(BATCH_BOUNDS)
    for n in (1, 3, 3, 2000):
        batch.observe(n)
    latency = IntHistogram(LATENCY_US_BOUNDS)
    for us in (100, 4_000, 30_000_000):
        latency.observe(us)
    stats: dict[str, int] = {}
    batch.export("batch", stats)
    latency.export("latency_keys", stats)
    report(rig, link, **stats)
    text = render(rig)
    assert value(text, "mpim_room_batch_frames_bucket", host="h", worker="1", le="1.0") == 1
    assert value(text, "mpim_room_batch_frames_bucket", host="h", worker="1", le="5.0") == 3
    assert value(text, "mpim_room_batch_frames_bucket", host="h", worker="1", le="1000.0") == 3
    assert value(text, "mpim_room_batch_frames_bucket", host="h", worker="1", le="+Inf") == 4
    assert value(text, "mpim_room_batch_frames_sum", host="h", worker="1") == 2007
    lat = {"host": "h", "worker": "1", "kind": "keys"}
    assert value(text, "mpim_push_write_latency_seconds_bucket", le="0.00025", **lat) == 1
    assert value(text, "mpim_push_write_latency_seconds_bucket", le="0.005", **lat) == 2
    assert value(text, "mpim_push_write_latency_seconds_bucket", le="5.0", **lat) == 2
    assert value(text, "mpim_push_write_latency_seconds_count", **lat) == 3
    assert value(text, "mpim_push_write_latency_seconds_sum", **lat) == pytest.approx(30.0041)


def test_router_counts_pushes_by_kind_and_stamps_them(rig: Harness) -> None:
    link = rig.worker("1")
    rig.connect(link, "k", 7, "live://1")
    rig.router.confirms.on_bus_fence(link.id, 1)
    link.take()
    sent: list[bytes] = []
    published: list[bytes] = []
    link.send = sent.append  # type: ignore[method-assign]  # raw records: the fakes zero the stamp
    rig.bus.publish = lambda topic, record: published.append(record)  # type: ignore[method-assign]
    before = time.monotonic()
    for _ in range(17):
        rig.router.push.keys(1000, ["k", "nobody"], b"y")
    assert rig.loop.run_until_complete(rig.router.push.mids(1000, [7], b"x"))[0] == 1
    rig.router.push.room(1000, "live://1", b"z")
    rig.router.push.all(1000, 0, b"w")
    after = time.monotonic()
    text = render(rig)
    assert [value(text, "mpim_pushes_total", kind=kind) for kind in ("keys", "mids", "room", "all")] == [
        17,
        1,
        1,
        1,
    ]
    keys = [records.Decoder(records.RouterRecord)(r).at for r in sent]
    stamped = [i for i, at in enumerate(keys) if at]
    assert stamped == [0, 8, 16]  # one push by key or mid in eight: the 1st, 9th and 17th (of 18)
    assert all(before <= keys[i] <= after for i in stamped)
    bus = [records.Decoder(records.BusRecord)(r).at for r in published]
    assert len(bus) == 2 and all(before <= at <= after for at in bus)  # every room / broadcast push


def test_master_numbers_and_every_process_cpu_and_memory(rig: Harness, tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    status = {
        "pid": os.getpid(),
        "generation": 3,
        "counts": {"reload_done": 2, "reload_abandoned": 1, "restart_worker": 4, "restart_bus": 1},
        "children": [
            {"pid": os.getpid(), "kind": "worker", "slot": 1, "generation": 3, "state": "ready"},
            {"pid": 2**22 + 12345, "kind": "bus", "slot": 0, "generation": 0, "state": "ready"},  # gone
        ],
    }
    path.write_text(json.dumps(status))
    text = render(rig, master=StatusReader(str(path)))
    assert value(text, "mpim_reloads_total", outcome="done") == 2
    assert value(text, "mpim_reloads_total", outcome="abandoned") == 1
    assert value(text, "mpim_reloads_total", outcome="refused") == 0
    assert value(text, "mpim_restarts_total", role="worker") == 4
    assert value(text, "mpim_restarts_total", role="bus") == 1
    assert value(text, "mpim_generation") == 3
    assert value(text, "mpim_process_cpu_seconds_total", role="master", slot="", generation="") > 0
    assert value(text, "mpim_process_resident_memory_bytes", role="worker", slot="1", generation="3") > 0
    assert not any(n == "mpim_process_cpu_seconds_total" and ("role", "bus") in ls for n, ls in samples(text))


def test_a_broken_master_status_file_shows_the_router_alone(rig: Harness, tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    for content in (
        b"",
        b"{",
        b'{"pid": 1}',
        b"\xff\xfe",
        b'{"pid": 1, "generation": 1, "counts": [], "children": []}',
    ):
        path.write_bytes(content)
        text = render(rig, master=StatusReader(str(path)))
        assert value(text, "mpim_reloads_total", outcome="done") == 0
        assert value(text, "mpim_process_cpu_seconds_total", role="router", slot="", generation="") >= 0


def test_reliable_delivery_and_several_hosts_numbers(rig: Harness) -> None:
    stats = rig.router.streams.stats
    stats.update(appends=5, acks=4, replays=3, unrecovered=2, chats=1)
    text = render(rig)
    for name, n in (
        ("inbox_appends", 5),
        ("acks", 4),
        ("replays", 3),
        ("resumes_unrecovered", 2),
        ("chats", 1),
    ):
        assert value(text, f"mpim_{name}_total") == n
    for name in ("redis_errors", "cluster_published", "cluster_received", "cluster_rebuilds"):
        assert value(text, f"mpim_{name}_total") == 0  # one host: no Redis


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("text/plain", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        ("application/openmetrics-text;version=0.0.1,text/plain;version=0.0.4;q=0.5", False),
        ("application/openmetrics-text; version=garbage", False),
        ("text/plain;version=x", False),
        (";;;,,,==", False),
        ("\xff\xfe\x00", False),
        ("*/*", False),
    ],
)
def test_content_negotiation_never_fails(rig: Harness, accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics
    reply = Exposition(Sources(rig.router, WorkerTotals(rig.router))).render(accept)
    assert reply.status == 200
    if openmetrics:
        assert reply.content_type == OPENMETRICS
        families = {f.name for f in parse_openmetrics(reply.body.decode())}
        assert "mpim_connects" in families
    else:
        assert reply.content_type == TEXT
        assert "mpim_connects" in {f.name for f in text_string_to_metric_families(reply.body.decode())}
