"""``GET /metrics`` of a real ``mpim master``: the right numbers, kept across a kill -9 and a reload."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mpim.client import WsClient
from tests.integration.cluster import Cluster, in_cluster, until
from tests.support import ServerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(srv: ServerProcess, accept: str = "") -> tuple[str, Samples]:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.http_port)
    try:
        head = f"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: {accept}\r\n\r\n"
        writer.write(head.encode())
        data = await reader.read()
    finally:
        writer.close()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 200"), head_bytes
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return head_bytes.decode(), samples


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of a metric over every label set that has ``match``."""
    return sum(v for (n, labels), v in samples.items() if n == name and set(match.items()) <= set(labels))


def by_worker(samples: Samples, name: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        ls = dict(labels)
        if n == name and set(match.items()) <= set(labels):
            out[ls["worker"]] = out.get(ls["worker"], 0) + v
    return out


def test_metrics_of_a_running_host(tmp_path: Path) -> None:
    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        await c.wait_workers(2)
        chosen = await c.spread("m", None, "live://7", 4, 2)  # TCP and WebSocket, both workers
        await c.post("/goim/push/room?operation=1000&type=live&room=7", b"hi")
        mids = "&".join(f"mids={1000 + i}" for i in range(200) if any(k == f"m-{i}" for _, k, _ in chosen))
        await c.post(f"/goim/push/mids?operation=1000&{mids}", b"yo")
        for client, _, _ in chosen:
            assert len([await client.recv_push() for _ in range(2)]) == 2

        async def reported() -> Samples | None:
            _, s = await scrape(srv)
            done = total(s, "mpim_deliveries_total") == 8 and total(s, "mpim_connections") == 4
            return s if done else None

        s = await until(reported, what="the workers' reports of 4 connections and 8 deliveries")
        assert total(s, "mpim_deliveries_total", kind="room") == 4
        assert total(s, "mpim_deliveries_total", kind="keys") == 4
        assert total(s, "mpim_online") == 4 == total(s, "mpim_sessions")
        ws = sum(isinstance(client, WsClient) for client, _, _ in chosen)
        assert total(s, "mpim_connections", transport="ws") == ws
        assert total(s, "mpim_connections", transport="tcp") == 4 - ws
        assert total(s, "mpim_pushes_total", kind="room") == 1 == total(s, "mpim_pushes_total", kind="mids")
        assert total(s, "mpim_push_write_latency_seconds_count", kind="room") >= 2  # a flush per worker
        assert total(s, "mpim_rooms") == 1
        assert total(s, "mpim_http_requests_total", path="/goim/push/room", status="200") == 1
        assert total(s, "mpim_workers", state="linked") == 2
        roles = {dict(labels)["role"] for n, labels in s if n == "mpim_process_cpu_seconds_total"}
        assert roles == {"master", "router", "bus", "worker"}
        assert total(s, "mpim_generation") == 1
        assert total(s, "mpim_inbox_commits_total") >= 1  # (the push by mid, stored in the SQLite inbox)
        assert total(s, "mpim_inbox_checkpoint_failures_total") == 0
        head, _ = await scrape(srv, "application/openmetrics-text; version=1.0.0")
        assert "application/openmetrics-text" in head

    in_cluster(tmp_path, 2, scenario)


def test_counters_stay_monotonic_across_a_kill_and_a_reload(tmp_path: Path) -> None:
    async def scenario(srv: ServerProcess, c: Cluster) -> None:
        pids = await c.wait_workers(2)
        await c.spread("k", None, "live://1", 6, 2)  # both workers hold some

        async def connects(at_least: float) -> Any:
            _, s = await scrape(srv)
            return s if total(s, "mpim_connects_total") >= at_least else None

        before = await until(lambda: connects(6), what="6 connects reported")
        per_slot = by_worker(before, "mpim_connects_total")
        victim_id, victim_pid = sorted(pids.items())[0]
        os.kill(victim_pid, signal.SIGKILL)
        slot = victim_id.split("/")[1]

        async def restarted() -> Any:
            _, s = await scrape(srv)
            return s if total(s, "mpim_restarts_total", role="worker") == 1 else None

        after = await until(restarted, what="the restart counted")
        assert by_worker(after, "mpim_connects_total")[slot] >= per_slot[slot]
        assert total(after, "mpim_connects_total") >= total(before, "mpim_connects_total")
        await c.wait_workers(2)
        seen = total(after, "mpim_connects_total")
        srv.signal(signal.SIGHUP)  # a new generation; the old one retires with its clients

        async def reloaded() -> Any:
            _, s = await scrape(srv)
            return s if total(s, "mpim_reloads_total", outcome="done") == 1 else None

        s = await until(reloaded, what="the reload counted")
        assert total(s, "mpim_generation") == 2
        assert total(s, "mpim_connects_total") >= seen
        await c.close()  # the retiring workers lose their last clients and exit

        async def retired() -> Any:
            _, s = await scrape(srv)
            gen1 = [
                labels
                for n, labels in s
                if n == "mpim_process_cpu_seconds_total" and ("generation", "1") in labels
            ]
            return s if not gen1 and total(s, "mpim_workers", state="linked") == 2 else None

        s = await until(retired, timeout=30, what="the old generation gone")
        assert total(s, "mpim_connects_total") >= seen
        # the surviving slot saw each of its clients leave (the killed worker could not count its own)
        other = next(w for w in by_worker(s, "mpim_connects_total") if w != slot)
        assert by_worker(s, "mpim_disconnects_total")[other] == by_worker(s, "mpim_connects_total")[other] > 0
        assert by_worker(s, "mpim_disconnects_total", reason="client")[other] > 0

    in_cluster(tmp_path, 2, scenario)
