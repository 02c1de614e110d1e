"""Listeners with something before the goim connection: a PROXY header, a TLS handshake, or both.

How this works: a plain listener is an asyncio server whose protocol is the
channel (uvloop accepts in C). A TLS or PROXY listener accepts here instead, so
that for each connection it can, in order:

1. read the PROXY header without reading a byte past it: peek at the socket
   (``MSG_PEEK``), parse (:mod:`mpim.proxyproto`), then take exactly the
   header's bytes. Whatever follows (a TLS ClientHello, goim frames, an HTTP
   upgrade) stays in the kernel for the transport. Bytes of an incomplete header
   are all header bytes, so they are taken and kept until the rest arrives,
   within ``[proxy] timeout``; a source outside ``[proxy] trusted`` or a bad
   header closes the socket;
2. ask the per-IP limits about the client (the header's address), before any
   TLS work is spent on it;
3. hand the socket to ``loop.connect_accepted_socket`` with the TLS context and
   ``[tls] handshake_timeout``. The channel's ``connection_made`` - and with it
   the goim handshake deadline - comes after the TLS handshake.

The channel learns its client address from the :class:`~mpim.listen.Origin` it
is made with; the per-IP count it holds is released when it closes (or here, if
the TLS handshake fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpim import proxyproto
from mpim.listen import Origin
from mpim.worker.iplimits import in_networks, networks

if TYPE_CHECKING:
    from mpim.config import Config
    from mpim.worker.connections import Connections

log = logging.getLogger("mpim.worker")

ACCEPT_BATCH = 64  # connections accepted per wake-up
_EMFILE_PAUSE = 1.0  # out of descriptors: stop accepting this long
_PEEK = 4096


class _HeaderRead:
    """One connection waiting for its PROXY header."""

    __slots__ = ("acceptor", "buf", "peer", "sock", "timer")

    def __init__(self, acceptor: Acceptor, sock: socket.socket, peer: tuple[str, int]) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.peer = peer
        self.buf = b""
        loop = acceptor.loop
        self.timer = loop.call_later(acceptor.proxy_timeout, self.expired)
        loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        sock = self.sock
        try:
            data = sock.recv(_PEEK, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(f"reading its PROXY header failed: {exc.strerror or exc}", quiet=True)
            return
        if not data:
            self.fail("closed before sending a whole PROXY header", quiet=True)
            return
        try:
            parsed = proxyproto.parse(self.buf + data)
        except proxyproto.ProxyError as exc:
            self.fail(str(exc))
            return
        if parsed is None:  # every byte so far is header: take them, wait for the rest
            self.buf += sock.recv(len(data))
            return
        rest = parsed.length - len(self.buf)
        if rest and len(sock.recv(rest)) != rest:  # peeked, so it is there
            self.fail("lost bytes of its PROXY header", quiet=True)
            return
        self.done()
        source = parsed.header.source or self.peer  # LOCAL / UNKNOWN: the balancer itself
        self.acceptor.admit(sock, Origin(source[0], source[1]))

    def expired(self) -> None:
        self.fail(f"no PROXY header within {self.acceptor.proxy_timeout:g}s", quiet=True)

    def done(self) -> None:
        self.timer.cancel()
        self.acceptor.loop.remove_reader(self.sock.fileno())
        self.acceptor.reading.discard(self)

    def fail(self, why: str, quiet: bool = False) -> None:
        self.done()
        with contextlib.suppress(OSError):  # take what was sent, so the close is a FIN, not a reset
            self.sock.recv(_PEEK)
        self.sock.close()
        self.acceptor.refused_proxy(self.peer, why, quiet)


class Acceptor:
    """Accepts on one listening socket; ``close()`` stops accepting (like ``AbstractServer.close``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[Origin], asyncio.Protocol],
        registry: Connections,
        cfg: Config,
        *,
        tls: ssl.SSLContext | None,
        proxy: bool,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.registry = registry
        self.stats = registry.stats
        self.tls = tls
        self.tls_timeout = cfg.tls.handshake_timeout
        self.proxy = proxy
        self.proxy_timeout = cfg.proxy.timeout
        self.trusted = networks(cfg.proxy.trusted)
        self.reading: set[_HeaderRead] = set()
        self.handshakes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._paused: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; connections still reading a PROXY header are dropped (TLS handshakes
        under way finish, bounded by their timeout)."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for reader in list(self.reading):
            reader.done()
            reader.sock.close()

    # -- accepting ------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error(
                        "accept failed (%s): pausing this listener for %gs", exc.strerror, _EMFILE_PAUSE
                    )
                    self.loop.remove_reader(self.sock.fileno())
                    self._paused = self.loop.call_later(_EMFILE_PAUSE, self._resume)
                    return
                continue  # ECONNABORTED and the like: that connection is gone
            sock.setblocking(False)
            peer = (str(addr[0]), int(addr[1])) if isinstance(addr, tuple) else ("", 0)
            if not self.proxy:
                self.admit(sock, Origin(*peer))
            elif self.trusted and not in_networks(peer[0], self.trusted):
                sock.close()
                self.refused_proxy(peer, "not in [proxy] trusted, may not send a PROXY header")
            else:
                self.reading.add(_HeaderRead(self, sock, peer))

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def admit(self, sock: socket.socket, origin: Origin) -> None:
        """The client is known: the limits decide, then TLS (if any) and the channel."""
        if not self.registry.admit(origin.ip, len(self.handshakes)):
            sock.close()
            return
        origin.admitted = True
        task = self.loop.create_task(self._connect(sock, origin))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    async def _connect(self, sock: socket.socket, origin: Origin) -> None:
        kw: dict[str, Any] = {}
        if self.tls is not None:
            kw = {"ssl": self.tls, "ssl_handshake_timeout": self.tls_timeout}
        try:
            await self.loop.connect_accepted_socket(lambda: self.factory(origin), sock, **kw)
        except Exception as exc:  # a failed TLS handshake (bad bytes, timeout, reset)
            self.registry.release(origin.ip)
            self.stats["tls_failed"] += 1
            self.registry.limits.throttled(origin.ip, f"TLS handshake failed: {_why(exc)}", "closing")
            sock.close()

    def refused_proxy(self, peer: tuple[str, int], why: str, quiet: bool = False) -> None:
        self.stats["proxy_refused"] += 1
        if quiet:
            log.debug("closing %s:%d on a PROXY listener: %s", peer[0], peer[1], why)
        else:
            self.registry.limits.throttled(peer[0], f"on a PROXY listener: {why}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__
