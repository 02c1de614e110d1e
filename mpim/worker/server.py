"""One worker process: bind the client ports, serve, drain.

Staged shutdown (uvicorn's): stop accepting -> ask the router to route nothing
more here and wait until every push it already sent has arrived (the drain
barrier, bounded) -> flush queued pushes and send every client op 6 -> wait for
the sockets to close, up to the graceful timeout -> abort whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

from mpim.config import Config
from mpim.listen import Origin, client_listeners, listen_socket
from mpim.tls import server_context
from mpim.worker.acceptor import Acceptor
from mpim.worker.connections import raise_open_file_limit
from mpim.worker.hub import Hub
from mpim.worker.link import ClusterLink
from mpim.worker.tcp import TcpChannel
from mpim.worker.ws import WsChannel, start_ws_server

log = logging.getLogger("mpim.worker")

DRAIN_BARRIER = 2.0  # longest wait for the router before telling clients to go


class Listening(Protocol):
    """An asyncio server or an :class:`~mpim.worker.acceptor.Acceptor`."""

    def close(self) -> None: ...


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
        self._servers: list[Listening] = []
        self._stopped = asyncio.Event()
        self._hurry = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self.on_drained: Callable[[int], None] | None = None

    async def start(self) -> None:
        """Bind every client port (raises :class:`~mpim.listen.BindError`) and start serving.

        The TLS context is built from ``[tls]`` here, once: a reload's new generation reads
        the files again (raises :class:`~mpim.tls.TlsError` if they went bad since the check).
        """
        cfg = self.cfg
        listeners = client_listeners(cfg)
        tls = server_context(cfg.tls) if any(lis.tls for lis in listeners) else None
        classes = {"tcp": self.hub.channel_class(TcpChannel), "websocket": self.hub.channel_class(WsChannel)}
        sockets = []
        for lis in listeners:
            section = cfg.tcp if lis.kind == "tcp" else cfg.websocket
            tcp = lis.kind == "tcp"
            sndbuf, rcvbuf = (cfg.tcp.sndbuf, cfg.tcp.rcvbuf) if tcp else (0, 0)
            sock = listen_socket(lis.addr, section.backlog, sndbuf=sndbuf, rcvbuf=rcvbuf)
            sockets.append((lis, section.backlog, sock))
        for lis, backlog, sock in sockets:
            server: Listening
            if lis.tls or lis.proxy:
                server = self._acceptor(sock, classes[lis.kind], tls if lis.tls else None, lis.proxy)
            elif lis.kind == "tcp":
                server = await self.loop.create_server(classes["tcp"], sock=sock, backlog=backlog)
            else:
                server = await start_ws_server(self.hub, sock, backlog)
            self._servers.append(server)
            log.debug("%s listening on %s", self.name, lis.describe())
        self.hub.start()
        if cfg.auth.mode == "json":
            log.warning("auth mode is json: clients are trusted, tokens are not verified")

    def _acceptor(
        self, sock: socket.socket, cls: type[asyncio.Protocol], tls: ssl.SSLContext | None, proxy: bool
    ) -> Acceptor:
        def factory(origin: Origin) -> asyncio.Protocol:
            return cls(origin)  # type: ignore[call-arg]

        acceptor = Acceptor(self.loop, sock, factory, self.hub.registry, self.cfg, tls=tls, proxy=proxy)
        acceptor.start()
        return acceptor

    def stop_accepting(self) -> None:
        """Close the listeners only; connected clients keep being served (a retired generation)."""
        for server in self._servers:
            server.close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def stop_now(self) -> None:
        """SIGINT / SIGQUIT: drain without waiting."""
        self.stop(graceful=False)

    def stop(self, graceful: bool = True) -> None:
        """Drain (graceful) or drain without waiting; a second, quick call cuts a drain short."""
        if not graceful:
            self._hurry.set()
        if self._drain_task is None:
            self._drain_task = self.loop.create_task(self._drain(self.cfg.server.graceful_timeout))

    async def _drain(self, timeout: float) -> None:
        for server in self._servers:
            server.close()
        if not self._hurry.is_set():
            await self.hub.link.drain_barrier(min(DRAIN_BARRIER, timeout))
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
