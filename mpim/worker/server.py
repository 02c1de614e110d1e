"""One worker process: bind the client ports, serve, drain.

Staged shutdown (uvicorn's): stop accepting -> flush queued pushes and send every
client op 6 -> wait for the sockets to close, up to the graceful timeout -> abort
whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from mpim.config import Config
from mpim.listen import listen_socket
from mpim.worker.hub import Hub, raise_open_file_limit
from mpim.worker.link import ClusterLink
from mpim.worker.tcp import TcpChannel
from mpim.worker.ws import start_ws_server

log = logging.getLogger("mpim.worker")


class Worker:
    def __init__(
        self,
        cfg: Config,
        loop: asyncio.AbstractEventLoop,
        *,
        name: str = "worker",
        link: ClusterLink | None = None,
    ) -> None:
        self.cfg = cfg
        self.loop = loop
        self.name = name
        raise_open_file_limit()
        self.hub = Hub(cfg, loop, link)
        self._servers: list[asyncio.AbstractServer] = []
        self._stopped = asyncio.Event()
        self._hurry = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self.on_drained: Callable[[int], None] | None = None

    async def start(self) -> None:
        """Bind every client port (raises :class:`~mpim.listen.BindError`) and start serving."""
        cfg = self.cfg
        tcp_class = self.hub.channel_class(TcpChannel)
        sockets = [
            ("tcp", addr, listen_socket(addr, cfg.tcp.backlog, sndbuf=cfg.tcp.sndbuf, rcvbuf=cfg.tcp.rcvbuf))
            for addr in cfg.tcp.bind
        ]
        sockets += [
            ("websocket", addr, listen_socket(addr, cfg.websocket.backlog)) for addr in cfg.websocket.bind
        ]
        for kind, addr, sock in sockets:
            server: asyncio.AbstractServer
            if kind == "tcp":
                server = await self.loop.create_server(tcp_class, sock=sock, backlog=cfg.tcp.backlog)
            else:
                server = await start_ws_server(self.hub, sock)
            self._servers.append(server)
            log.debug("%s listening on %s %s", self.name, kind, addr)
        self.hub.start()
        if cfg.auth.mode == "json":
            log.warning("auth mode is json: clients are trusted, tokens are not verified")

    def stop_accepting(self) -> None:
        """Close the listeners only; connected clients keep being served (a retired generation)."""
        for server in self._servers:
            server.close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def stop(self, graceful: bool = True) -> None:
        """Drain (graceful) or drain without waiting; a second, quick call cuts a drain short."""
        if not graceful:
            self._hurry.set()
        if self._drain_task is None:
            self._drain_task = self.loop.create_task(self._drain(self.cfg.server.graceful_timeout))

    async def _drain(self, timeout: float) -> None:
        for server in self._servers:
            server.close()
        channels = list(self.hub)
        told = self.hub.drain()
        log.info("%s draining: told %d clients to disconnect", self.name, told)
        if self.on_drained is not None:
            self.on_drained(told)
        deadline = self.loop.time() + timeout
        while any(ch.transport is not None for ch in channels) and not self._hurry.is_set():
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), min(0.05, remaining))
        left = [ch for ch in channels if ch.transport is not None]
        for channel in left:
            channel.transport.abort()
        if left:
            log.info("%s drain deadline: aborted %d connections", self.name, len(left))
        self.hub.stop()
        self._stopped.set()
