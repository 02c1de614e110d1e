"""The bus: topics, the XSUB/XPUB forwarder process, and a socket reader.

How this works: the router connects an XPUB socket to the forwarder's XSUB side;
every worker connects an XSUB socket to its XPUB side. ``zmq.proxy`` forwards
messages down and subscriptions up, so the router only sends a room message
when some worker subscribed to that room's topic, and the forwarder only passes
it to those workers. A message is one frame: the topic followed directly by a
msgpack array of records (:data:`mpim.records.BusRecord`); the router packs what
it publishes to one topic in one turn of its event loop into one message, and
ends every turn that published with a numbered :class:`~mpim.records.Mark` on the
broadcast topic. Workers report the marks they took (on their link), which is how
the router knows a room push reached every worker before it answers "ok".

Upstream, a worker's XSUB sends its subscriptions and, after them on the same
pipe, :class:`~mpim.records.BusFence` records. Because one pipe keeps its order
through the forwarder, a fence that reaches the router proves that every
subscription the worker sent before it is in place at the forwarder and at the
router: a client whose room was just subscribed is told "authenticated" only
after its room's fence came through.

Topics are prefix-free (a SUB filter is a byte-prefix match, so no topic may be
the prefix of another): ``b"r" + room id + b"\\0"`` (room ids never contain NUL)
and ``b"b"`` (everyone, and the marks). Unicast travels on the link, not here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import zmq

from mpim import log as mlog
from mpim.config import Config
from mpim.runtime import Endpoints

log = logging.getLogger("mpim.bus")
T = TypeVar("T")
_NOBLOCK = int(zmq.NOBLOCK)

# -- topics ----------------------------------------------------------------------------
BROADCAST = b"b"
SUBSCRIBE = b"\x01"
UNSUBSCRIBE = b"\x00"


def room_topic(room_id: str) -> bytes:
    return b"r" + room_id.encode() + b"\x00"


def split(message: bytes) -> tuple[bytes, bytes]:
    """A bus message -> (topic, records); ``ValueError`` if it has no known topic."""
    tag = message[:1]
    if tag == b"r":
        end = message.index(b"\x00") + 1
        return message[:end], message[end:]
    if tag == BROADCAST:
        return tag, message[1:]
    raise ValueError(f"unknown topic in {message[:40]!r}")


def room_of(topic: bytes) -> str:
    """The room id of a room topic (``ValueError`` for any other topic)."""
    if topic[:1] != b"r" or topic[-1:] != b"\x00":
        raise ValueError(f"not a room topic: {topic[:40]!r}")
    return topic[1:-1].decode()


# -- sockets on an asyncio loop --------------------------------------------------------------
class SocketReader(Generic[T]):
    """Calls ``handle(message)`` for every message of a ZeroMQ socket, from the event loop.

    ``recv`` is the socket's ``recv`` (one frame, bytes) or ``recv_multipart``.

    The socket's FD only signals that *something* changed (edge-like), so each
    wake-up drains up to ``batch`` messages and reschedules itself while more may
    be waiting. Call :meth:`poke` after sending on or re-subscribing the socket.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket[bytes],
        recv: Callable[[int], T],
        handle: Callable[[T], None],
        batch: int = 512,
    ) -> None:
        self._loop = loop
        self._recv = recv
        self._handle = handle
        self._batch = batch
        self._scheduled = False
        self._stopped = False
        self._fd = int(sock.getsockopt(zmq.FD))

    def start(self) -> None:
        self._loop.add_reader(self._fd, self.poke)
        self.poke()

    def stop(self) -> None:
        """Stop reading (before the socket is closed: a drain already scheduled does nothing)."""
        self._stopped = True
        self._loop.remove_reader(self._fd)

    def poke(self) -> None:
        if not self._scheduled and not self._stopped:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        recv = self._recv
        for _ in range(self._batch):
            try:
                message = recv(_NOBLOCK)
            except zmq.Again:
                return
            except zmq.ContextTerminated:
                return
            try:
                self._handle(message)
            except Exception:
                log.exception("error handling a ZeroMQ message")
        self.poke()


# -- the forwarder process -------------------------------------------------------------------
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
_CONTROL = "inproc://bus-control"


def run_bus(cfg: Config, endpoints: Endpoints) -> int:
    """Process entry: bind both sides and forward until SIGTERM (or SIGINT / SIGQUIT).

    ``zmq.proxy_steerable`` runs in a thread; the main thread waits for signals with
    ``sigwait`` (they are blocked everywhere, so none can land inside the proxy's C
    loop and be missed) and stops the proxy through its control socket. SIGUSR1
    reopens the log file.
    """
    endpoints = endpoints.configured(cfg)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS | {signal.SIGUSR1})
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    control = ctx.socket(zmq.PAIR)
    steer = ctx.socket(zmq.PAIR)
    sockets = (xsub, xpub, control, steer)
    try:
        xsub.setsockopt(zmq.RCVHWM, cfg.bus.hwm)
        xpub.setsockopt(zmq.SNDHWM, cfg.bus.hwm)
        xsub.bind(endpoints.bus_in)
        xpub.bind(endpoints.bus_out)
        control.bind(_CONTROL)
        steer.connect(_CONTROL)
        proxy = threading.Thread(
            target=zmq.proxy_steerable, args=(xsub, xpub, None, control), name="bus-proxy", daemon=True
        )
        proxy.start()
        log.info("bus forwarding %s -> %s", endpoints.bus_in, endpoints.bus_out)
        while signal.sigwait(_STOP_SIGNALS | {signal.SIGUSR1}) == signal.SIGUSR1:
            mlog.reopen()
        steer.send(b"TERMINATE")
        proxy.join(5)
        log.info("bus stopped")
        return 0
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.destroy(linger=0)
