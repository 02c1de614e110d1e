"""Stopping the master: the SIGTERM drain and the fast stop, in order, then the exit code.

A drain (SIGTERM) tells the router to refuse pushes and the workers to drain their
clients, then stops the router and the bus once no worker is left. A fast stop
(SIGINT, SIGQUIT, a second SIGTERM, a boot error) sends SIGQUIT to everyone at once.
Whoever outlives its deadline is SIGKILLed by the table's tick.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from mpim.config import Config
from mpim.master import status
from mpim.master.children import BUS, ROUTER, STOPPING, WORKER
from mpim.master.table import ChildTable

if TYPE_CHECKING:
    from mpim.master.arbiter import Host

log = logging.getLogger("mpim.master")

DRAINING = "draining"  # SIGTERM: workers first, then router, then bus
QUICK = "quick"  # SIGINT / SIGQUIT / a second SIGTERM / a boot error: everyone at once

HELPER_STOP = 10.0  # router and bus: SIGTERM -> SIGKILL
QUICK_STOP = 5.0  # fast stop: SIGQUIT -> SIGKILL


class Stopper:
    def __init__(self, host: Host, table: ChildTable) -> None:
        self.host = host
        self.table = table
        self.mode: str | None = None  # DRAINING or QUICK once stopping
        self.exit_code: int | None = None  # set when every child is gone
        self.told = 0  # clients the workers told to disconnect
        self._code = 0

    def note(self, line: str) -> None:
        """A worker's status line: while stopping, ``told N`` counts its clients."""
        if self.mode is not None and line.startswith(status.TOLD + " "):
            word = line.rsplit(maxsplit=1)[-1]
            self.told += int(word) if word.isdigit() else 0

    def drain(self, cfg: Config) -> None:
        self.mode = DRAINING
        self.table.cancel()
        for router in self.table.live(ROUTER):
            self.host.kill(router.pid, signal.SIGUSR2)  # refuse pushes from now on
        workers = self.table.live(WORKER)
        log.info(
            "drain begin: %d workers stop accepting and tell their clients to disconnect (up to %gs)",
            len(workers),
            cfg.server.graceful_timeout,
        )
        for child in workers:
            self.table.stop_worker(child)
        self.advance()

    def quick(self, code: int) -> None:
        if self.mode == QUICK:
            return
        self.mode = QUICK
        self._code = code
        self.table.cancel()
        for child in self.table.children.values():
            self.table.stop(child, signal.SIGQUIT, QUICK_STOP)
        self.advance()

    def advance(self) -> None:
        """Drain order: workers, then the router, then the bus; then exit."""
        if self.mode is None or self.exit_code is not None:
            return
        if self.table.live(WORKER):
            return
        for kind in (ROUTER, BUS):
            helpers = self.table.live(kind)
            for child in helpers:
                if child.state != STOPPING:
                    self.table.stop(child, signal.SIGTERM, HELPER_STOP)
            if helpers:
                return
        self.exit_code = self._code
        if self.mode == DRAINING:
            log.info("drain done: told %d clients to disconnect (op 6); exit %d", self.told, self.exit_code)
        else:
            log.info("stopped: told %d clients to disconnect (op 6); exit %d", self.told, self.exit_code)
