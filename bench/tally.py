"""Counters of one generator process, and how the runner merges them.

Latency goes into a fixed histogram of 0.1 ms buckets (the last bucket holds
everything from 10 s up), so recording a delivery is one index and one add, and
histograms of several processes merge by adding buckets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

RESOLUTION = 10_000  # buckets per second: 0.1 ms
CAP = 100_000  # 10 s


class Tally:
    """Everything one generator process counts; reset between phases."""

    __slots__ = (
        "bcast", "bytes", "closed", "dup", "gaps", "hb_replies", "hist", "kicked", "misdelivered",
        "recv", "reorder",
    )  # fmt: skip

    def __init__(self) -> None:
        self.hist = [0] * (CAP + 1)
        self.recv = 0
        self.bytes = 0
        self.dup = 0
        self.reorder = 0
        self.gaps = 0
        self.misdelivered = 0
        self.hb_replies = 0
        self.kicked = 0
        self.closed = 0
        # broadcast seq -> [deliveries, first receive, last receive]
        self.bcast: dict[int, list[float]] = {}

    def reset(self) -> None:
        closed = self.closed
        self.__init__()  # type: ignore[misc]
        self.closed = closed

    def broadcast(self, seq: int, now: float) -> None:
        entry = self.bcast.get(seq)
        if entry is None:
            self.bcast[seq] = [1, now, now]
        else:
            entry[0] += 1
            entry[2] = now

    def snapshot(self) -> dict[str, Any]:
        """Counters without the histogram (cheap enough to ask every second)."""
        return {
            "recv": self.recv,
            "bytes": self.bytes,
            "dup": self.dup,
            "reorder": self.reorder,
            "gaps": self.gaps,
            "misdelivered": self.misdelivered,
            "hb_replies": self.hb_replies,
            "kicked": self.kicked,
            "closed": self.closed,
        }

    def report(self) -> dict[str, Any]:
        out = self.snapshot()
        out["hist"] = {str(i): n for i, n in enumerate(self.hist) if n}
        out["bcast"] = {str(seq): entry for seq, entry in self.bcast.items()}
        return out


def merge_counts(reports: Iterable[Mapping[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in reports)


def merge_hist(reports: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for report in reports:
        for bucket, n in report.get("hist", {}).items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + int(n)
    return hist


def percentile(hist: Mapping[int, int], fraction: float) -> float:
    """The latency (seconds, upper edge of its bucket) below which ``fraction`` of samples fall."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = fraction * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 1) / RESOLUTION
    return (max(hist) + 1) / RESOLUTION


def hist_max(hist: Mapping[int, int]) -> float:
    return (max(hist) + 1) / RESOLUTION if hist else float("nan")


def merge_bcast(reports: Iterable[Mapping[str, Any]]) -> dict[int, list[float]]:
    """Broadcast seq -> [deliveries, first receive, last receive] over every process."""
    out: dict[int, list[float]] = {}
    for report in reports:
        for seq_text, (count, first, last) in report.get("bcast", {}).items():
            seq = int(seq_text)
            entry = out.get(seq)
            if entry is None:
                out[seq] = [count, first, last]
            else:
                entry[0] += count
                entry[1] = min(entry[1], first)
                entry[2] = max(entry[2], last)
    return out
