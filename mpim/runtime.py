"""Where the processes of one mpim instance find each other.

The master picks a run directory (``[server] run_dir``, or a private temp dir)
before forking; every child derives the same ZeroMQ endpoints from it. The master
also draws the instance's incarnation id, which a router restarted under the same
master keeps (its cluster lease is this host's, not that process's).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpim.config import Config


@dataclass(frozen=True)
class Endpoints:
    run_dir: str
    bus_in: str  # bus XSUB: publishers (router, ingress) connect here
    bus_out: str  # bus XPUB: workers subscribe here
    router: str  # router PULL: workers report sessions here
    incarnation: str = ""  # this master's run (its cluster lease); "" = draw one per process

    @classmethod
    def in_dir(cls, run_dir: str, incarnation: str = "") -> Endpoints:
        base = os.path.abspath(run_dir)
        return cls(
            run_dir=base,
            bus_in=f"ipc://{base}/bus-in",
            bus_out=f"ipc://{base}/bus-out",
            router=f"ipc://{base}/router",
            incarnation=incarnation,
        )

    def router_of(self, shard: int) -> str:
        """Where the workers link to router shard ``shard`` (shard 0: ``router``, as with one)."""
        return self.router if shard == 0 else f"ipc://{self.run_dir}/router-{shard}"

    def peer_of(self, shard: int) -> str:
        """Where router shard ``shard`` takes calls from the other shards."""
        return f"ipc://{self.run_dir}/shard-{shard}"

    def configured(self, cfg: Config) -> Endpoints:
        """These endpoints with the ones ``[bus]`` / ``[router]`` set explicitly (multi-host)."""
        changes = {
            name: value
            for name, value in (
                ("bus_in", cfg.bus.in_endpoint),
                ("bus_out", cfg.bus.out_endpoint),
                ("router", cfg.router.endpoint),
            )
            if value
        }
        return dataclasses.replace(self, **changes) if changes else self


def server_name(cfg: Config) -> str:
    """This host's name in the cluster: ``[server] name`` or the host name."""
    return cfg.server.name or socket.gethostname()
