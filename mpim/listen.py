"""Listening sockets (every worker binds the client ports itself with SO_REUSEPORT) and peer names."""

from __future__ import annotations

import errno
import socket
from typing import Any, NamedTuple

from mpim.config import Config, parse_address


class BindError(Exception):
    """A port cannot be bound; the message names it."""


def listen_socket(
    addr: str,
    backlog: int = 4096,
    *,
    reuse_port: bool = True,
    sndbuf: int = 0,
    rcvbuf: int = 0,
    listen: bool = True,
) -> socket.socket:
    host, port = parse_address(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BindError(f"port {port} on {host} is already in use by another program") from None
        raise BindError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def probe(addrs: list[str]) -> None:
    """Fail with :class:`BindError` if any address is held by another program.

    The probe binds without SO_REUSEPORT, so it also notices another mpim (or any
    program) that shares the port with SO_REUSEPORT under the same user.
    """
    for addr in addrs:
        listen_socket(addr, reuse_port=False, listen=False).close()


def zmq_tcp_address(endpoint: str) -> str | None:
    """``"tcp://127.0.0.1:3112"`` -> ``"127.0.0.1:3112"`` (``*`` = every address); else None."""
    if not endpoint.startswith("tcp://"):
        return None
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not port.isdigit():
        return None
    return f"{'0.0.0.0' if host in ('*', '') else host}:{port}"


class Listener(NamedTuple):
    """One client listener: ``kind`` "tcp" or "websocket", TLS, PROXY header first."""

    kind: str
    addr: str
    tls: bool
    proxy: bool

    def describe(self) -> str:
        name = {"tcp": "tls" if self.tls else "tcp", "websocket": "wss" if self.tls else "ws"}[self.kind]
        return f"{name}{'+proxy' if self.proxy else ''} {self.addr}"


def client_listeners(cfg: Config) -> list[Listener]:
    """Every client listener a worker binds (TLS ones only when ``[tls] cert_file`` is set)."""
    out = [Listener("tcp", a, False, cfg.tcp.proxy_protocol) for a in cfg.tcp.bind]
    out += [Listener("websocket", a, False, cfg.websocket.proxy_protocol) for a in cfg.websocket.bind]
    if cfg.tls.cert_file:
        out += [Listener("tcp", a, True, cfg.tcp.tls_proxy_protocol) for a in cfg.tcp.tls_bind]
        out += [
            Listener("websocket", a, True, cfg.websocket.tls_proxy_protocol) for a in cfg.websocket.tls_bind
        ]
    return out


class Origin:
    """Where a connection comes from when the transport's peer does not say it (a PROXY header), or
    when it was admitted by the per-IP limits before its transport existed (TLS listeners)."""

    __slots__ = ("admitted", "ip", "port")

    def __init__(self, ip: str, port: int, admitted: bool = False) -> None:
        self.ip = ip
        self.port = port
        self.admitted = admitted

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


def peer_name(transport: Any) -> str:
    """``ip:port`` of a transport's peer, or ``?`` (for log lines)."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "?"


def peer_ip(transport: Any) -> str:
    """The peer's IP address, or ``""``."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
