"""The master's children table: who runs with which role, their deadlines, and restarts.

It forks and signals through a :class:`~mpim.master.arbiter.Host` and decides
nothing about phases or generations: the arbiter says what to spawn, stop, retire or
restart, and the table keeps the pids, the kill deadlines and the backoff.
"""

from __future__ import annotations

import collections
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpim.master.children import BOOTING, READY, RETIRING, STOPPING, WORKER, Backoff, Child, ChildSpec

if TYPE_CHECKING:
    from mpim.master.arbiter import Host

log = logging.getLogger("mpim.master")

STOP_MARGIN = 5.0  # beyond a worker's own drain deadline before SIGKILL
FORK_RETRY = 1.0  # after os.fork failed

Slot = tuple[str, int]  # (kind, slot): where a restart goes


class ChildTable:
    def __init__(self, host: Host, clock: Callable[[], float], counts: collections.Counter[str]) -> None:
        self.host = host
        self.clock = clock
        self.counts = counts
        self.children: dict[int, Child] = {}
        self.backoff = Backoff()
        self._respawn_at: dict[Slot, float] = {}
        self._helpers_exited: set[Slot] = set()  # helpers (router shards, bus) that exited once

    # -- queries ---------------------------------------------------------------------
    def first(self, kind: str, slot: int = 0) -> bool:
        """The first incarnation of a router shard or the bus (a boot error there is fatal)."""
        return kind != WORKER and (kind, slot) not in self._helpers_exited

    def live(self, kind: str, generation: int | None = None) -> list[Child]:
        return [
            c
            for c in self.children.values()
            if c.spec.kind == kind and (generation is None or c.spec.generation == generation)
        ]

    def generation_ready(self, generation: int, count: int) -> bool:
        ready = {c.spec.slot for c in self.live(WORKER, generation) if c.state == READY}
        return ready.issuperset(range(1, count + 1))

    def next_deadline(self) -> float | None:
        times = list(self._respawn_at.values())
        for child in self.children.values():
            if child.kill_at is not None:
                times.append(child.kill_at)
            if child.is_worker:
                times.append(child.last_beat + child.spec.cfg.server.worker_timeout)
        return min(times, default=None)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "pid": c.pid,
                "kind": c.spec.kind,
                "slot": c.spec.slot,
                "generation": c.spec.generation,
                "state": c.state,
            }
            for c in sorted(self.children.values(), key=lambda c: c.pid)
        ]

    # -- children --------------------------------------------------------------------
    def spawn(self, spec: ChildSpec) -> bool:
        """Fork ``spec``; False (logged) if the fork failed."""
        now = self.clock()
        try:
            pid = self.host.spawn(spec)
        except OSError as exc:  # out of processes or memory: try again, keep what runs
            log.error("cannot fork %s: %s", spec.label, exc)
            return False
        child = Child(spec, pid, now, now, BOOTING if spec.kind == WORKER else READY)
        self.children[pid] = child
        if child.is_worker:
            log.debug("forked %s for generation %d", child.name, spec.generation)
        else:
            log.info("%s started", child.name)
        return True

    def remove(self, pid: int) -> Child | None:
        return self.children.pop(pid, None)

    def forget(self, child: Child) -> None:
        """After ``child``'s exit was handled: a helper's next incarnation is a restart."""
        if not child.is_worker:
            self._helpers_exited.add((child.spec.kind, child.spec.slot))

    def stop(self, child: Child, sig: int, timeout: float) -> None:
        child.state = STOPPING
        deadline = self.clock() + timeout
        child.kill_at = deadline if child.kill_at is None else min(child.kill_at, deadline)
        self.host.kill(child.pid, sig)

    def stop_worker(self, child: Child) -> None:
        """SIGTERM: drain, with its own graceful timeout."""
        self.stop(child, signal.SIGTERM, child.spec.cfg.server.graceful_timeout + STOP_MARGIN)

    def retire(self, child: Child) -> None:
        """An old worker stops accepting but serves its clients until they leave or the deadline."""
        if child.state == BOOTING:
            self.stop_worker(child)
            return
        srv = child.spec.cfg.server
        child.state = RETIRING
        child.kill_at = self.clock() + srv.reload_drain_timeout + srv.graceful_timeout + STOP_MARGIN
        self.host.kill(child.pid, signal.SIGUSR2)

    def kill_overdue(self) -> None:
        """SIGKILL children past their deadline or heartbeat."""
        now = self.clock()
        for child in list(self.children.values()):
            if child.kill_at is not None and now >= child.kill_at:
                log.warning("%s did not exit in time; killing it", child.name)
                child.kill_at = None
                self.host.kill(child.pid, signal.SIGKILL)
            elif child.is_worker and now - child.last_beat >= child.spec.cfg.server.worker_timeout:
                log.warning(
                    "%s is hung: no heartbeat for %.1fs; killing it", child.name, now - child.last_beat
                )
                self.counts["hung_killed"] += 1
                child.last_beat = now
                self.host.kill(child.pid, signal.SIGKILL)

    # -- restarts --------------------------------------------------------------------
    def restart_later(self, child: Child, how: str) -> None:
        """Restart ``child``'s slot after its backoff."""
        spec = child.spec
        key = (spec.kind, spec.slot)
        self.counts[f"restart_{spec.kind}"] += 1
        delay = self.backoff.delay(key, self.clock() - child.started)
        self._respawn_at[key] = self.clock() + delay
        log.warning("%s %s; restarting %s", child.name, how, f"in {delay:g}s" if delay else "now")

    def retry_fork(self, spec: ChildSpec) -> None:
        self._respawn_at[(spec.kind, spec.slot)] = self.clock() + FORK_RETRY

    def due(self) -> list[Slot]:
        """The slots whose restart time has come (taken off the schedule)."""
        now = self.clock()
        keys = [key for key, when in self._respawn_at.items() if when <= now]
        for key in keys:
            del self._respawn_at[key]
        return keys

    def cancel(self, kind: str | None = None, slot: int | None = None) -> None:
        """Drop scheduled restarts: all, those of a kind, or one slot."""
        for key in list(self._respawn_at):
            if (kind is None or key[0] == kind) and (slot is None or key[1] == slot):
                del self._respawn_at[key]
