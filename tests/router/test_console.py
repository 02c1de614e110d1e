"""The console and its event stream over the HTTP adapter, driven with a mock transport (no sockets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpim import config
from mpim.master.statusfile import StatusReader
from mpim.records import Alive, BusSeen
from mpim.router import console as console_mod
from mpim.router import sse
from mpim.router.api import PushApi
from mpim.router.console import Console, install
from mpim.router.http import HttpProtocol, HttpState
from mpim.router.metrics import Sources
from mpim.router.totals import WorkerTotals
from tests.router.fakes import FakeLink, Harness
from tests.router.test_http import MockTransport


class Transport(MockTransport):
    """A mock transport that can pretend its client stopped reading."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Rig:
    """A router with the push API, the metrics and the console installed as in the router process."""

    def __init__(self, master: str | None = None, **http: Any) -> None:
        cfg = config.replace(config.Config(), http={"idle_timeout": 1.0, **http})
        self.h = Harness(cfg)
        self.api = PushApi(cfg, self.h.router)
        self.state = HttpState(cfg, self.api, self.h.loop)
        sources = Sources(
            self.h.router, WorkerTotals(self.h.router), self.state, self.h.bus, None, StatusReader(master)
        )
        self.console: Console = install(self.api, sources)

    def open(self, request: bytes = b"") -> tuple[HttpProtocol, Transport]:
        proto = HttpProtocol(self.state)
        transport = Transport()
        proto.connection_made(transport)
        if request:
            proto.data_received(request)
        return proto, transport

    def stream(self) -> tuple[HttpProtocol, Transport]:
        return self.open(b"GET /console/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")

    def tick(self, seconds: float = 1.0) -> None:
        self.h.clock += seconds
        self.console.tick()

    def close(self) -> None:
        self.h.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def events(data: bytes) -> tuple[bytes, list[tuple[str, Any]]]:
    """(head, [(event, JSON data)]) of an event-stream answer."""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    out = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        name = next(line[7:] for line in lines if line.startswith("event: "))
        out.append((name, json.loads("\n".join(line[6:] for line in lines if line.startswith("data: ")))))
    return head, out


def test_the_page_is_one_document_with_everything_inline(rig: Rig) -> None:
    _, transport = rig.open(b"GET /console HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = bytes(transport.data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/html; charset=utf-8" in head
    page = body.decode()
    assert "class MpimChart" in page and "/console/events" in page and "X-API-Key" in page
    assert "/*APP*/" not in page and "/*CHART*/" not in page and "/*STYLE*/" not in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    assert not transport.closed


def test_a_stream_starts_with_the_history_and_gets_a_snapshot_every_tick(rig: Rig) -> None:
    link = rig.h.worker("1", pid=10)
    rig.h.connect(link, "a", 1, "live://9")
    rig.tick()
    _, transport = rig.stream()
    rig.tick()
    rig.tick()
    head, got = events(transport.data)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/event-stream" in head and b"Connection: close" in head
    assert b"Content-Length" not in head
    assert [name for name, _ in got] == ["hello", "snapshot", "snapshot"]
    hello = got[0][1]
    assert len(hello["history"]) == 1 and hello["snapshot"]["total"] == 1
    snap = got[-1][1]
    assert snap["total"] == 1 and snap["rooms"] == [{"room": "live://9", "count": 1}]
    assert [(w["id"], w["conns"], w["rooms"]) for w in snap["workers"]] == [("h/1/10", 1, 1)]
    assert snap["hosts"] == [{"host": "h", "conns": 1, "workers": 1}]
    assert not transport.closed


def test_a_client_that_drops_the_stream_is_forgotten(rig: Rig) -> None:
    proto, transport = rig.stream()
    assert len(rig.console.streams) == 1
    proto.connection_lost(None)  # the browser tab closed
    assert rig.console.streams == set()
    sent = len(transport.data)
    rig.tick()
    assert len(transport.data) == sent  # nothing more written to it
    metrics = rig.api.handle("GET", "/metrics", b"", b"")
    assert b"mpim_console_streams 0.0" in metrics.body  # type: ignore[union-attr]


def test_closing_from_our_side_closes_the_connection_once(rig: Rig) -> None:
    _, transport = rig.stream()
    [stream] = rig.console.streams
    stream.close()
    stream.close()
    assert transport.closed and rig.console.streams == set()


def test_streams_are_bounded(rig: Rig) -> None:
    opened = [rig.stream() for _ in range(console_mod.MAX_STREAMS)]
    proto, transport = rig.stream()
    head, _, body = bytes(transport.data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["code"] == -503
    assert not transport.closed and proto.responder.stream is None  # an ordinary answer, the connection stays
    opened[0][0].connection_lost(None)
    _, transport = rig.stream()
    assert bytes(transport.data).startswith(b"HTTP/1.1 200 OK")


def test_a_client_that_stops_reading_is_let_go(rig: Rig) -> None:
    _, transport = rig.stream()
    transport.buffered = sse.MAX_BUFFER + 1
    rig.tick()
    assert transport.closed and rig.console.streams == set()


def test_requests_after_the_stream_request_are_ignored(rig: Rig) -> None:
    proto, transport = rig.open(
        b"GET /console/events HTTP/1.1\r\nHost: x\r\n\r\nGET /goim/online/total HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    proto.data_received(b"GET /goim/online/total HTTP/1.1\r\nHost: x\r\n\r\n")
    head, got = events(transport.data)
    assert head.count(b"HTTP/1.1") == 1 and [name for name, _ in got] == ["hello"]


def test_a_stream_waits_for_an_earlier_pipelined_answer(rig: Rig) -> None:
    link = rig.h.worker("1", pid=10)
    rig.h.connect(link, "a", 1, "live://9")
    proto, transport = rig.open(
        b"POST /goim/push/room?operation=1000&type=live&room=9 HTTP/1.1\r\n"
        b"Host: x\r\nContent-Length: 1\r\n\r\nx"
        b"GET /console/events HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert transport.data == b""  # the room push waits for the worker's mark
    rig.h.send(link, BusSeen(rig.h.bus.end_turn()))
    rig.h.settle()
    data = bytes(transport.data)
    assert data.index(b'"code":0') < data.index(b"text/event-stream")
    assert proto.responder.stream is not None and len(rig.console.streams) == 1


def test_an_idle_tick_does_not_close_a_stream(rig: Rig) -> None:
    proto, transport = rig.stream()
    rig.h.clock += 60
    rig.state.tick()
    assert not transport.closed and proto.responder.stream is not None


def test_event_encoding() -> None:
    assert sse.encode_event("x", "a\nb\r\nc") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"
    assert sse.encode_event("x", "", 7) == b"event: x\nid: 7\ndata: \n\n"
    with pytest.raises(ValueError):
        sse.encode_event("x\ny", "z")


def test_snapshot_route_is_json(rig: Rig) -> None:
    _, transport = rig.open(b"GET /console/snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
    _, _, body = bytes(transport.data).partition(b"\r\n\r\n")
    answer = json.loads(body)
    assert answer["code"] == 0 and answer["data"]["total"] == 0 and answer["data"]["workers"] == []


def _report(rig: Rig, link: FakeLink, now_ms: int, **stats: int) -> None:
    rig.h.send(link, Alive(0, [], None, {"now_ms": now_ms, **stats}))


def test_rates_come_from_each_worker_s_own_clock(rig: Rig) -> None:
    a = rig.h.worker("1", pid=10)
    b = rig.h.worker("2", pid=20)
    _report(rig, a, 10_000, room_deliveries=1000)
    _report(rig, b, 50_000, keys_deliveries=0)
    rig.tick()
    _report(rig, a, 10_500, room_deliveries=1500)  # 500 in half a second
    _report(rig, b, 52_000, keys_deliveries=400, all_deliveries=100)  # 500 in two seconds
    rig.h.router.push.counts["room"] += 30
    rig.tick(2.0)
    assert rig.console.rates == {"pushes": 15.0, "deliveries": 1250.0}
    assert rig.console.history[-1][1:] == [15.0, 1250.0]


def test_warnings_from_what_changed(rig: Rig) -> None:
    link = rig.h.worker("1", pid=10)
    _report(rig, link, 1, slow_cut=2, refused=0)
    rig.tick()  # the first look only learns the totals
    assert [e["text"] for e in rig.console.events] == ["worker h/1/10 linked"]
    _report(rig, link, 2, slow_cut=5, refused=3)
    rig.h.router.stats["push_timeouts"] += 1
    rig.h.bus.connected = False
    rig.tick()
    texts = [e["text"] for e in rig.console.events]
    assert "worker h/1: 3 slow consumer(s) cut" in texts
    assert "worker h/1: 3 connection(s) refused over the connection limit" in texts
    assert "1 room/broadcast push(es) not confirmed in time (-504)" in texts
    assert "bus connection lost" in texts
    rig.h.router.workers.detach(link)
    rig.tick()
    assert rig.console.events[-1]["text"] == "worker h/1/10 left"
    assert [e["id"] for e in rig.console.events] == sorted({e["id"] for e in rig.console.events})


def test_reloads_and_restarts_from_the_master(tmp_path: Path) -> None:
    path = tmp_path / "master.json"

    def write(generation: int, **counts: int) -> None:
        status = {"pid": 1, "generation": generation, "counts": counts, "children": []}
        path.write_text(json.dumps(status))

    write(1)
    r = Rig(str(path))
    try:
        r.tick()
        write(2, reload_done=1, restart_worker=1)
        r.console.sources.master._stamp = None  # type: ignore[union-attr]  # same mtime tick
        r.tick()
        texts = [e["text"] for e in r.console.events]
        assert "reload done: generation 2 serving" in texts
        assert "1 worker(s) died and were restarted" in texts
    finally:
        r.close()


def test_metrics_route_negotiates_and_counts_answers(rig: Rig) -> None:
    _, transport = rig.open(
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=bogus\r\n\r\n"
    )
    data = bytes(transport.data)
    second = data[data.index(b"HTTP/1.1 200") :]
    head, _, body = second.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    counted = {
        (s.labels["path"], s.labels["status"]): s.value for s in families["mpim_http_requests"].samples
    }
    assert counted[("other", "404")] == 1  # an unknown path is "other": the label set stays small
    _, transport = rig.open(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n"
    )
    assert b"Content-Type: application/openmetrics-text; version=1.0.0" in bytes(transport.data)
    assert bytes(transport.data).endswith(b"# EOF\n")


@pytest.mark.parametrize("path", [b"/metrics", b"/console", b"/console/events", b"/console/snapshot"])
def test_wrong_method_is_405_and_the_connection_stays(rig: Rig, path: bytes) -> None:
    proto, transport = rig.open(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    head, _, body = bytes(transport.data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and b"Allow: GET" in head and json.loads(body)["code"] == -405
    assert not transport.closed and proto.responder.stream is None and rig.console.streams == set()


KEY = "k" * 32


@pytest.mark.parametrize(
    ("request_line", "headers", "status"),
    [
        (b"GET /console", b"", 200),  # the page: static, no data
        (b"GET /console?tab=1", b"", 200),
        (b"HEAD /console", b"", 401),
        (b"POST /console", b"Content-Length: 0\r\n", 401),
        (b"GET /console/events", b"", 401),
        (b"GET /console/snapshot", b"", 401),
        (b"GET /metrics", b"", 401),
        (b"GET /console/", b"", 401),
        (b"GET /consolex", b"", 401),
        (b"GET /metrics", b"X-API-Key: wrong\r\n", 401),
        (b"GET /metrics", b"Authorization: Bearer " + KEY.encode() + b"\r\n", 200),
        (b"GET /console/snapshot", b"X-API-Key: " + KEY.encode() + b"\r\n", 200),
        (b"GET /console/events", b"X-API-Key: " + KEY.encode() + b"\r\n", 200),
    ],
)
def test_with_an_api_key_only_the_page_is_open(request_line: bytes, headers: bytes, status: int) -> None:
    r = Rig(api_key=KEY)
    try:
        _, transport = r.open(request_line + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert bytes(transport.data).startswith(b"HTTP/1.1 %d" % status)
        if status == 401:
            assert transport.closed and r.console.streams == set()
    finally:
        r.close()
