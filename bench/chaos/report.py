"""What a chaos run leaves in ``--out``: the history (written as it runs), ``summary.json``,
``summary.txt`` and ``chaos.png`` (latency and throughput over time, fault windows shaded)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.chaos.checker.base import Report
from bench.chaos.history import FAIL, INFO, OK, Op

KEPT_PER_RULE = 200  # violations written to summary.json per rule (all are counted)


def verdict(report: Report, faults: int) -> str:
    ops = report.stats.get("operations", 0)
    pending = ""
    if report.pending:
        counts = report.by_rule(report.pending)
        issues = sorted({v.issue for v in report.pending if v.issue})
        pending = (
            f"; {len(report.pending)} known-pending (issue {', '.join(map(str, issues))}: "
            + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
            + ")"
        )
    if report.valid:
        return f"valid: {ops} operations, {faults} faults, 0 violations{pending}"
    counts = report.by_rule(report.failing)
    rules = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
    return f"INVALID: {len(report.failing)} violations ({rules}); {ops} operations, {faults} faults{pending}"


def write(out: Path, report: Report, ops: list[Op], meta: dict[str, Any], line: str) -> None:
    kept: dict[str, int] = defaultdict(int)
    violations = []
    for v in report.violations:
        kept[v.rule] += 1
        if kept[v.rule] <= KEPT_PER_RULE:
            violations.append(
                {
                    "rule": v.rule,
                    "issue": v.issue,
                    "pending": v in report.pending,
                    "message": v.message,
                    "ops": [o.index for o in v.ops],
                }
            )
    summary = {
        "verdict": line,
        "valid": report.valid,
        "stats": report.stats,
        "violations": violations,
        "violations_by_rule": dict(report.by_rule(report.failing)),
        "known_pending_by_rule": dict(report.by_rule(report.pending)),
        "faults": faults_by_kind(ops),
        "meta": meta,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = [line, "", "counts:"]
    text += [f"  {name}: {n}" for name, n in report.stats.items()]
    text += ["faults:"] + [f"  {name}: {n}" for name, n in sorted(faults_by_kind(ops).items())]
    if report.violations:
        text += ["", report.text()]
    (out / "summary.txt").write_text("\n".join(text) + "\n")
    plot(ops, out / "chaos.png", line)


def faults_by_kind(ops: list[Op]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in ops:
        if o.process == "nemesis":
            counts[o.kind] += 1
    return dict(counts)


def plot(ops: list[Op], path: Path, title: str) -> None:
    """Latency of the live deliveries (the first of each push per client, on a connection that
    was up when the push was sent: not a replay after an offline spell) with per-second p50 /
    p99; pushes per second by outcome and deliveries per second; every fault window shaded
    (red: the system did not serve again within the wait) and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pushes = {str(o.values.get("body")): o for o in ops if o.kind == "push"}
    last = max((o.end or o.time for o in ops), default=1.0)
    step = max(1, math.ceil(last / 300))  # seconds per point: ~300 points whatever the length
    authed = {str(o.values.get("conn")): o.end for o in ops if o.kind == "connect" and o.outcome == OK}
    width = max(1, math.ceil(last / step))
    lat_t: list[float] = []
    lat_ms: list[float] = []
    per_sec: dict[int, list[float]] = defaultdict(list)
    first: set[tuple[str, str]] = set()
    deliveries = [0] * (width + 1)
    for o in ops:
        if o.kind != "recv":
            continue
        deliveries[min(width, int(o.time / step))] += 1
        push = pushes.get(str(o.values.get("body")))
        where = (str(o.values.get("body")), o.process)
        up = authed.get(str(o.values.get("conn")))
        if push is None or where in first or up is None or up > push.time:
            continue
        first.add(where)
        ms = max(0.01, (o.time - push.time) * 1000)
        lat_t.append(o.time)
        lat_ms.append(ms)
        per_sec[int(o.time / step)].append(ms)
    rates = {outcome: [0] * (width + 1) for outcome in (OK, INFO, FAIL)}
    for o in pushes.values():
        rates[o.outcome][min(width, int(o.time / step))] += 1
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 7), sharex=True, height_ratios=[3, 2])
    every = max(1, len(lat_t) // 20_000)  # (a soak's dots: every n-th, the lines use them all)
    top.scatter(
        lat_t[::every],
        lat_ms[::every],
        s=2,
        alpha=0.25,
        color="tab:blue",
        label="live delivery (first per client)",
    )
    secs = sorted(per_sec)
    xs_lat = [s * step for s in secs]
    per = "per second" if step == 1 else f"per {step} s"
    top.plot(xs_lat, [_pct(per_sec[s], 50) for s in secs], color="tab:green", label=f"p50 {per}")
    top.plot(xs_lat, [_pct(per_sec[s], 99) for s in secs], color="tab:red", label=f"p99 {per}")
    top.set_yscale("log")
    top.set_ylabel("push -> client (ms)")
    top.legend(loc="upper left", fontsize=8)
    xs = [i * step for i in range(width + 1)]
    bottom.plot(xs, [n / step for n in deliveries], color="tab:blue", label="deliveries / s")
    bottom.plot(xs, [n / step for n in rates[OK]], color="tab:green", label="pushes ok / s")
    bottom.plot(xs, [n / step for n in rates[INFO]], color="tab:orange", label="pushes unknown (info) / s")
    bottom.plot(xs, [n / step for n in rates[FAIL]], color="tab:red", label="pushes refused / s")
    bottom.set_ylabel("per second")
    bottom.set_xlabel("seconds since the start of the run")
    bottom.legend(loc="upper left", fontsize=8)
    faults = [o for o in ops if o.process == "nemesis"]
    for o in faults:
        end = o.end if o.end is not None else last
        for ax in (top, bottom):
            ax.axvspan(o.time, end, color="grey" if o.outcome == OK else "red", alpha=0.15, lw=0)
        if len(faults) <= 40:  # (a soak's hundreds of names would be a black band)
            top.text(
                o.time, 1.0, o.kind, rotation=90, fontsize=6, va="top", transform=top.get_xaxis_transform()
            )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]
