"""The system under test: one ``mpim master``, or two on one redis-server (each host reaching
Redis through its own fault proxy), with a config made for faults.

The config (beside ports, log and inbox path): two workers per host; fast router reports
(so recovery takes seconds); a 5 s heartbeat x 2 (so a dead host's sessions expire in ~12 s
even without leases); small reliable windows, so that an offline spell of a few seconds
overflows ``[delivery] max_unacked`` and a longer one the ``[inbox] max_count`` trim; the
chosen ``[upstream] ack`` mode; short drains. Keys the server under test does not know are
left out (and listed in the summary).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from bench.chaos.proxy import Proxy
from bench.chaos.servers import Host, Redis

LABELS = ("A", "B")


def sections(upstream_ack: str) -> dict[str, dict[str, Any]]:
    return {
        "server": {
            "workers": 2,
            "graceful_timeout": 5.0,
            "worker_timeout": 10.0,
            "reload_drain_timeout": 5.0,
        },
        "router": {
            "report_interval": 0.2,
            "online_interval": 1.0,
            "worker_expiry": 3.0,
            "sweep_interval": 0.2,
        },
        "protocol": {"heartbeat": 5.0, "heartbeat_max": 2},
        "inbox": {"max_count": 60},
        "delivery": {"max_unacked": 16, "replay_max": 400, "ack_timeout": 15.0},
        "upstream": {"ack": upstream_ack, "timeout": 3.0},
        "cluster": {"timeout": 1.0},
    }


class Topology:
    def __init__(self, root: Path, hosts: int, upstream_ack: str, seed: int, shards: int = 1) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mpim-chaos-"))
        self.redis = Redis(self.tmp) if hosts > 1 else None
        self.proxies: dict[str, Proxy] = {}
        self.hosts: list[Host] = []
        base = sections(upstream_ack)
        for i, label in enumerate(LABELS[:hosts]):
            table = {name: dict(t) for name, t in base.items()}
            if shards > 1:
                table["router"]["shards"] = shards
            if self.redis is not None:
                proxy = self.proxies[label] = Proxy(self.redis.port, seed + i)
                table["cluster"]["redis"] = f"redis://127.0.0.1:{proxy.port}/0"
                table["server"]["name"] = f"host-{label.lower()}"
            else:
                del table["cluster"]
            self.hosts.append(Host(label, root, self.tmp, table))

    @property
    def dropped(self) -> list[str]:
        return sorted({d for h in self.hosts for d in h.dropped})

    async def start(self) -> None:
        if self.redis is not None:
            await self.redis.start()
        for proxy in self.proxies.values():
            await proxy.start()
        for host in self.hosts:
            await host.start()

    async def stop(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                await host.stop()
        for proxy in self.proxies.values():
            await proxy.stop()
        if self.redis is not None:
            await self.redis.stop()
