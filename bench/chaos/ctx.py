"""What every part of a chaos run shares: the history, the hosts, the seed, the phase events,
and the workload's fixed vocabulary (ops, rooms, users)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from bench.chaos.history import History
from bench.chaos.servers import Host

OPS = {"mid": 1000, "key": 1001, "room": 1002, "all": 1003, "chat": 1004}
ACCEPTS = sorted(OPS.values())
ROOMS = ["live://1", "live://2"]
PROBE_ROOM = "live://probe"
HEARTBEAT = 2.0  # clients' heartbeat interval (the server's is set to 5 s x 2)


@dataclass
class Ctx:
    history: History
    hosts: list[Host]
    seed: int
    upstream_ack: str
    final: asyncio.Event = field(default_factory=asyncio.Event)  # no more faults or pushes: settle
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # every client closes now
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # backend and chat senders stop

    def rng(self, name: str) -> random.Random:
        """A random source of one part of the workload: the same seed gives the same choices."""
        return random.Random(f"{self.seed}/{name}")

    def host(self, label: str) -> Host:
        return next(h for h in self.hosts if h.label == label)
