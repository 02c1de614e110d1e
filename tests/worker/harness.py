"""An in-process worker on loopback ports, driven by real TCP and WebSocket clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from mpim.client import Client, connect_tcp, connect_ws
from mpim.config import Config, parse_address
from mpim.worker.server import Worker
from tests.support import local_config, run

__all__ = ["Running", "run", "serving"]


class Running:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.hub = worker.hub
        cfg = worker.cfg
        self.tcp = parse_address(cfg.tcp.bind[0])
        self.ws_url = "ws://{}:{}{}".format(*parse_address(cfg.websocket.bind[0]), cfg.websocket.path)
        self.clients: list[Client] = []

    async def tcp_client(self) -> Client:
        client = await connect_tcp(*self.tcp)
        self.clients.append(client)
        return client

    async def ws_client(self, path: str | None = None) -> Client:
        url = self.ws_url if path is None else self.ws_url.rsplit("/", 1)[0] + path
        client = await connect_ws(url)
        self.clients.append(client)
        return client

    async def client(self, kind: str) -> Client:
        return await (self.tcp_client() if kind == "tcp" else self.ws_client())

    async def authed(self, kind: str, **claims: Any) -> Client:
        client = await self.client(kind)
        await client.auth(claims)
        return client

    async def settle(self, until: Callable[[], bool], timeout: float = 5.0) -> None:
        """Let the server run until ``until()`` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not until():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not reached")
            await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(cfg: Config | None = None, **sections: dict[str, Any]) -> AsyncIterator[Running]:
    cfg = cfg or local_config(**sections)
    worker = Worker(cfg, asyncio.get_running_loop())
    await worker.start()
    running = Running(worker)
    try:
        yield running
    finally:
        for client in running.clients:
            with suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
        worker.stop(graceful=False)
        await worker.wait_stopped()
