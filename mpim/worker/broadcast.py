"""Push-all: one frame to every connection that watches its op, optionally paced.

Broadcasts run one after another, so two pushes to everyone arrive in the order
they were submitted. An unpaced broadcast with nothing ahead of it is written at
once; a paced one is walked by a single task that sleeps so that at most
``speed`` connections per second are written (goim's ``speed``).
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from mpim.proto import encode
from mpim.worker.channel import AUTHED
from mpim.worker.wsframe import binary_frame

if TYPE_CHECKING:
    from mpim.worker.bucket import Buckets
    from mpim.worker.channel import Channel
    from mpim.worker.meter import Meter

_CHUNKS_PER_SECOND = 20


class _Job:
    __slots__ = ("at", "done", "frame", "op", "speed", "targets")

    def __init__(self, op: int, body: bytes, speed: int, at: float = 0.0) -> None:
        self.at = at
        self.op = op
        self.frame = encode(op, body)
        self.speed = speed
        self.targets: list[Channel] | None = None
        self.done = 0


class Broadcaster:
    def __init__(self, loop: asyncio.AbstractEventLoop, buckets: Buckets, meter: Meter | None = None) -> None:
        self._loop = loop
        self._buckets = buckets
        self._meter = meter
        self._queue: collections.deque[_Job] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def submit(self, op: int, body: bytes, speed: int, at: float = 0.0) -> None:
        job = _Job(op, body, speed, at)
        if self._meter is not None:
            self._meter.all_pushes += 1
        if speed <= 0 and not self._queue:
            self._finish(job)
            return
        self._queue.append(job)
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    def _select(self, job: _Job) -> list[Channel]:
        if job.targets is None:
            op = job.op
            job.targets = [ch for bucket in self._buckets for ch in bucket if op in ch.accepts]
        return job.targets

    def _write(self, job: _Job, channels: list[Channel]) -> None:
        frame = job.frame
        ws_frame = binary_frame(frame)
        sent = ws_sent = 0
        for channel in channels:
            if channel.state == AUTHED:
                if channel.is_ws:
                    channel.write(ws_frame)
                    ws_sent += 1
                else:
                    channel.write(frame)
                sent += 1
        meter = self._meter
        if meter is not None:
            if not job.done:
                meter.wrote("all", job.at)
            meter.all_deliveries += sent
            meter.all_bytes += len(frame) * (sent - ws_sent) + len(ws_frame) * ws_sent

    def _finish(self, job: _Job) -> None:
        targets = self._select(job)
        self._write(job, targets[job.done :])
        job.done = len(targets)

    async def _run(self) -> None:
        loop = self._loop
        try:
            while self._queue:
                job = self._queue[0]
                if job.speed > 0:
                    targets = self._select(job)
                    chunk = max(1, job.speed // _CHUNKS_PER_SECOND)
                    start = loop.time()
                    while job.done < len(targets):
                        delay = start + job.done / job.speed - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        end = job.done + chunk
                        self._write(job, targets[job.done : end])
                        job.done = min(end, len(targets))
                else:
                    self._finish(job)
                self._queue.popleft()
        finally:
            self._task = None

    def finish_now(self) -> None:
        """Drain: write what is still queued, without pacing, in order."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        while self._queue:
            self._finish(self._queue.popleft())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._queue.clear()
