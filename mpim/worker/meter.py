"""The worker's delivery counters: plain integers bumped once per push or per room flush.

Nothing here runs per delivered message: a room flush adds its member count and
bytes once, a push by key adds what it handed out once. Latency is sampled: one
observation per room flush (its oldest frame), per broadcast, and per push by
key the router stamped (one in eight), from the moment the router accepted the
push (``at``, on the host's monotonic clock, which every process shares) to the write.
"""

from __future__ import annotations

import time

from mpim.metrics.hist import BATCH_BOUNDS, LATENCY_US_BOUNDS, IntHistogram

KINDS = ("room", "keys", "all")


class Meter:
    __slots__ = (
        "all_bytes",
        "all_deliveries",
        "all_pushes",
        "batch",
        "keys_bytes",
        "keys_deliveries",
        "keys_not_watching",
        "keys_offline",
        "keys_pushes",
        "latency",
        "latency_keys",
        "room_absent",
        "room_bytes",
        "room_deliveries",
        "room_flushes",
        "room_frames",
        "room_gone",
    )

    def __init__(self) -> None:
        self.room_flushes = 0
        self.room_frames = 0  # frames flushed (each to every member)
        self.room_deliveries = 0  # frames x members
        self.room_bytes = 0
        self.room_absent = 0  # room pushes that found no member here
        self.room_gone = 0  # frames queued for a room that emptied before its flush
        self.keys_pushes = 0
        self.keys_deliveries = 0
        self.keys_bytes = 0
        self.keys_offline = 0  # keys no longer here when the push arrived
        self.keys_not_watching = 0  # connections that do not watch the op
        self.all_pushes = 0
        self.all_deliveries = 0
        self.all_bytes = 0
        self.batch = IntHistogram(BATCH_BOUNDS)
        self.latency = {kind: IntHistogram(LATENCY_US_BOUNDS) for kind in KINDS}
        self.latency_keys = self.latency["keys"]  # (one lookup less per push by key)

    def flushed(self, frames: int, members: int, size: int, ws_members: int, ws_size: int, at: float) -> None:
        """One room flush: ``frames`` frames of ``size`` bytes (``ws_size`` as a WebSocket message)."""
        self.room_flushes += 1
        self.room_frames += frames
        self.room_deliveries += frames * members
        self.room_bytes += size * (members - ws_members) + ws_size * ws_members
        self.batch.observe(frames)
        if at:
            self.latency["room"].observe(int((time.monotonic() - at) * 1e6))

    def wrote(self, kind: str, at: float) -> None:
        if at:
            self.latency[kind].observe(int((time.monotonic() - at) * 1e6))

    def counters(self) -> dict[str, int]:
        histograms = ("batch", "latency", "latency_keys")
        out = {name: getattr(self, name) for name in self.__slots__ if name not in histograms}
        self.batch.export("batch", out)
        for kind, hist in self.latency.items():
            hist.export(f"latency_{kind}", out)
        return out
