"""The arbiter's decisions: what to fork, signal or kill, and when.

It makes no system call itself: a :class:`Host` forks and signals, a clock tells
the time, and the master's loop feeds it events (signals, status lines, exits,
ticks). That keeps every decision testable without forking.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from mpim.config import Config
from mpim.listen import client_listeners
from mpim.master import status
from mpim.master.children import (
    BOOTING,
    READY,
    RETIRING,
    STOPPING,
    Child,
    ChildSpec,
    describe_exit,
)
from mpim.master.reloader import Reloader, Serving
from mpim.master.slots import Slots
from mpim.master.status import EXIT_BOOT_ERROR
from mpim.master.stopper import DRAINING, QUICK, Stopper
from mpim.master.table import ChildTable

log = logging.getLogger("mpim.master")

# Phases of the master.
BOOT = "boot"  # the first generation is not bound yet
RUNNING = "running"


class Host(Protocol):
    """What the arbiter asks of the operating system (a fake in tests)."""

    def spawn(self, spec: ChildSpec) -> int: ...
    def kill(self, pid: int, sig: int) -> None: ...
    def load_config(self) -> Config: ...
    def configure_logging(self, cfg: Config) -> None: ...
    def reopen_logs(self) -> None: ...


def addresses(cfg: Config) -> str:
    return ", ".join(lis.describe() for lis in client_listeners(cfg))


class Arbiter:
    def __init__(self, cfg: Config, host: Host, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.clock = clock
        self._phase = BOOT  # then RUNNING; the stopper's mode once stopping
        # reload_done / _abandoned / _refused, restart_<kind>, hung_killed (metrics, via the status file)
        self.counts: collections.Counter[str] = collections.Counter()
        self.serving = Serving(cfg, 1, cfg.worker_count())
        self.table = ChildTable(host, clock, self.counts)
        self.reloader = Reloader(host, self.table, self.serving, self.counts)
        self.stopper = Stopper(host, self.table)
        self.slots = Slots(self.table, self.serving)
        self.children = self.table.children
        self.live = self.table.live

    # -- queries ---------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return self.stopper.mode or self._phase

    @property
    def exit_code(self) -> int | None:
        """Set once every child is gone after a stop: the master exits with it."""
        return self.stopper.exit_code

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (None: only events matter)."""
        return self.table.next_deadline()

    def status(self) -> dict[str, Any]:
        """The master's view for the router (:mod:`mpim.master.statusfile`)."""
        return {
            "pid": os.getpid(),
            "generation": self.serving.generation,
            "shards": self.serving.cfg.router.shards,
            "counts": dict(self.counts),
            "children": self.table.rows(),
        }

    # -- events ----------------------------------------------------------------------
    def start(self) -> None:
        self.slots.start()

    def signal(self, signum: int) -> None:
        try:
            name = signal.Signals(signum).name[3:].lower()
        except ValueError:
            return
        handler: Callable[[], None] | None = getattr(self, f"handle_{name}", None)
        if handler is not None:
            handler()

    def message(self, pid: int, line: str) -> None:
        """A status line from a worker."""
        child = self.children.get(pid)
        if child is None:
            return
        child.last_beat = self.clock()
        if line == status.READY:
            self._on_ready(child)
        else:
            self.stopper.note(line)

    def exited(self, pid: int, code: int) -> None:
        """A child was reaped; ``code`` < 0 means killed by that signal."""
        child = self.table.remove(pid)
        if child is None:
            return
        spec, how = child.spec, describe_exit(code)
        if child.state in (STOPPING, RETIRING) or self.stopper.mode is not None:
            gen = f" of generation {spec.generation}" if child.is_worker else ""
            verb = "retired" if child.state == RETIRING else "stopped"
            log.info("%s%s %s: %s", child.name, gen, verb, how)
        elif self.reloader.owns(spec.generation):
            boot = "; a boot error, see its log above" if code == EXIT_BOOT_ERROR else ""
            self.reloader.abandon(f"{child.name} of the new generation {how} before it was ready{boot}")
        elif code == EXIT_BOOT_ERROR and (self.phase == BOOT or self.table.first(spec.kind, spec.slot)):
            # (a router shard's own boot can fail after the workers are up: a hook, Redis unreachable)
            log.error("%s failed to boot (%s); see its error above. Stopping.", child.name, how)
            self._stop_everyone(EXIT_BOOT_ERROR)
        else:
            self.slots.died(child, how)
        self.table.forget(child)
        self.stopper.advance()

    def tick(self) -> None:
        """Kill children past their deadline or heartbeat; restart those whose backoff is over."""
        self.table.kill_overdue()
        for kind, slot in self.table.due():
            if self.stopper.mode is None:
                self.slots.respawn(kind, slot)

    # -- signals ---------------------------------------------------------------------
    def handle_chld(self) -> None:
        """Nothing: the loop reaps after every wake-up."""

    def handle_hup(self) -> None:
        if not self._busy("reload"):
            self.reloader.begin()

    def handle_term(self) -> None:
        if self.phase == DRAINING:
            log.info("second SIGTERM: stopping now")
            self._stop_everyone(0)
        elif self.phase != QUICK:
            self.reloader.pending = None
            self.stopper.drain(self.serving.cfg)

    def handle_int(self) -> None:
        log.info("SIGINT: stopping now")
        self._stop_everyone(0)

    def handle_quit(self) -> None:
        log.info("SIGQUIT: stopping now")
        self._stop_everyone(0)

    def handle_ttin(self) -> None:
        if not self._busy("SIGTTIN"):
            self.slots.grow()

    def handle_ttou(self) -> None:
        if not self._busy("SIGTTOU"):
            self.slots.shrink()

    def handle_usr1(self) -> None:
        self.host.reopen_logs()
        log.info("reopening log files (master and %d children)", len(self.children))
        for pid in self.children:
            self.host.kill(pid, signal.SIGUSR1)

    def _stop_everyone(self, code: int) -> None:
        self.reloader.pending = None
        self.stopper.quick(code)

    # -- helpers ---------------------------------------------------------------------
    def _busy(self, what: str) -> bool:
        if self.phase == RUNNING and (self.reloader.pending is None or what == "reload"):
            return False
        why = "a reload is in progress" if self.phase == RUNNING else f"the master is {self.phase}"
        if self.phase == BOOT:
            why = "the first workers are still booting"
        log.warning("%s ignored: %s", what, why)
        return True

    def _on_ready(self, child: Child) -> None:
        if child.state != BOOTING:
            return
        child.state = READY
        log.info("%s up (generation %d)", child.name, child.spec.generation)
        if self.phase == BOOT and self.table.generation_ready(
            self.serving.generation, self.serving.workers_wanted
        ):
            self._phase = RUNNING
            log.info(
                "bound: %s; %d workers serving", addresses(self.serving.cfg), self.serving.workers_wanted
            )
        self.reloader.worker_ready()
