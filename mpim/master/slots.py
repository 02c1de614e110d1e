"""Which children should run for the serving generation, and putting them back when they die.

The bus, the router shards (slots 0..N-1, N = ``[router] shards``) and worker slots
1..N of the serving generation: forked at start, grown and shrunk by SIGTTIN /
SIGTTOU, restarted in their slot after a death (with the table's backoff) unless
the slot is gone or belongs to an old generation.
"""

from __future__ import annotations

import logging

from mpim.master.children import BOOTING, BUS, READY, ROUTER, STOPPING, WORKER, Child, ChildSpec
from mpim.master.reloader import Serving
from mpim.master.table import ChildTable

log = logging.getLogger("mpim.master")


class Slots:
    def __init__(self, table: ChildTable, serving: Serving) -> None:
        self.table = table
        self.serving = serving

    def start(self) -> None:
        now = self.serving
        self._spawn(ChildSpec(BUS, now.cfg))
        for shard in range(now.cfg.router.shards):
            self._spawn(ChildSpec(ROUTER, now.cfg, shard, expect=now.workers_wanted))
        for slot in range(1, now.workers_wanted + 1):
            self._spawn(ChildSpec(WORKER, now.cfg, slot, now.generation))

    def grow(self) -> None:
        now = self.serving
        now.workers_wanted += 1
        log.info("SIGTTIN: workers %d -> %d", now.workers_wanted - 1, now.workers_wanted)
        self._spawn(ChildSpec(WORKER, now.cfg, now.workers_wanted, now.generation))

    def shrink(self) -> None:
        now = self.serving
        if now.workers_wanted <= 1:
            log.warning("SIGTTOU ignored: one worker is the minimum")
            return
        slot = now.workers_wanted
        now.workers_wanted -= 1
        self.table.cancel(WORKER, slot)
        for child in self.table.live(WORKER, now.generation):
            if child.spec.slot == slot and child.state in (BOOTING, READY):
                self.table.retire(child)
        log.info("SIGTTOU: workers %d -> %d (worker %d retires)", slot, now.workers_wanted, slot)

    def died(self, child: Child, how: str) -> None:
        """``child`` exited on its own: restart its slot if it still serves."""
        spec, now = child.spec, self.serving
        if child.is_worker and (spec.generation != now.generation or spec.slot > now.workers_wanted):
            log.info("%s %s", child.name, how)
            return
        self.table.restart_later(child, how)

    def respawn(self, kind: str, slot: int) -> None:
        """A restart is due: fork the slot unless something already serves it."""
        now = self.serving
        if kind != WORKER:  # the bus, or one router shard (alone: the others keep running)
            if not any(c.spec.slot == slot for c in self.table.live(kind)):
                workers = [c for c in self.table.live(WORKER) if c.state != STOPPING]
                expect = len(workers) if kind == ROUTER else 0
                self._spawn(ChildSpec(kind, now.cfg, slot, expect=expect))
            return
        serving = [c for c in self.table.live(WORKER, now.generation) if c.spec.slot == slot]
        if slot <= now.workers_wanted and not any(c.state in (BOOTING, READY) for c in serving):
            self._spawn(ChildSpec(WORKER, now.cfg, slot, now.generation))

    def _spawn(self, spec: ChildSpec) -> None:
        if not self.table.spawn(spec):  # (a reload's generation is forked by the reloader)
            self.table.retry_fork(spec)
