"""Pushes by mid from a load generator process: the ``publish`` command of :mod:`bench.loadgen`.

Several generator processes publish together so that the publisher is not the
limit: process ``part`` of ``parts`` owns the user groups g with
g % parts == part (:class:`bench.scenarios.push.MidPlan`), keeps ``conns``
keep-alive HTTP connections (:class:`bench.pusher.Pusher`) and paces its share
of the rate. The plan and the connections live as long as the process, so a
warm-up and the measured phase continue the same seqs; every reply carries the
pushes per stream since the start, which the runner merges (the streams are
disjoint) to know what each client should have received.
"""

from __future__ import annotations

import time
from typing import Any

from bench.pusher import Pusher
from bench.scenarios.push import MidPlan


class Publisher:
    """One process's share of the pushes by mid: its plan, its connections, its counters."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = {
            k: spec[k] for k in ("port", "users", "per_push", "size", "nchan", "part", "parts", "conns")
        }
        self.parts = int(spec["parts"])
        self.plan = MidPlan(
            int(spec["users"]), int(spec["size"]), int(spec["per_push"]), seed=1000 + int(spec["part"]),
            nchan=bool(spec["nchan"]), part=int(spec["part"]), parts=self.parts,
        )  # fmt: skip
        self.pusher = Pusher(int(spec["port"]), connections=int(spec["conns"]), check_code=not spec["nchan"])

    def same(self, spec: dict[str, Any]) -> bool:
        return all(spec.get(k) == v for k, v in self.spec.items())

    def request(self, n: int, now: float) -> tuple[int, bytes]:
        stream, request = self.plan.request(n, now)
        return stream // self.parts, request  # this process's streams spread over all its connections

    async def publish(self, rate: float, duration: float, tick: float) -> dict[str, Any]:
        """Publish at ``rate`` for ``duration`` s, wait for the answers; this phase's counters."""
        if not self.pusher.conns:
            await self.pusher.open()
        sent, failed = self.pusher.sent, self.pusher.failed
        started = time.process_time()
        achieved = await self.pusher.run_paced(self.request, rate, duration, tick)
        await self.pusher.drain()
        return {
            "pushes": self.pusher.sent - sent,
            "rate": achieved,
            "failed": self.pusher.failed - failed,
            "unanswered": self.pusher.inflight,
            "first_error": self.pusher.first_error,
            "cpu": time.process_time() - started,
            "sent": {str(k): v for k, v in self.plan.sent.items()},
        }

    def close(self) -> None:
        self.pusher.close()
