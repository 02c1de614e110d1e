"""Process entry points for a worker: standalone (``mpim worker``) or under the master."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from mpim import config as config_mod
from mpim import log as mlog
from mpim.config import Config, ConfigError
from mpim.listen import BindError
from mpim.worker.server import Worker

log = logging.getLogger("mpim.worker")

EXIT_BOOT_ERROR = 3


async def _serve_standalone(cfg: Config, path: str | None) -> int:
    loop = asyncio.get_running_loop()
    worker = Worker(cfg, loop, name="worker")
    try:
        await worker.start()
    except BindError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BOOT_ERROR
    addrs = ", ".join([f"tcp {a}" for a in cfg.tcp.bind] + [f"ws {a}" for a in cfg.websocket.bind])
    log.info("worker serving on %s", addrs)

    def reload() -> None:
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        worker.hub.reconfigure(new)
        mlog.set_level(new.log.level)
        log.info("reloaded live settings from %s (binds need a restart)", new.source)

    loop.add_signal_handler(signal.SIGTERM, worker.stop, True)
    loop.add_signal_handler(signal.SIGINT, worker.stop, False)
    loop.add_signal_handler(signal.SIGQUIT, worker.stop, False)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, mlog.reopen)
    await worker.wait_stopped()
    log.info("worker stopped")
    return 0


def run_standalone(cfg: Config, path: str | None) -> int:
    mlog.setup(cfg.log.level, cfg.log.file, "worker")
    return uvloop.run(_serve_standalone(cfg, path))
