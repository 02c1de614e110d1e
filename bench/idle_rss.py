"""RSS per idle authenticated connection of one mpim worker (TCP and WebSocket).

Starts ``mpim worker`` on loopback ports, opens ``--warmup`` connections of each
kind (so one-time allocations are not counted), reads the worker's VmRSS, opens
``--conns`` more authenticated connections of one kind from ``--procs`` client
processes (each well under the ~20,000 open files a process may hold), waits for
RSS to settle and reports (RSS after - RSS before) / conns.

    python bench/idle_rss.py --kind tcp --conns 10000
    python bench/idle_rss.py --kind ws --conns 10000
    python bench/idle_rss.py --kind both --conns 10000 --append bench/RESULTS.md

Clients are raw asyncio protocols (TCP) or websockets' sans-I/O client protocol
(WebSocket) on uvloop; each connection authenticates with a JSON token, joins one
of 100 rooms and then idles. Every process stops by itself (deadline or stdin EOF).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from mpim.proto import Op, encode

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int, quiet: float = 1.0, limit: float = 20.0) -> int:
    """RSS once two readings ``quiet`` seconds apart agree within 64 KiB."""
    deadline = time.monotonic() + limit
    last = rss_bytes(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = rss_bytes(pid)
        if abs(now - last) < 65536:
            return now
        last = now
    return last


# -- client side ------------------------------------------------------------------------


def auth_frame(n: int) -> bytes:
    token = json.dumps({"mid": n, "key": "", "room_id": f"live://{n % 100}", "accepts": [1000]})
    return encode(Op.AUTH, token.encode(), seq=1)


class TcpIdle(asyncio.Protocol):
    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n = n
        self.done = done

    def connection_made(self, transport: Any) -> None:
        transport.write(auth_frame(self.n))

    def data_received(self, data: bytes) -> None:
        if not self.done.done() and data[8:12] == b"\x00\x00\x00\x08":
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("closed before auth reply"))


class WsIdle(asyncio.Protocol):
    def __init__(self, n: int, url: str, done: asyncio.Future[None]) -> None:
        self.n = n
        self.done = done
        self.ws = ClientProtocol(parse_uri(url))
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if not hasattr(event, "opcode"):  # the 101 response
                self.ws.send_binary(auth_frame(self.n))
            elif not self.done.done() and bytes(event.data)[8:12] == b"\x00\x00\x00\x08":
                self.done.set_result(None)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("closed before auth reply"))


async def open_idle(
    kind: str, port: int, start: int, count: int, inflight: int = 200
) -> list[asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    url = f"ws://127.0.0.1:{port}/sub"
    sem = asyncio.Semaphore(inflight)
    transports: list[asyncio.BaseTransport] = []

    async def one(n: int) -> None:
        async with sem:
            done: asyncio.Future[None] = loop.create_future()
            if kind == "tcp":
                transport, _ = await loop.create_connection(lambda: TcpIdle(n, done), "127.0.0.1", port)
            else:
                transport, _ = await loop.create_connection(lambda: WsIdle(n, url, done), "127.0.0.1", port)
            transports.append(transport)
            await asyncio.wait_for(done, 30)

    await asyncio.gather(*(one(n) for n in range(start, start + count)))
    return transports


async def client_main(kind: str, port: int, start: int, count: int) -> None:
    transports = await open_idle(kind, port, start, count)
    print(f"ready {len(transports)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- driver -----------------------------------------------------------------------------


def spawn_clients(kind: str, port: int, start: int, total: int, procs: int) -> list[subprocess.Popen[str]]:
    per = -(-total // procs)
    children = []
    for i in range(procs):
        count = min(per, total - i * per)
        if count <= 0:
            break
        cmd = [sys.executable, __file__, "client", kind, str(port), str(start + i * per), str(count)]
        children.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"client failed: {line!r}")
    return children


def stop(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        if child.stdin:
            child.stdin.close()
    for child in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


def measure(kind: str, conns: int, procs: int, warmup: int) -> dict[str, float]:
    tcp, ws = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            f'[tcp]\nbind = ["127.0.0.1:{tcp}"]\n[websocket]\nbind = ["127.0.0.1:{ws}"]\n'
            '[log]\nlevel = "error"\n'
        )
        server = subprocess.Popen([sys.executable, "-m", "mpim", "worker", "-c", str(cfg)], cwd=ROOT)
        try:
            time.sleep(1.0)
            empty = settled_rss(server.pid)
            warm = spawn_clients("tcp", tcp, 0, warmup, 1) + spawn_clients("ws", ws, warmup, warmup, 1)
            before = settled_rss(server.pid)
            started = time.monotonic()
            clients = spawn_clients(kind, tcp if kind == "tcp" else ws, 10 * warmup, conns, procs)
            connect_seconds = time.monotonic() - started
            after = settled_rss(server.pid)
            stop(clients + warm)
        finally:
            server.terminate()
            server.wait(30)
    return {
        "conns": conns,
        "empty_rss_mib": empty / 2**20,
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "bytes_per_conn": (after - before) / conns,
        "connect_per_s": conns / connect_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    client = sub.add_parser("client")
    client.add_argument("kind", choices=["tcp", "ws"])
    client.add_argument("port", type=int)
    client.add_argument("start", type=int)
    client.add_argument("count", type=int)
    parser.add_argument("--kind", choices=["tcp", "ws", "both"], default="both")
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--append", help="append a Markdown row to this results file")
    args = parser.parse_args()
    if args.cmd == "client":
        uvloop.run(client_main(args.kind, args.port, args.start, args.count))
        return
    kinds = ["tcp", "ws"] if args.kind == "both" else [args.kind]
    rows = []
    for kind in kinds:
        result = measure(kind, args.conns, args.procs, args.warmup)
        rows.append((kind, result))
        print(
            f"{kind:3} {result['conns']:>6} conns: {result['bytes_per_conn']:7.0f} B/conn "
            f"(worker RSS {result['rss_before_mib']:.1f} -> {result['rss_after_mib']:.1f} MiB, "
            f"empty {result['empty_rss_mib']:.1f} MiB), connect {result['connect_per_s']:.0f}/s",
            flush=True,
        )
    if args.append:
        with open(args.append, "a", encoding="utf-8") as out:
            for kind, result in rows:
                out.write(
                    f"| {kind} | {result['conns']} | {result['bytes_per_conn']:.0f} | "
                    f"{result['rss_before_mib']:.1f} | {result['rss_after_mib']:.1f} |\n"
                )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
