"""What the master knows about each child process, and the restart backoff."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from mpim.config import Config

WORKER, ROUTER, BUS = "worker", "router", "bus"

# A child's state, as the master sees it.
BOOTING = "booting"  # forked; a worker has not reported that it is bound yet
READY = "ready"  # serving (helpers are ready as soon as they are forked)
RETIRING = "retiring"  # old generation: not accepting, serving its clients until they leave
STOPPING = "stopping"  # asked to exit (drain, fast stop, abandoned reload, replaced router)


@dataclass(frozen=True)
class ChildSpec:
    """What to run in a new child: a worker in a slot of a generation, a router shard or the bus."""

    kind: str
    cfg: Config
    slot: int = 0  # workers: 1..N, kept across restarts; routers: the shard 0..N-1; the bus: 0
    generation: int = 0  # workers: the reload generation; helpers: 0
    expect: int = 0  # a router: workers whose sessions it waits for before taking pushes

    @property
    def label(self) -> str:
        """``worker 3``, ``router`` (one shard), ``router 1`` (one of several), ``bus``."""
        if self.kind == WORKER or (self.kind == ROUTER and self.cfg.router.shards > 1):
            return f"{self.kind} {self.slot}"
        return self.kind

    @property
    def title(self) -> str:
        return f"mpim: {self.label}"

    @property
    def role(self) -> str:
        """The name in this child's log lines."""
        return self.label.replace(" ", "-")


@dataclass
class Child:
    spec: ChildSpec
    pid: int
    started: float
    last_beat: float
    state: str = BOOTING
    kill_at: float | None = None  # SIGKILL if it is still alive then

    @property
    def name(self) -> str:
        """``worker 3 (pid 1234)``, for log lines."""
        return f"{self.spec.label} (pid {self.pid})"

    @property
    def is_worker(self) -> bool:
        return self.spec.kind == WORKER


def describe_exit(code: int) -> str:
    """A waitpid result as ``os.waitstatus_to_exitcode`` gives it: negative = killed by a signal."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "?"
    return f"killed by signal {-code} ({name})"


class Backoff:
    """How long to wait before restarting a child that keeps dying soon after it started.

    The first death after a long enough life restarts at once; each further quick death
    doubles the delay from ``first`` up to ``cap``.
    """

    def __init__(self, quick: float = 10.0, first: float = 0.5, cap: float = 30.0) -> None:
        self.quick = quick
        self.first = first
        self.cap = cap
        self._failures: dict[tuple[str, int], int] = {}

    def delay(self, key: tuple[str, int], lived: float) -> float:
        failures = 1 if lived >= self.quick else self._failures.get(key, 0) + 1
        self._failures[key] = failures
        if failures <= 1:
            return 0.0
        return min(self.cap, self.first * 2.0 ** (failures - 2))
