"""Router process entry (placeholder until the router/ingress work: it only stays alive)."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from mpim.config import Config
from mpim.runtime import Endpoints

log = logging.getLogger("mpim.router")


async def _serve(cfg: Config, endpoints: Endpoints) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, stop.set)
    log.info("router up (run dir %s)", endpoints.run_dir)
    await stop.wait()
    log.info("router stopped")
    return 0


def run_router(cfg: Config, endpoints: Endpoints) -> int:
    return uvloop.run(_serve(cfg, endpoints))
