"""Choose mpim's WebSocket library by measurement.

Every candidate runs as a server in a child process on uvloop, bound to
127.0.0.1 on a free port.  The same per-library server code is used for the
memory/throughput benchmark and for the Autobahn (kosoku) compliance run: it
echoes text as text and binary as binary, reassembles fragmented messages,
validates UTF-8 where the library does not, and answers close frames.

Candidates (``--libs``):

* ``picows``        picows ``ws_create_server`` + a ``WSListener`` subclass.
* ``picows-lean``   same, with ``read_buffer_init_size=2048`` and a
  ``LoggerAdapter`` (stops picows creating one ``logging.Logger`` per socket).
* ``picows-uv``     ``picows-lean`` with ``use_aiofastnet=False``: uvloop's own
  TCP transport instead of aiofastnet's (picows' default when installed).
* ``ws-sansio``     websockets ``ServerProtocol`` driven from our own
  ``asyncio.Protocol`` (no task per connection).
* ``ws-asyncio``    ``websockets.asyncio.server.serve`` (reference; one task per
  connection).
* ``wsproto``       ``wsproto.WSConnection`` driven from an ``asyncio.Protocol``.

Usage (from /work/main, with the venv active)::

    # RSS per idle connection + echo throughput (pipelined and unbatched), all candidates
    python bench/ws_libs.py bench
    python bench/ws_libs.py bench --libs picows,ws-sansio --conns 10000 --duration 5

    # Autobahn compliance through kosoku (reports go to /tmp/ws_libs_autobahn);
    # --no-app-checks drops our echo code's own UTF-8/RSV/close-code checks
    python bench/ws_libs.py autobahn --libs picows,ws-sansio,wsproto -p 4
    python bench/ws_libs.py autobahn --no-app-checks --outdir /tmp/ws_libs_autobahn_nochecks

    # A single echo server for manual poking (prints "PORT <n>", stops on
    # stdin EOF or after --max-seconds)
    python bench/ws_libs.py serve --lib ws-sansio --max-seconds 60

Measurements:

1. Bytes per idle connection: server VmRSS after ``--warmup-conns`` idle
   connections (so lazy imports/one-time allocations are excluded) versus after
   ``--conns`` more, divided by ``--conns``.  The idle clients are raw asyncio
   sockets in ``--client-procs`` separate processes that send the HTTP upgrade
   request themselves and then do nothing.
2. Messages/s, pipelined: ``--echo-conns`` connections from one client
   process each keep ``--inflight`` masked 40-byte binary frames in flight; the
   server echoes them.  Reported: round-trip messages/s and messages per server
   CPU-second (utime+stime from /proc/<pid>/stat over the measuring window).
3. Messages/s, unbatched: ``--unbatched-conns`` connections with one message
   in flight each, so every server read holds a single frame (closer to
   heartbeats from many clients).  Same figures as 2.

Every child process has a hard deadline and also exits when its stdin closes,
so a run always stops by itself.  Server/client stderr goes to
``/tmp/ws_libs_logs``.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import json
import logging
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, cast

import uvloop
import wsproto
import wsproto.events as wse
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_create_server,
)
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from wsproto.connection import ConnectionState
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

HOST = "127.0.0.1"
LIBS = ("picows", "picows-lean", "picows-uv", "ws-sansio", "ws-asyncio", "wsproto")
AUTOBAHN_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.1.*", "10.*")
MAX_MESSAGE = 32 * 1024 * 1024  # Autobahn 9.1.6 sends a 16 MiB text message.
BACKLOG = 2048
LOG_DIR = Path("/tmp/ws_libs_logs")
HANDSHAKE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
MSG_SIZE = 40
MASK_KEY = b"\x37\xfa\x21\x3d"


class _Listening(Protocol):
    """What we need from asyncio.Server and websockets' Server."""

    @property
    def sockets(self) -> Any: ...

    def close(self) -> None: ...


# Application-level protocol checks in our echo code (UTF-8 validation where the
# library leaves it to us, picows' RSV-bit and close-code checks).  ``serve
# --no-app-checks`` turns them off to show what each library does on its own.
APP_CHECKS = True

# Registry of live connections, like a push server's key -> connection map.
CONNS: set[object] = set()


class _Fragments:
    """State of a fragmented message being reassembled (exists only while one is in progress)."""

    __slots__ = ("decoder", "parts", "size", "text")

    def __init__(self, text: bool) -> None:
        self.text = text
        self.parts: list[bytes] = []
        self.size = 0
        self.decoder: codecs.IncrementalDecoder | None = (
            codecs.getincrementaldecoder("utf-8")() if text and APP_CHECKS else None
        )

    def add(self, data: bytes, fin: bool) -> bool:
        """Append a fragment; False if the message is invalid UTF-8 so far."""
        self.parts.append(data)
        self.size += len(data)
        if self.decoder is not None:
            try:
                self.decoder.decode(data, fin)
            except UnicodeDecodeError:
                return False
        return True


def _is_utf8(data: bytes) -> bool:
    if not APP_CHECKS:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------
# a. picows: frame-level library; the listener object is our per-connection object
# --------------------------------------------------------------------------

# Close codes a peer may legally put on the wire (RFC 6455 7.4.1 / 7.4.2).
_WIRE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def _close_code_ok(code: int) -> bool:
    if not APP_CHECKS:
        return True
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


class PicowsConn(WSListener):
    """One object per connection: holds the picows transport and fragment state.

    Broadcast: ``transport.underlying_transport.write(frame_bytes)`` is safe to mix
    with picows' own sends (they are synchronous and queue whole frames behind
    anything already buffered), provided we skip connections where
    ``is_close_frame_sent`` / ``is_disconnected`` is set and never broadcast in
    the middle of our own fragmented send.
    """

    __slots__ = ("frag", "transport")

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.frag: _Fragments | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        CONNS.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        CONNS.discard(self)

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        self.frag = None
        transport.send_close(code, reason.encode())
        transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if APP_CHECKS and (frame.rsv1 or frame.rsv2 or frame.rsv3):  # picows does not check RSV
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "RSV bit set")
            return
        if mt is WSMsgType.BINARY or mt is WSMsgType.TEXT:
            if self.frag is not None:
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "expected continuation")
                return
            data = frame.get_payload_as_bytes()
            if frame.fin:
                if mt is WSMsgType.TEXT and not _is_utf8(data):
                    self._fail(transport, WSCloseCode.INVALID_TEXT, "invalid UTF-8")
                    return
                transport.send(mt, data)
                return
            self.frag = _Fragments(mt is WSMsgType.TEXT)
            if not self.frag.add(data, False):
                self._fail(transport, WSCloseCode.INVALID_TEXT, "invalid UTF-8")
        elif mt is WSMsgType.CONTINUATION:
            frag = self.frag
            if frag is None:
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "unexpected continuation")
                return
            if not frag.add(frame.get_payload_as_bytes(), frame.fin):
                self._fail(transport, WSCloseCode.INVALID_TEXT, "invalid UTF-8")
                return
            if frag.size > MAX_MESSAGE:  # picows only limits single frames
                self._fail(transport, WSCloseCode.MESSAGE_TOO_BIG, "message too big")
                return
            if frame.fin:
                self.frag = None
                transport.send(
                    WSMsgType.TEXT if frag.text else WSMsgType.BINARY,
                    b"".join(frag.parts),
                )
        elif mt is WSMsgType.CLOSE:
            # picows validated the reason's UTF-8 and rejects some bad codes;
            # the reply is ours to send.
            if frame.payload_size == 0:
                transport.send_close(WSCloseCode.OK)  # picows cannot send an empty close
            else:
                code = frame.get_close_code()  # NO_INFO (0) here means an explicit 0 on the wire
                if _close_code_ok(int(code.value)):
                    transport.send_close(code, frame.get_close_message())
                else:
                    transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"bad close code")
            transport.disconnect()
        # PING is answered by picows (enable_auto_pong); PONG is ignored.


async def start_picows(lean: bool, aiofastnet: bool) -> _Listening:
    extra: dict[str, Any] = {}
    if lean:
        # picows defaults to a 16 KiB read buffer per connection and builds a
        # child logging.Logger per socket unless given a LoggerAdapter.
        extra["read_buffer_init_size"] = 2048
        extra["logger_name"] = logging.LoggerAdapter(logging.getLogger("picows.server"), {})
    return await ws_create_server(
        lambda _request: PicowsConn(),
        HOST,
        0,
        max_frame_size=MAX_MESSAGE,
        backlog=BACKLOG,
        # picows 2.3 depends on aiofastnet and uses its transports by default.
        use_aiofastnet=aiofastnet,
        **extra,
    )


# --------------------------------------------------------------------------
# b. websockets sans-I/O ServerProtocol driven from an asyncio.Protocol
# --------------------------------------------------------------------------


class WsSansIOConn(asyncio.Protocol):
    """One object per connection: it is the asyncio protocol and owns the ServerProtocol.

    Broadcast: we own the transport and flush ``data_to_send()`` after every
    call into the protocol, so writing a frame pre-encoded once with
    ``Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])`` straight
    to ``transport`` is safe while ``ws.state is State.OPEN`` and
    ``not ws.expect_continuation_frame`` (no extensions are negotiated).
    """

    __slots__ = ("frag", "transport", "ws")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.ws = ServerProtocol(max_size=MAX_MESSAGE)
        self.frag: _Fragments | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        CONNS.discard(self)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if type(event) is Frame:
                op = event.opcode
                if op is Opcode.BINARY or op is Opcode.TEXT or op is Opcode.CONT:
                    self._on_data_frame(event)
                # PING/PONG/CLOSE: websockets already queued pong / close reply.
            elif isinstance(event, Request):
                response = ws.accept(event)
                ws.send_response(response)
                if response.status_code == 101:
                    CONNS.add(self)
        self._flush()

    def _on_data_frame(self, frame: Frame) -> None:
        ws = self.ws
        if ws.state is not State.OPEN:
            return
        op = frame.opcode
        data = bytes(frame.data)
        # websockets checks opcode sequencing, RSV bits, sizes; UTF-8 of text
        # frames is left to the application in the sans-I/O layer.
        if op is not Opcode.CONT:
            if frame.fin:
                if op is Opcode.BINARY:
                    ws.send_binary(data)
                elif _is_utf8(data):
                    ws.send_text(data)
                else:
                    ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
            self.frag = _Fragments(op is Opcode.TEXT)
            if not self.frag.add(data, False):
                self.frag = None
                ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        frag = self.frag
        assert frag is not None  # websockets rejects a stray continuation itself
        if not frag.add(data, frame.fin):
            self.frag = None
            ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        if frame.fin:
            self.frag = None
            payload = b"".join(frag.parts)
            if frag.text:
                ws.send_text(payload)
            else:
                ws.send_binary(payload)

    def _flush(self) -> None:
        writes = self.ws.data_to_send()
        if not writes:
            return
        transport = self.transport
        assert transport is not None
        if writes[-1]:
            transport.writelines(writes)
            return
        # SEND_EOF (b"") is always last: the server closes the TCP connection.
        transport.writelines([w for w in writes if w])
        transport.close()


# --------------------------------------------------------------------------
# c. websockets' own asyncio server (reference)
# --------------------------------------------------------------------------


class WsAsyncioConn:
    """Registry entry for a websockets asyncio connection."""

    __slots__ = ("ws",)

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws


async def _ws_asyncio_handler(ws: ServerConnection) -> None:
    conn = WsAsyncioConn(ws)
    CONNS.add(conn)
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        CONNS.discard(conn)


async def start_ws_asyncio() -> _Listening:
    return await serve(
        _ws_asyncio_handler,
        HOST,
        0,
        ping_interval=None,  # a push server has its own heartbeat; raw idle clients would not pong
        compression=None,
        max_size=MAX_MESSAGE,
        backlog=BACKLOG,
    )


# --------------------------------------------------------------------------
# d. wsproto driven from an asyncio.Protocol
# --------------------------------------------------------------------------


class WsprotoConn(asyncio.Protocol):
    """One object per connection: it is the asyncio protocol and owns the WSConnection."""

    __slots__ = ("parts", "transport", "ws")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.parts: list[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        CONNS.discard(self)

    def eof_received(self) -> bool | None:
        return None

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        transport = self.transport
        assert transport is not None
        try:
            ws.receive_data(data)
        except RemoteProtocolError as exc:  # bad HTTP upgrade request
            transport.write(ws.send(exc.event_hint or wse.RejectConnection()))
            transport.close()
            return
        except LocalProtocolError:  # data after the connection closed
            transport.close()
            return
        out: list[bytes] = []
        close = False
        for event in ws.events():
            cls = type(event)
            if cls is wse.BytesMessage or cls is wse.TextMessage:
                assert isinstance(event, wse.Message)
                if ws.state is not ConnectionState.OPEN:
                    continue
                if event.message_finished and self.parts is None:
                    out.append(ws.send(event))  # the event itself is a complete message
                    continue
                if self.parts is None:
                    self.parts = []
                self.parts.append(event.data)
                if event.message_finished:
                    parts, self.parts = self.parts, None
                    if cls is wse.TextMessage:
                        out.append(ws.send(wse.TextMessage(data="".join(parts))))
                    else:
                        out.append(ws.send(wse.BytesMessage(data=b"".join(parts))))
            elif cls is wse.Ping:
                assert isinstance(event, wse.Ping)
                out.append(ws.send(event.response()))
            elif cls is wse.CloseConnection:
                assert isinstance(event, wse.CloseConnection)
                if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    out.append(ws.send(event.response()))
                close = True
                break
            elif cls is wse.Request:
                out.append(ws.send(wse.AcceptConnection()))
                CONNS.add(self)
        if out:
            transport.writelines(out)
        if close:
            transport.close()


async def _start_protocol_server(factory: Callable[[], asyncio.Protocol]) -> _Listening:
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, HOST, 0, backlog=BACKLOG)


STARTERS: dict[str, Callable[[], Awaitable[_Listening]]] = {
    "picows": lambda: start_picows(lean=False, aiofastnet=True),
    "picows-lean": lambda: start_picows(lean=True, aiofastnet=True),
    "picows-uv": lambda: start_picows(lean=True, aiofastnet=False),
    "ws-sansio": lambda: _start_protocol_server(WsSansIOConn),
    "ws-asyncio": start_ws_asyncio,
    "wsproto": lambda: _start_protocol_server(WsprotoConn),
}


# --------------------------------------------------------------------------
# child-process plumbing
# --------------------------------------------------------------------------


def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Future[None]) -> asyncio.Queue[str]:
    """Forward stdin lines to a queue; resolve ``stop`` at EOF."""
    fd = sys.stdin.fileno()
    lines: asyncio.Queue[str] = asyncio.Queue()
    pending = bytearray()

    def on_readable() -> None:
        chunk = os.read(fd, 4096)
        if not chunk:
            loop.remove_reader(fd)
            if not stop.done():
                stop.set_result(None)
            return
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            lines.put_nowait(line.decode().strip())

    loop.add_reader(fd, on_readable)
    return lines


def _deadline(loop: asyncio.AbstractEventLoop, stop: asyncio.Future[None], seconds: float) -> None:
    def fire() -> None:
        print(f"deadline of {seconds}s reached, exiting", file=sys.stderr, flush=True)
        if not stop.done():
            stop.set_result(None)

    loop.call_later(seconds, fire)


async def _serve_main(lib: str, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    server = await STARTERS[lib]()
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port} PID {os.getpid()}", flush=True)
    _stop_on_stdin_eof(loop, stop)
    _deadline(loop, stop, max_seconds)
    await stop
    server.close()


def cmd_serve(args: argparse.Namespace) -> None:
    global APP_CHECKS
    APP_CHECKS = not args.no_app_checks
    uvloop.run(_serve_main(args.lib, args.max_seconds))
    sys.stdout.flush()
    os._exit(0)  # skip tearing down thousands of connections


def _upgrade_request(port: int) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {HANDSHAKE_KEY.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class _ClientConn(asyncio.Protocol):
    """Raw client: sends the upgrade request, waits for 101, then idles (or echoes)."""

    def __init__(self, request: bytes, upgraded: asyncio.Future[bool]) -> None:
        self.request = request
        self.upgraded = upgraded
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.upgraded.done():
            self.on_ws_data(data)
            return
        self.buf.extend(data)
        head, sep, tail = bytes(self.buf).partition(b"\r\n\r\n")
        if sep:
            self.buf.clear()
            self.upgraded.set_result(head.startswith(b"HTTP/1.1 101"))
            if tail:
                self.on_ws_data(tail)

    def on_ws_data(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)


async def _open_many(
    port: int,
    count: int,
    concurrency: int,
    make: Callable[[bytes, asyncio.Future[bool]], _ClientConn],
) -> tuple[list[_ClientConn], int]:
    loop = asyncio.get_running_loop()
    request = _upgrade_request(port)
    sem = asyncio.Semaphore(concurrency)
    opened: list[_ClientConn] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with sem:
            upgraded: asyncio.Future[bool] = loop.create_future()
            proto = make(request, upgraded)
            try:
                await loop.create_connection(lambda: proto, HOST, port)
                ok = await asyncio.wait_for(upgraded, 30)
            except (TimeoutError, OSError) as exc:
                print(f"connect failed: {exc!r}", file=sys.stderr)
                ok = False
            if ok:
                opened.append(proto)
            else:
                failed += 1
                if proto.transport is not None:
                    proto.transport.abort()

    await asyncio.gather(*(one() for _ in range(count)))
    return opened, failed


async def _idle_client_main(port: int, max_seconds: float, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    lines = _stop_on_stdin_eof(loop, stop)
    _deadline(loop, stop, max_seconds)
    conns: list[_ClientConn] = []
    while not stop.done():
        getter = asyncio.ensure_future(lines.get())
        waiting: set[asyncio.Future[Any]] = {getter, stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        words = getter.result().split()
        if words[:1] == ["open"]:
            t0 = time.perf_counter()
            opened, failed = await _open_many(port, int(words[1]), concurrency, _ClientConn)
            conns.extend(opened)
            print(
                f"opened {len(opened)} failed {failed} total {len(conns)} "
                f"seconds {time.perf_counter() - t0:.3f}",
                flush=True,
            )
        elif words[:1] == ["quit"]:
            break
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()


def cmd_idle_client(args: argparse.Namespace) -> None:
    uvloop.run(_idle_client_main(args.port, args.max_seconds, args.concurrency))
    os._exit(0)


def _client_frame(payload: bytes) -> bytes:
    """A masked binary frame as a client sends it (load generator only)."""
    assert len(payload) < 126
    masked = bytes(b ^ MASK_KEY[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + MASK_KEY + masked


class _EchoConn(_ClientConn):
    """Keeps ``inflight`` frames outstanding; counts echoes by byte count (all echoes are equal)."""

    payload = bytes(range(MSG_SIZE))
    expected = bytes([0x82, MSG_SIZE]) + payload
    frame = _client_frame(payload)
    total = 0

    def __init__(self, request: bytes, upgraded: asyncio.Future[bool], inflight: int) -> None:
        super().__init__(request, upgraded)
        self.inflight = inflight
        self.blob = self.frame * inflight
        self.received = 0
        self.echoed = 0
        self.head = bytearray()

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(self.blob)

    def on_ws_data(self, data: bytes) -> None:
        if len(self.head) < len(self.expected):
            self.head.extend(data[: len(self.expected) - len(self.head)])
            if len(self.head) == len(self.expected) and self.head != self.expected:
                raise RuntimeError(f"unexpected echo {bytes(self.head)!r}")
        self.received += len(data)
        done = self.received // len(self.expected)
        new = done - self.echoed
        if new:
            self.echoed = done
            _EchoConn.total += new
            assert self.transport is not None
            self.transport.write(self.blob[: new * len(self.frame)])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vmrss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def _echo_client_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(args.max_seconds, lambda: os._exit(3))
    conns, failed = await _open_many(
        args.port,
        args.conns,
        args.conns,
        lambda req, fut: _EchoConn(req, fut, args.inflight),
    )
    if failed:
        raise SystemExit(f"{failed} echo connections failed")
    for c in conns:
        assert isinstance(c, _EchoConn)
        c.start()
    await asyncio.sleep(args.warmup)
    n0, cpu0, t0 = _EchoConn.total, _cpu_seconds(args.server_pid), time.perf_counter()
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(args.duration)
    n1, cpu1, t1 = _EchoConn.total, _cpu_seconds(args.server_pid), time.perf_counter()
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
    result = {
        "msgs": n1 - n0,
        "seconds": t1 - t0,
        "server_cpu": cpu1 - cpu0,
        "client_cpu": own,
    }
    print("RESULT " + json.dumps(result), flush=True)
    for c in conns:
        if c.transport is not None:
            c.transport.abort()


def cmd_echo_client(args: argparse.Namespace) -> None:
    uvloop.run(_echo_client_main(args))
    os._exit(0)


# --------------------------------------------------------------------------
# harness (parent process)
# --------------------------------------------------------------------------


class Child:
    """A child process of this script, talked to by stdin/stdout lines."""

    def __init__(self, argv: list[str], log_name: str) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / log_name
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self.pending = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                line, _, self.pending = self.pending.partition(b"\n")
                text = line.decode().strip()
                if text.startswith(prefix):
                    return text
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {prefix!r} from {self.proc.args!r} (see {self.log_path})")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"child exited before {prefix!r} (see {self.log_path})")
                self.pending += chunk

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _start_server(lib: str, max_seconds: float, tag: str, extra: tuple[str, ...] = ()) -> tuple[Child, int]:
    server = Child(
        ["serve", "--lib", lib, "--max-seconds", str(max_seconds), *extra],
        f"{lib}-{tag}-server.log",
    )
    line = server.expect("PORT ", 30)
    return server, int(line.split()[1])


def measure_memory(lib: str, conns: int, client_procs: int, warmup_conns: int) -> dict[str, float]:
    per_proc = [conns // client_procs + (1 if i < conns % client_procs else 0) for i in range(client_procs)]
    if max(per_proc) + warmup_conns > 19000:
        raise SystemExit("too many sockets per client process; raise --client-procs")
    server, port = _start_server(lib, 900, "mem")
    clients: list[Child] = []
    try:
        for i in range(client_procs):
            clients.append(
                Child(
                    ["idle-client", "--port", str(port), "--max-seconds", "900"],
                    f"{lib}-mem-client{i}.log",
                )
            )
        clients[0].send(f"open {warmup_conns}")
        clients[0].expect("opened", 120)
        time.sleep(1.0)
        rss0 = _vmrss(server.pid)
        for client, n in zip(clients, per_proc, strict=True):
            client.send(f"open {n}")
        opened = 0
        failed = 0
        open_seconds = 0.0
        for client in clients:
            words = client.expect("opened", 600).split()
            opened += int(words[1])
            failed += int(words[3])
            open_seconds = max(open_seconds, float(words[7]))
        time.sleep(2.0)
        rss1 = _vmrss(server.pid)
        time.sleep(1.0)
        rss2 = _vmrss(server.pid)
        if opened == 0:
            raise RuntimeError("no connection opened")
        return {
            "conns": opened,
            "failed": failed,
            "rss_before": rss0,
            "rss_after": rss2,
            "bytes_per_conn": (rss2 - rss0) / opened,
            "rss_drift_last_second": rss2 - rss1,
            "handshakes_per_s": opened / open_seconds if open_seconds else 0.0,
        }
    finally:
        for client in clients:
            client.stop()
        server.stop()


def measure_throughput(
    lib: str, echo_conns: int, inflight: int, warmup: float, duration: float
) -> dict[str, float]:
    server, port = _start_server(lib, warmup + duration + 120, "tput")
    try:
        client = Child(
            [
                "echo-client",
                "--port",
                str(port),
                "--server-pid",
                str(server.pid),
                "--conns",
                str(echo_conns),
                "--inflight",
                str(inflight),
                "--warmup",
                str(warmup),
                "--duration",
                str(duration),
                "--max-seconds",
                str(warmup + duration + 60),
            ],
            f"{lib}-tput-client.log",
        )
        try:
            result: dict[str, float] = json.loads(client.expect("RESULT ", warmup + duration + 90)[7:])
        finally:
            client.stop()
    finally:
        server.stop()
    result["msgs_per_s"] = result["msgs"] / result["seconds"]
    result["msgs_per_cpu_s"] = result["msgs"] / result["server_cpu"] if result["server_cpu"] else 0.0
    result["server_cpu_util"] = result["server_cpu"] / result["seconds"]
    result["client_cpu_util"] = result["client_cpu"] / result["seconds"]
    return result


def _parse_libs(text: str, allowed: tuple[str, ...]) -> list[str]:
    libs = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in libs if x not in allowed]
    if bad:
        raise SystemExit(f"unknown libs {bad}; choose from {allowed}")
    return libs


def _echo_runs(lib: str, label: str, conns: int, inflight: int, args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for i in range(args.repeat):
        print(
            f"== {lib}: {label} echo ({conns} conns x {inflight} in flight) run {i + 1}/{args.repeat}",
            flush=True,
        )
        run = measure_throughput(lib, conns, inflight, args.warmup, args.duration)
        print(f"   {json.dumps(run)}", flush=True)
        runs.append(run)
    summary: dict[str, Any] = {"runs": runs}
    for key in ("msgs_per_s", "msgs_per_cpu_s", "server_cpu_util", "client_cpu_util"):
        summary[key] = statistics.median(r[key] for r in runs)
    return summary


def cmd_bench(args: argparse.Namespace) -> None:
    libs = _parse_libs(args.libs, LIBS)
    results: dict[str, dict[str, Any]] = {}
    for lib in libs:
        print(f"== {lib}: memory with {args.conns} idle connections", flush=True)
        mem = measure_memory(lib, args.conns, args.client_procs, args.warmup_conns)
        print(f"   {json.dumps(mem)}", flush=True)
        results[lib] = {"memory": mem}
        results[lib]["pipelined"] = _echo_runs(lib, "pipelined", args.echo_conns, args.inflight, args)
        if args.unbatched_conns:
            results[lib]["unbatched"] = _echo_runs(lib, "unbatched", args.unbatched_conns, 1, args)
    print()
    print(
        f"{'library':<12} {'B/idle conn':>11} {'handshk/s':>9} | {'msgs/s':>8} {'msgs/CPUs':>9} "
        f"{'srvCPU':>6} {'cliCPU':>6} | {'msgs/s':>8} {'msgs/CPUs':>9} {'srvCPU':>6} {'cliCPU':>6}"
    )
    for lib, r in results.items():
        line = f"{lib:<12} {r['memory']['bytes_per_conn']:>11.0f} {r['memory']['handshakes_per_s']:>9.0f}"
        for key in ("pipelined", "unbatched"):
            e = r.get(key)
            if e is None:
                continue
            line += (
                f" | {e['msgs_per_s']:>8.0f} {e['msgs_per_cpu_s']:>9.0f} "
                f"{e['server_cpu_util']:>6.0%} {e['client_cpu_util']:>6.0%}"
            )
        print(line)
    print(
        f"(idle: N={args.conns} conns over {args.client_procs} client procs after {args.warmup_conns} "
        f"warm-up conns; pipelined echo: {args.echo_conns} conns x {args.inflight} in flight; "
        f"unbatched echo: {args.unbatched_conns} conns x 1 in flight; {MSG_SIZE} B binary; "
        f"median of {args.repeat} x {args.duration}s; msgs/CPUs = messages per server CPU-second)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _case_group(case_id: str) -> str:
    parts = case_id.split(".")
    return ".".join(parts[:2]) if parts[0] == "9" else parts[0]


def _case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def run_autobahn(
    lib: str, cases: list[str], *, parallel: int, timeout: float, outdir: Path, app_checks: bool
) -> dict[str, Any]:
    kosoku = shutil.which("kosoku") or str(Path(sys.executable).with_name("kosoku"))
    out = outdir / lib
    shutil.rmtree(out, ignore_errors=True)
    server, port = _start_server(lib, timeout + 60, "autobahn", () if app_checks else ("--no-app-checks",))
    cmd = [kosoku, f"{HOST}:{port}"]
    for case in cases:
        cmd += ["-i", case]
    cmd += ["-p", str(parallel), "-o", str(out)]
    print("   $ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    timed_out = False
    try:
        with open(LOG_DIR / f"{lib}-kosoku.log", "wb") as log:
            try:
                subprocess.run(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        server.stop()
    elapsed = time.monotonic() - t0
    index_path = out / "index.json"
    if not index_path.exists():
        return {
            "error": "no index.json (timeout?)",
            "timed_out": timed_out,
            "seconds": elapsed,
        }
    index: dict[str, dict[str, dict[str, Any]]] = json.loads(index_path.read_text())
    groups: dict[str, dict[str, int]] = {}
    failures: list[dict[str, Any]] = []
    good = {"OK", "NON-STRICT", "INFORMATIONAL"}
    for agent_cases in index.values():
        for case_id in sorted(agent_cases, key=_case_key):
            entry = agent_cases[case_id]
            group = groups.setdefault(_case_group(case_id), {"pass": 0, "fail": 0, "non_strict": 0})
            passed = entry["behavior"] in good and entry["behaviorClose"] in good
            group["pass" if passed else "fail"] += 1
            if entry["behavior"] == "NON-STRICT":
                group["non_strict"] += 1
            if not passed:
                detail = json.loads((out / entry["reportfile"]).read_text())
                failures.append(
                    {
                        "case": case_id,
                        "behavior": entry["behavior"],
                        "behaviorClose": entry["behaviorClose"],
                        "remoteCloseCode": entry["remoteCloseCode"],
                        "description": detail.get("description", "")[:160],
                        "result": str(detail.get("result", ""))[:200],
                        "resultClose": str(detail.get("resultClose", ""))[:200],
                    }
                )
    return {
        "groups": groups,
        "failures": failures,
        "timed_out": timed_out,
        "seconds": elapsed,
    }


def cmd_autobahn(args: argparse.Namespace) -> None:
    libs = _parse_libs(args.libs, LIBS)
    cases = args.cases.split(",")
    summary: dict[str, Any] = {}
    for lib in libs:
        print(f"== autobahn {lib}", flush=True)
        res = run_autobahn(
            lib,
            cases,
            parallel=args.parallel,
            timeout=args.timeout,
            outdir=Path(args.outdir),
            app_checks=not args.no_app_checks,
        )
        summary[lib] = res
        if "error" in res:
            print(f"   {res['error']}", flush=True)
            continue
        for fail in res["failures"]:
            print(
                f"   FAIL {fail['case']}: {fail['behavior']}/{fail['behaviorClose']} "
                f"code={fail['remoteCloseCode']} {fail['result']} | {fail['resultClose']}",
                flush=True,
            )
        print(f"   done in {res['seconds']:.0f}s timed_out={res['timed_out']}", flush=True)
    groups = sorted({g for r in summary.values() for g in r.get("groups", {})}, key=_case_key)
    print()
    print(f"{'library':<12} " + " ".join(f"{g:>8}" for g in groups) + f" {'total':>9}")
    for lib, res in summary.items():
        cells = []
        tp = tf = 0
        for g in groups:
            c = res.get("groups", {}).get(g)
            if c is None:
                cells.append(f"{'-':>8}")
                continue
            tp += c["pass"]
            tf += c["fail"]
            cells.append(f"{c['pass']:>4}/{c['pass'] + c['fail']:<3}")
        print(f"{lib:<12} " + " ".join(cells) + f" {tp:>4}/{tp + tf:<4}")
    print(f"(pass/total per case group; reports in {args.outdir}/<lib>/index.html)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="RSS per idle connection and echo throughput")
    p.add_argument("--libs", default=",".join(LIBS))
    p.add_argument("--conns", type=int, default=10000, help="idle connections measured")
    p.add_argument(
        "--warmup-conns",
        type=int,
        default=100,
        help="idle connections opened before the baseline",
    )
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--echo-conns", type=int, default=4)
    p.add_argument(
        "--inflight",
        type=int,
        default=100,
        help="messages in flight per echo connection",
    )
    p.add_argument(
        "--unbatched-conns",
        type=int,
        default=100,
        help="also run an echo with this many conns x 1 message in flight (0: skip)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="echo seconds before measuring")
    p.add_argument("--duration", type=float, default=5.0, help="echo seconds measured")
    p.add_argument("--repeat", type=int, default=3, help="echo runs per library (median reported)")
    p.add_argument("--json", help="also write results to this JSON file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("autobahn", help="kosoku fuzzing client against each echo server")
    p.add_argument("--libs", default="picows,ws-sansio,wsproto")
    p.add_argument("--cases", default=",".join(AUTOBAHN_CASES))
    p.add_argument("-p", "--parallel", type=int, default=4)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per library")
    p.add_argument("--outdir", default="/tmp/ws_libs_autobahn")
    p.add_argument("--no-app-checks", action="store_true", help="disable the echo code's own protocol checks")
    p.add_argument("--json", help="also write results to this JSON file")
    p.set_defaults(func=cmd_autobahn)

    p = sub.add_parser("serve", help="(child) run one echo server")
    p.add_argument("--lib", choices=LIBS, required=True)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--no-app-checks", action="store_true", help="disable the echo code's own protocol checks")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("idle-client", help="(child) open idle connections on command")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.set_defaults(func=cmd_idle_client)

    p = sub.add_parser("echo-client", help="(child) pipelined echo load")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.set_defaults(func=cmd_echo_client)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
