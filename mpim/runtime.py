"""Where the processes of one mpim instance find each other.

The master picks a run directory (``[server] run_dir``, or a private temp dir)
before forking; every child derives the same ZeroMQ endpoints from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoints:
    run_dir: str
    bus_in: str  # bus XSUB: publishers (router, ingress) connect here
    bus_out: str  # bus XPUB: workers subscribe here
    router: str  # router PULL: workers report sessions here

    @classmethod
    def in_dir(cls, run_dir: str) -> Endpoints:
        base = os.path.abspath(run_dir)
        return cls(
            run_dir=base,
            bus_in=f"ipc://{base}/bus-in",
            bus_out=f"ipc://{base}/bus-out",
            router=f"ipc://{base}/router",
        )
