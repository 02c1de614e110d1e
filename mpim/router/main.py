"""Router process: session tables, worker reports, and the push ingress (HTTP and ZeroMQ).

One asyncio loop (uvloop) serves everything: the PULL socket workers report to,
the PUB socket into the bus, the ZeroMQ ROUTER ingress, the HTTP server, and the
timers (expiry sweep, status with epoch and room counts).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import uvloop
import zmq

from mpim.bus import SocketReader
from mpim.config import Config
from mpim.listen import BindError, listen_socket
from mpim.router.api import PushApi
from mpim.router.core import Router
from mpim.router.hook import HookError, Receiver, load_hook
from mpim.router.http import HttpProtocol, HttpState
from mpim.router.zingress import Ingress
from mpim.runtime import Endpoints, server_name

log = logging.getLogger("mpim.router")

EXIT_BOOT_ERROR = 3


class _Every:
    """Run ``fn`` every ``interval`` seconds of loop time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, fn: Callable[[], None]) -> None:
        self._loop = loop
        self._interval = interval
        self._fn = fn
        self._handle = loop.call_later(interval, self._run)

    def _run(self) -> None:
        self._handle = self._loop.call_later(self._interval, self._run)
        try:
            self._fn()
        except Exception:
            log.exception("router timer failed")

    def cancel(self) -> None:
        self._handle.cancel()


class Outbox:
    """Publishes once per loop turn: the envelopes for one topic go out as one bus message.

    Per-topic order is kept (a topic's envelopes are concatenated in order, and a
    topic that grows past ``limit`` bytes is sent at once, before anything later).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, pub: zmq.Socket[bytes], limit: int = 1 << 18) -> None:
        self._loop = loop
        self._send = pub.send
        self._limit = limit
        self._topics: dict[bytes, list[bytes]] = {}
        self._sizes: dict[bytes, int] = {}

    def publish(self, topic: bytes, envelope: bytes) -> None:
        topics = self._topics
        if not topics:
            self._loop.call_soon(self.flush)
        parts = topics.get(topic)
        if parts is None:
            topics[topic] = [topic, envelope]
            self._sizes[topic] = len(envelope)
            return
        parts.append(envelope)
        size = self._sizes[topic] + len(envelope)
        self._sizes[topic] = size
        if size >= self._limit:
            del topics[topic]
            self._send(b"".join(parts), _NOBLOCK)

    def flush(self) -> None:
        topics, self._topics = self._topics, {}
        self._sizes = {}
        for parts in topics.values():
            self._send(b"".join(parts), _NOBLOCK)  # PUB drops rather than block


_NOBLOCK = int(zmq.NOBLOCK)


async def _serve(cfg: Config, endpoints: Endpoints) -> int:
    loop = asyncio.get_running_loop()
    endpoints = endpoints.configured(cfg)
    try:
        receiver = Receiver(load_hook(cfg.router.receive_hook))
        http_sock = listen_socket(cfg.http.bind, reuse_port=False)
    except (HookError, BindError) as exc:
        log.error("router cannot start: %s", exc)
        return EXIT_BOOT_ERROR
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pull = ctx.socket(zmq.PULL)
    zin = ctx.socket(zmq.ROUTER)
    sockets = (pub, pull, zin)
    try:
        for sock in sockets:
            sock.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, cfg.bus.hwm)
        pull.setsockopt(zmq.RCVHWM, cfg.bus.hwm)
        zin.setsockopt(zmq.MAXMSGSIZE, cfg.http.max_body + 65536)
        try:
            pub.connect(endpoints.bus_in)
            pull.bind(endpoints.router)
            if cfg.ingress.zmq_bind:
                zin.bind(cfg.ingress.zmq_bind)
        except zmq.ZMQError as exc:
            http_sock.close()
            log.error("router cannot start: cannot bind a ZeroMQ endpoint: %s", exc)
            return EXIT_BOOT_ERROR
        return await _run(cfg, loop, receiver, http_sock, pub, pull, zin)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.destroy(linger=0)


async def _run(
    cfg: Config,
    loop: asyncio.AbstractEventLoop,
    receiver: Receiver,
    http_sock: socket.socket,
    pub: zmq.Socket[bytes],
    pull: zmq.Socket[bytes],
    zin: zmq.Socket[bytes],
) -> int:
    outbox = Outbox(loop, pub)
    publish = outbox.publish

    def reply(frames: list[bytes]) -> None:
        try:
            zin.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.info("cannot answer a ZeroMQ push client: %s", exc)

    rc = cfg.router
    router = Router(cfg, publish, receiver, loop.time(), host=server_name(cfg))
    state = HttpState(cfg, PushApi(cfg, router), loop)
    server = await loop.create_server(lambda: HttpProtocol(state), sock=http_sock, backlog=4096)
    ingress = Ingress(router, cfg.http.max_body)
    reports = SocketReader(loop, pull, pull.recv, lambda data: router.on_report(data, loop.time()))
    pushes = SocketReader(loop, zin, zin.recv_multipart, lambda frames: ingress.on_message(frames, reply))
    readers: list[SocketReader[Any]] = [reports, pushes]
    for reader in readers:
        reader.start()
    last_rooms = [loop.time()]

    def status() -> None:
        now = loop.time()
        with_rooms = now - last_rooms[0] >= rc.online_interval - 1e-3
        if with_rooms:
            last_rooms[0] = now
        router.publish_status(with_rooms)

    timers = [
        _Every(loop, rc.sweep_interval, lambda: router.sweep(loop.time())),
        _Every(loop, rc.report_interval, status),
        _Every(loop, 1.0, state.tick),
    ]
    router.publish_status(True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "router up: http %s, zmq ingress %s, reports %s, epoch %x",
        cfg.http.bind,
        cfg.ingress.zmq_bind or "off",
        pull.getsockopt_string(zmq.LAST_ENDPOINT),
        router.epoch,
    )
    await stop.wait()
    server.close()
    state.close_all()
    for reader in readers:
        reader.stop()
    for timer in timers:
        timer.cancel()
    await receiver.close()
    log.info("router stopped (%d http requests, %d zmq pushes)", state.requests, ingress.requests)
    return 0


def run_router(cfg: Config, endpoints: Endpoints) -> int:
    """Process entry (forked by the master)."""
    return uvloop.run(_serve(cfg, endpoints))
