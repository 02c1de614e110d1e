"""Process entry points for a worker: standalone (``mpim worker``) or under the master."""

from __future__ import annotations

import asyncio
import logging

import uvloop
from setproctitle import setproctitle

from mpim import config as config_mod
from mpim import log as mlog
from mpim import signals
from mpim.auth import AuthKeyError
from mpim.config import Config, ConfigError
from mpim.listen import BindError, client_listeners
from mpim.master.status import BEAT, EXIT_BOOT_ERROR, READY, TOLD, StatusWriter
from mpim.runtime import Endpoints
from mpim.tls import TlsError
from mpim.worker.server import Worker
from mpim.worker.zlink import make_cluster_link

log = logging.getLogger("mpim.worker")

__all__ = ["EXIT_BOOT_ERROR", "run_standalone", "run_worker"]

# A port taken, or a certificate / public key file that went bad after the config check.
BOOT_ERRORS = (BindError, TlsError, AuthKeyError)


async def _serve_standalone(cfg: Config, path: str | None) -> int:
    loop = asyncio.get_running_loop()
    try:
        worker = Worker(cfg, loop, name="worker")
        await worker.start()
    except BOOT_ERRORS as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BOOT_ERROR
    log.info("worker serving on %s", ", ".join(lis.describe() for lis in client_listeners(cfg)))

    def reload() -> None:
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        worker.hub.reconfigure(new)
        log.info("reloaded live settings from %s (binds need a restart)", new.source)
        mlog.set_level(new.log.level)

    signals.install(loop, worker.stop, worker.stop_now, SIGHUP=reload)
    await worker.wait_stopped()
    log.info("worker stopped")
    return 0


def run_standalone(cfg: Config, path: str | None) -> int:
    mlog.setup(cfg.log.level, cfg.log.file, "worker")
    return uvloop.run(_serve_standalone(cfg, path))


# -- under the master ------------------------------------------------------------------


async def _beat(worker: Worker, status: StatusWriter, interval: float) -> None:
    """Tell the master the loop is alive; stop serving if the master is gone."""
    while status.send(BEAT):
        await asyncio.sleep(interval)
    log.warning("%s: the master is gone; stopping", worker.name)
    worker.stop()


async def _retire(worker: Worker, slot: int) -> None:
    """Old generation after a reload: stop accepting, serve the clients until they leave."""
    loop = asyncio.get_running_loop()
    limit = worker.cfg.server.reload_drain_timeout
    worker.stop_accepting()
    setproctitle(f"mpim: worker {slot} (retiring)")
    log.info(
        "%s retiring: not accepting; %d clients may stay up to %gs",
        worker.name,
        worker.hub.connections,
        limit,
    )
    deadline = loop.time() + limit
    while worker.hub.connections and loop.time() < deadline:
        await asyncio.sleep(0.2)
    worker.stop()


async def _serve_supervised(cfg: Config, endpoints: Endpoints, slot: int, status: StatusWriter) -> int:
    loop = asyncio.get_running_loop()
    name = f"worker {slot}"
    # The link names itself by slot and pid, so overlapping generations never share an id.
    link = make_cluster_link(cfg, endpoints, str(slot))

    def drained(told: int) -> None:
        status.send(f"{TOLD} {told}")

    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            worker = Worker(cfg, loop, name=name, link=link)
            worker.on_drained = drained
            await worker.start()
        except BOOT_ERRORS as exc:
            log.error("%s cannot start: %s", name, exc)
            return EXIT_BOOT_ERROR
        signals.install(
            loop,
            worker.stop,
            worker.stop_now,
            SIGUSR2=lambda: tasks.append(loop.create_task(_retire(worker, slot))),
        )
        tasks.append(loop.create_task(_beat(worker, status, cfg.server.worker_timeout / 4)))
        status.send(READY)
        log.debug("%s bound and serving", name)
        await worker.wait_stopped()
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await link.close()


def run_worker(cfg: Config, endpoints: Endpoints, slot: int, status_fd: int) -> int:
    """Entry of a worker forked by the master (logging and title are already set)."""
    return uvloop.run(_serve_supervised(cfg, endpoints, slot, StatusWriter(status_fd)))
