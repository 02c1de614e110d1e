"""The Grafana dashboard in deploy/grafana uses only metrics that /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mpim.router.api import PushApi
from mpim.router.http import HttpState
from mpim.router.metrics import Exposition, Sources
from mpim.router.totals import WorkerTotals
from tests.router.fakes import Harness

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "mpim.json"


def exposed() -> dict[str, str]:
    """Metric name -> type, from the # TYPE lines of a rendered exposition."""
    h = Harness()
    try:
        http = HttpState(h.cfg, PushApi(h.cfg, h.router), h.loop)
        sources = Sources(h.router, WorkerTotals(h.router), http, h.bus, console_streams=lambda: 0)
        text = Exposition(sources).render().body.decode()
    finally:
        h.close()
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))  # type: ignore[misc]


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item)]
    return []


def test_every_query_names_an_exposed_metric() -> None:
    types = exposed()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard["panels"])
    assert len(exprs) > 30
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bmpim_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            ok = types.get(name) in ("counter", "gauge") or types.get(base) == "histogram"
            assert ok, f"{name} in {expr!r} is not exposed"
            used.add(base if types.get(base) == "histogram" else name)
    # the headline numbers of the issue are all on it
    for name in (
        "mpim_connections",
        "mpim_disconnects_total",
        "mpim_pushes_total",
        "mpim_deliveries_total",
        "mpim_frames_dropped_total",
        "mpim_room_batch_frames",
        "mpim_push_write_latency_seconds",
        "mpim_http_requests_total",
        "mpim_bus_mark_lag",
        "mpim_link_buffer_bytes",
        "mpim_process_cpu_seconds_total",
        "mpim_process_resident_memory_bytes",
        "mpim_reloads_total",
        "mpim_restarts_total",
        "mpim_inbox_appends_total",
        "mpim_redis_errors_total",
    ):
        assert name in used, name


def test_panels_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & area, panel["title"]
        assert pos["x"] + pos["w"] <= 24
        cells |= area
    assert len({p["id"] for p in panels}) == len(panels)
