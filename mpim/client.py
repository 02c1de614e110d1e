"""A small asyncio goim client over TCP or WebSocket (tests, examples, `mpim client`).

It speaks the wire contract only; it shares the codec with the server but no
server code. Room batches (op 9) are split back into their inner frames by
:meth:`Client.recv_push`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from mpim.proto import Decoder, Frame, Op, RemoteProtocolError, decode, encode


class ConnectionClosedError(Exception):
    """The server closed the connection."""


class HttpAnswerError(Exception):
    """A TCP server answered in HTTP: the address is an HTTP (WebSocket) port, not goim's TCP port."""


class WatchError(Exception):
    """An ordinary failure of `mpim client` (refused, unreachable, token refused); one line for the user."""


class Client:
    """One goim connection. Use :func:`connect_tcp` or :func:`connect_ws`."""

    is_ws = False

    def __init__(self) -> None:
        self._frames: list[Frame] = []
        self._seq = 0

    async def _read(self) -> list[Frame]:
        raise NotImplementedError

    async def send_raw(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def send(self, op: int, body: bytes = b"", seq: int | None = None, ver: int = 1) -> int:
        if seq is None:
            self._seq += 1
            seq = self._seq
        await self.send_raw(encode(op, body, ver, seq))
        return seq

    @property
    def pending(self) -> int:
        """Frames already read and waiting to be taken (no wait for the next one)."""
        return len(self._frames)

    async def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame as sent on the wire (op 9 batches are not split)."""
        while not self._frames:
            self._frames.extend(await asyncio.wait_for(self._read(), timeout))
        return self._frames.pop(0)

    async def recv_push(self, timeout: float = 5.0) -> Frame:
        """The next frame, with op-9 batches split into their inner frames."""
        frame = await self.recv(timeout)
        if frame.op == Op.RAW:
            inner, tail = decode(frame.body, max_body=1 << 30)
            if tail:
                raise ValueError("op 9 batch ends inside a frame")
            self._frames[:0] = inner
            return await self.recv(timeout)
        return frame

    async def expect_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Read until the server closes; returns the frames received meanwhile."""
        got: list[Frame] = []
        try:
            while True:
                got.append(await self.recv(timeout))
        except ConnectionClosedError:
            return got

    async def auth(
        self,
        token: str | bytes | dict[str, Any],
        timeout: float = 5.0,
    ) -> Frame:
        if isinstance(token, dict):
            token = json.dumps(token)
        if isinstance(token, str):
            token = token.encode()
        seq = await self.send(Op.AUTH, token)
        reply = await self.recv(timeout)
        if reply.op == Op.DISCONNECT_REPLY:  # (a draining worker, a kick: connect again)
            raise ConnectionClosedError("the server answered Auth with op 6 (disconnect)")
        if reply.op != Op.AUTH_REPLY or reply.seq != seq:
            raise AssertionError(f"expected auth reply for seq {seq}, got {reply}")
        return reply

    async def heartbeat(self, timeout: float = 5.0) -> int:
        """Send op 2; returns the online count of the op-3 reply (skipping pushes)."""
        seq = await self.send(Op.HEARTBEAT)
        while True:
            frame = await self.recv(timeout)
            if frame.op == Op.HEARTBEAT_REPLY and frame.seq == seq:
                return int.from_bytes(frame.body, "big", signed=True)


class TcpClient(Client):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self._reader = reader
        self._writer = writer
        self._decoder = Decoder(max_body=1 << 30)

    async def _read(self) -> list[Frame]:
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionClosedError("server closed the connection")
            try:
                frames = self._decoder.feed(data)
            except RemoteProtocolError:
                if data.startswith(b"HTTP/"):
                    raise HttpAnswerError(data.partition(b"\r\n")[0].decode("latin-1")) from None
                raise
            if frames:
                return frames

    async def send_raw(self, data: bytes) -> None:
        # uvloop raises RuntimeError for a write on a transport that the peer already
        # closed; to a caller that is the same event as a reset connection.
        if self._writer.is_closing():
            raise ConnectionClosedError("the connection is closed")
        try:
            self._writer.write(data)
        except RuntimeError as exc:
            raise ConnectionClosedError(str(exc)) from None
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class WsClient(Client):
    is_ws = True

    def __init__(self, conn: ClientConnection) -> None:
        super().__init__()
        self.conn = conn

    async def _read(self) -> list[Frame]:
        try:
            message = await self.conn.recv()
        except ConnectionClosed as exc:
            raise ConnectionClosedError(str(exc)) from None
        data = message.encode() if isinstance(message, str) else message
        frames, tail = decode(data, max_body=1 << 30)
        if tail:
            raise ValueError("message ends inside a frame")
        return frames

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.conn.send(data)
        except ConnectionClosed as exc:
            raise ConnectionClosedError(str(exc)) from None

    async def close(self) -> None:
        await self.conn.close()


async def connect_tcp(host: str, port: int, ssl: ssl.SSLContext | None = None) -> TcpClient:
    """goim over TCP; with ``ssl``, over TLS (the server name checked is ``host``)."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
    return TcpClient(reader, writer)


async def connect_ws(url: str, open_timeout: float = 10.0, ssl: ssl.SSLContext | None = None) -> WsClient:
    """goim over WebSocket: ``ws://host:port/sub``, or ``wss://`` (with ``ssl``, or the system's CAs)."""
    kw: dict[str, Any] = {"ssl": ssl} if ssl is not None and url.startswith("wss://") else {}
    conn = await ws_connect(url, max_size=None, compression=None, open_timeout=open_timeout, **kw)
    return WsClient(conn)


def tls_context(cafile: str = "") -> ssl.SSLContext:
    """A client context trusting ``cafile`` (PEM), or the system's CAs."""
    return ssl.create_default_context(cafile=cafile or None)


def _os_reason(exc: OSError) -> str:
    """``connection refused``, ``no route to host``, ``cannot resolve the host: ...``."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


async def _open(address: str, timeout: float, cafile: str = "") -> tuple[Client, str]:
    """Connect to ``host:port`` (TCP), ``tls://host:port`` (TCP over TLS) or a ``ws://`` /
    ``wss://`` URL; returns the client and ``host:port``."""
    tls = tls_context(cafile) if address.startswith(("wss://", "tls://")) else None
    if address.startswith(("ws://", "wss://")):
        where = urlsplit(address).netloc
        try:
            return await connect_ws(address, open_timeout=timeout, ssl=tls), where
        except TimeoutError:  # before OSError, its base class
            raise WatchError(f"no WebSocket upgrade from {where} within {timeout:g}s") from None
        except ssl.SSLError as exc:  # an OSError too
            raise WatchError(f"TLS with {where} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise WatchError(f"cannot connect to {where}: {_os_reason(exc)}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise WatchError(f"{where} refused the WebSocket upgrade of {address}: HTTP {status}") from None
        except InvalidHandshake as exc:
            raise WatchError(
                f"no WebSocket upgrade from {where} ({exc}) — is that the TCP port? use {where} without ws://"
            ) from None
    host, _, port = address.removeprefix("tls://").rpartition(":")
    if not port.isdigit():
        raise WatchError(f"bad address {address!r}: expected host:port or ws://host:port/sub")
    where = f"{host or '127.0.0.1'}:{port}"
    try:
        return await asyncio.wait_for(connect_tcp(host or "127.0.0.1", int(port), tls), timeout), where
    except ssl.SSLError as exc:  # before OSError, its base class
        raise WatchError(f"TLS with {where} failed: {exc.reason or exc}") from None
    except TimeoutError:
        raise WatchError(f"cannot connect to {where}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise WatchError(f"cannot connect to {where}: {_os_reason(exc)}") from None


async def _authenticate(client: Client, where: str, token: str, timeout: float) -> None:
    hint = "" if client.is_ws else f" — is that the WebSocket port? use ws://{where}/sub"
    try:
        await client.auth(token, timeout)
    except TimeoutError:
        raise WatchError(f"no Auth reply within {timeout:g}s from {where}{hint}") from None
    except HttpAnswerError as exc:
        raise WatchError(f"{where} answered in HTTP ({exc}), not goim{hint}") from None
    except (RemoteProtocolError, AssertionError, ValueError) as exc:
        raise WatchError(f"{where} does not answer in goim's protocol: {exc}") from None
    except (ConnectionClosedError, OSError):
        raise WatchError(
            "the server closed the connection after Auth: token refused (see the server log)"
        ) from None


async def watch(
    address: str,
    token: str,
    heartbeat: float = 30.0,
    count: int = 0,
    out: Any = None,
    auth_timeout: float = 5.0,
    cafile: str = "",
) -> int:
    """`mpim client`: authenticate, print every push, heartbeat; stop after ``count`` pushes.

    Raises :class:`WatchError` when the connection or the Auth fails.
    """
    out = out or sys.stdout
    client, where = await _open(address, auth_timeout, cafile)
    try:
        await _authenticate(client, where, token, auth_timeout)
    except WatchError:
        await client.close()
        raise
    print(f"connected to {address}", file=out, flush=True)
    loop = asyncio.get_running_loop()
    next_beat = loop.time()
    received = 0
    try:
        while not count or received < count:
            if loop.time() >= next_beat:
                await client.send(Op.HEARTBEAT)
                next_beat = loop.time() + heartbeat
            try:
                frame = await client.recv_push(timeout=max(0.01, next_beat - loop.time()))
            except TimeoutError:
                continue
            if frame.op == Op.HEARTBEAT_REPLY:
                online = int.from_bytes(frame.body, "big", signed=True)
                print(f"heartbeat reply: room online {online}", file=out, flush=True)
            elif frame.op == Op.DISCONNECT_REPLY:
                print("server asked us to disconnect (op 6)", file=out, flush=True)
            elif frame.seq == 0:
                received += 1
                body = frame.body.decode("utf-8", "backslashreplace")
                print(f"push op={frame.op} body={body}", file=out, flush=True)
    except (ConnectionClosedError, OSError):
        print("connection closed by the server", file=out, flush=True)
        return 1
    finally:
        await client.close()
    return 0
