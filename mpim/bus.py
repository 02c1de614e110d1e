"""The bus: ZeroMQ wire formats, the XSUB/XPUB forwarder process, and a socket reader.

How this works: the router connects a PUB socket to the forwarder's XSUB side;
every worker connects a SUB socket to its XPUB side. ``zmq.proxy`` forwards
messages down and subscriptions up, so the router's PUB only sends a room message
when some worker subscribed to that room's topic, and the forwarder only passes
it to those workers. A message is one frame: the topic followed directly by one
or more envelopes (the router packs everything it publishes to one topic in one
turn of its event loop into one message: one send, one wake-up of ZeroMQ's I/O
thread, one receive; the topic's own end makes it splittable).

Topics are prefix-free (a SUB filter is a byte-prefix match, so no topic may be
the prefix of another):

- ``b"w" + worker id + b"\\0"`` -- one worker incarnation (push by key or mid,
  kicks, resync requests);
- ``b"r" + room id + b"\\0"`` -- one room (room ids never contain NUL);
- ``b"b"`` -- push to everyone; ``b"c"`` -- router status (epoch, room counts).

Envelopes are msgpack arrays whose first item is the kind (``PUSH_KEYS``...).
Workers report to the router on a separate PUSH -> PULL path; a report is the
msgpack array ``[host, name, pid, events]`` with events such as
``[EV_CONNECT, key, mid, room, ip]`` (see the ``EV_*`` kinds). One PUSH
socket per worker keeps a worker's events in order; messages on the bus keep
their publish order, so pushes to one room arrive in order at every member.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgpack
import zmq

from mpim import log as mlog
from mpim.config import Config
from mpim.runtime import Endpoints

log = logging.getLogger("mpim.bus")
T = TypeVar("T")
_NOBLOCK = int(zmq.NOBLOCK)

# -- topics ----------------------------------------------------------------------------
BROADCAST = b"b"
CONTROL = b"c"


def worker_topic(worker_id: str) -> bytes:
    return b"w" + worker_id.encode() + b"\x00"


def room_topic(room_id: str) -> bytes:
    return b"r" + room_id.encode() + b"\x00"


def split(message: bytes) -> tuple[bytes, bytes]:
    """A bus message -> (topic, envelope); ``ValueError`` if it has no known topic."""
    tag = message[:1]
    if tag in (b"r", b"w"):
        end = message.index(b"\x00") + 1
        return message[:end], message[end:]
    if tag in (BROADCAST, CONTROL):
        return tag, message[1:]
    raise ValueError(f"unknown topic in {message[:40]!r}")


def room_of(topic: bytes) -> str:
    """The room id of a room topic (``ValueError`` for any other topic)."""
    if topic[:1] != b"r" or topic[-1:] != b"\x00":
        raise ValueError(f"not a room topic: {topic[:40]!r}")
    return topic[1:-1].decode()


# -- bus envelopes (router -> workers) ---------------------------------------------------
PUSH_KEYS = 1  # [PUSH_KEYS, op, [key...], body]
PUSH_ROOM = 2  # [PUSH_ROOM, op, body]          (room id from the topic)
PUSH_ALL = 3  # [PUSH_ALL, op, speed, body]     (speed per worker, 0 = unpaced)
KICK = 4  # [KICK, [key...]]                    (a newer connection took the key)
RESYNC = 5  # [RESYNC]                           (report every session again)
STATUS = 6  # [STATUS, epoch, {room: count} | None]

# -- report events (worker -> router) -----------------------------------------------------
EV_CONNECT = 1  # [EV_CONNECT, key, mid, room, ip]
EV_DISCONNECT = 2  # [EV_DISCONNECT, key]
EV_ROOM = 3  # [EV_ROOM, key, room]             ("" = left every room)
EV_UPSTREAM = 4  # [EV_UPSTREAM, key, mid, op, body]
EV_ALIVE = 5  # [EV_ALIVE, conns, epoch, [heart-beaten key...], {room: local count} | None]
EV_SYNC = 6  # [EV_SYNC, epoch, [[key, mid, room, ip]...]]  (the complete set)
EV_BYE = 7  # [EV_BYE]                           (clean exit: forget me now)

_packb = msgpack.Packer(use_bin_type=True).pack


def pack(value: Any) -> bytes:
    return _packb(value)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """Decode one msgpack value; raises ``ValueError`` for anything malformed."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"malformed msgpack: {str(exc) or type(exc).__name__}") from None


def unpack_all(data: bytes) -> list[Any]:
    """Decode a run of msgpack values (a bus message's envelopes); ``ValueError`` if malformed."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1))
    values = []
    end = 0
    try:
        unpacker.feed(data)
        for value in unpacker:
            values.append(value)
            end = unpacker.tell()
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"malformed msgpack: {str(exc) or type(exc).__name__}") from None
    if not values or end != len(data):
        raise ValueError("malformed msgpack: truncated envelope")
    return values


def push_keys(op: int, keys: list[str], body: bytes) -> bytes:
    return pack([PUSH_KEYS, op, keys, body])


def push_room(op: int, body: bytes) -> bytes:
    return pack([PUSH_ROOM, op, body])


def push_all(op: int, speed: int, body: bytes) -> bytes:
    return pack([PUSH_ALL, op, speed, body])


def status(epoch: int, rooms: dict[str, int] | None) -> bytes:
    return pack([STATUS, epoch, rooms])


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
        self._fd = int(sock.getsockopt(zmq.FD))

    def start(self) -> None:
        self._loop.add_reader(self._fd, self.poke)
        self.poke()

    def stop(self) -> None:
        self._loop.remove_reader(self._fd)

    def poke(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
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
