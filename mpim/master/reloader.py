"""SIGHUP: boot a new generation of workers with the re-read config, then swap generations.

The new file is validated first (a bad one is refused and nothing changes). A file
that changes ``[router] shards`` is refused the same way, whole: the number of router
processes, and which of them owns which users, is fixed while the master runs (it
needs a restart), and a reload that applied the rest would leave the running config
saying something else than the file. Every
worker slot of the new generation is forked; when all of them are bound the new
generation serves, the old one retires, and the router gets SIGHUP if a section it
reads changed (:mod:`mpim.master.reload`). A new-generation worker that dies or
cannot be forked before that abandons the reload.
"""

from __future__ import annotations

import collections
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mpim.config import Config, ConfigError
from mpim.master import reload
from mpim.master.children import BOOTING, READY, ROUTER, WORKER, ChildSpec
from mpim.master.table import ChildTable

if TYPE_CHECKING:
    from mpim.master.arbiter import Host

log = logging.getLogger("mpim.master")


@dataclass
class Serving:
    """The generation that serves: its config, its number and how many worker slots it has."""

    cfg: Config
    generation: int
    workers_wanted: int


@dataclass(frozen=True)
class PendingReload:
    generation: int
    cfg: Config


class Reloader:
    def __init__(
        self, host: Host, table: ChildTable, serving: Serving, counts: collections.Counter[str]
    ) -> None:
        self.host = host
        self.table = table
        self.serving = serving
        self.counts = counts
        self.pending: PendingReload | None = None
        self._generations = serving.generation

    def owns(self, generation: int) -> bool:
        """``generation`` is the one booting for a reload."""
        return self.pending is not None and generation == self.pending.generation

    def begin(self) -> None:
        try:
            new = self.host.load_config()
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.counts["reload_refused"] += 1
            return
        running = self.serving.cfg.router.shards
        if new.router.shards != running:
            log.error(
                "reload refused, keeping the running config: [router] shards %d -> %d needs a restart"
                " of the master",
                running,
                new.router.shards,
            )
            self.counts["reload_refused"] += 1
            return
        if self.pending is not None:
            log.warning("reload: generation %d is still booting; replacing it", self.pending.generation)
            self.drop()
        cfg = self.serving.cfg
        new, pinned = reload.pin_bus_keys(cfg, new)
        changed = ", ".join(reload.changed_sections(cfg, new)) or "nothing; replacing workers anyway"
        self._generations += 1
        self.pending = PendingReload(self._generations, new)
        log.info("reload begin: generation %d from %s (changed: %s)", self._generations, new.source, changed)
        if pinned:
            log.warning("reload keeps %s: the bus cannot move while the master runs", ", ".join(pinned))
        for slot in range(1, new.worker_count() + 1):
            spec = ChildSpec(WORKER, new, slot, self._generations)
            if not self.table.spawn(spec):
                self.abandon(f"cannot fork {spec.label}")
                break

    def worker_ready(self) -> None:
        """A worker is bound: promote the new generation once all of its slots are."""
        pending = self.pending
        if pending and self.table.generation_ready(pending.generation, pending.cfg.worker_count()):
            self._promote()

    def _promote(self) -> None:
        """Every worker of the new generation is bound: it serves; the old one retires."""
        assert self.pending is not None
        now = self.serving
        old_cfg, old_generation = now.cfg, now.generation
        now.cfg, now.generation = self.pending.cfg, self.pending.generation
        now.workers_wanted = now.cfg.worker_count()
        self.pending = None
        self.counts["reload_done"] += 1
        self.host.configure_logging(now.cfg)
        self.table.cancel(WORKER)
        old = [c for c in self.table.live(WORKER) if c.spec.generation != now.generation]
        retiring = [c for c in old if c.state in (BOOTING, READY)]
        for child in retiring:
            self.table.retire(child)
        router = ""
        if reload.router_changed(old_cfg, now.cfg):
            for child in self.table.live(ROUTER):
                self.host.kill(child.pid, signal.SIGHUP)
            router = "; the router applies its new settings in place"
        log.info(
            "reload done: generation %d serving with %d workers; %d workers of generation %d retire"
            " (up to %gs)%s",
            now.generation,
            now.workers_wanted,
            len(retiring),
            old_generation,
            old_cfg.server.reload_drain_timeout,
            router,
        )

    def abandon(self, reason: str) -> None:
        log.error("reload abandoned: %s; generation %d keeps serving", reason, self.serving.generation)
        self.counts["reload_abandoned"] += 1
        self.drop()

    def drop(self) -> None:
        """Stop the booting generation, if any."""
        if self.pending is None:
            return
        for child in self.table.live(WORKER, self.pending.generation):
            self.table.stop_worker(child)
        self.pending = None
