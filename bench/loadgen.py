"""One load generator process: ``python -m bench.loadgen --deadline SECONDS``.

The runner drives it with one JSON object per line on stdin and reads one JSON
reply per command on stdout; a command's ``"id"`` comes back in its reply, so
the runner can skip the reply of a call it gave up on:

- ``{"cmd": "connect", "kind": "tcp"|"ws"|"nchan", "port": P, "path": "/sub",
  "first": G, "count": N, "rooms": R, "mode": "room"|"mid", "inflight": K}``
  opens N connections with global indexes G..G+N-1 (mid = index + 1, room =
  index % R; in "mid" mode a connection follows stream index // group, with
  ``"group": K`` users per push) and waits until each is authenticated (Nchan:
  upgraded; a Nchan subscriber's channel is its stream, ``{path}/<stream>``);
  replies ``{"ok", "failed", "seconds"}``.
- ``{"cmd": "heartbeat", "interval": S}``: every connection sends a heartbeat
  each S seconds, spread over the interval.
- ``{"cmd": "stats"}`` -> counters; ``{"cmd": "reset"}`` zeroes them;
  ``{"cmd": "bcast"}`` -> broadcast seq -> [deliveries, first, last receive].
- ``{"cmd": "finish", "sent": {stream: count}}`` -> counters, latency
  histogram, broadcast arrivals and ``lost`` (published but never received;
  ``sent`` counts since the connections opened, ``lost`` only what went
  missing since the previous finish, so phases at several rates add up).

The process exits on stdin EOF or when the deadline passes, whichever is first.
It connects only to 127.0.0.1 (from a loopback source address the runner picks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import uvloop

from bench.clients import Client, NchanClient, TcpClient, WsClient
from bench.tally import Tally
from bench.wire import HEARTBEAT, room_name

HOST = "127.0.0.1"
MAX_SOCKETS = 18_000


class Generator:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tally = Tally()
        self.clients: list[Client] = []
        self._beat: asyncio.Task[None] | None = None
        self.lost_reported = 0  # lost messages already reported by an earlier finish

    async def connect(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind, port, path = spec["kind"], int(spec["port"]), spec.get("path", "/sub")
        first, count, rooms = int(spec["first"]), int(spec["count"]), int(spec.get("rooms", 1))
        source = str(spec.get("source", HOST))
        by_mid = spec.get("mode", "room") == "mid"
        group = int(spec.get("group", 1))
        if len(self.clients) + count > MAX_SOCKETS:
            raise ValueError(f"{len(self.clients) + count} sockets would pass {MAX_SOCKETS} per process")
        sem = asyncio.Semaphore(int(spec.get("inflight", 256)))
        failed = 0
        loop = self.loop

        async def one(index: int) -> None:
            nonlocal failed
            mid = index + 1
            room_index = index % rooms if rooms else -1
            stream = index // group if by_mid else room_index
            room = room_name(room_index) if rooms else ""
            ready: asyncio.Future[None] = loop.create_future()
            client: Client
            if kind == "tcp":
                client = TcpClient(self.tally, stream, room, ready, mid)
            elif kind == "ws":
                client = WsClient(self.tally, stream, room, ready, mid, f"ws://{HOST}:{port}{path}")
            else:
                url = f"ws://{HOST}:{port}{path}/{stream}"
                client = NchanClient(self.tally, stream, room, ready, mid, url)
            async with sem:
                try:
                    await loop.create_connection(lambda: client, HOST, port, local_addr=(source, 0))
                    await asyncio.wait_for(ready, 30)
                except (TimeoutError, OSError, ConnectionError):
                    failed += 1
                    if client.transport is not None:
                        client.transport.abort()
                    return
            self.clients.append(client)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(first, first + count)))
        return {"ok": count - failed, "failed": failed, "seconds": time.monotonic() - started}

    def heartbeat(self, interval: float) -> None:
        if self._beat is not None:
            self._beat.cancel()
        self._beat = self.loop.create_task(self._heartbeats(interval))

    async def _heartbeats(self, interval: float) -> None:
        step = 0.1
        slices = max(1, round(interval / step))
        i = 0
        while True:
            await asyncio.sleep(step)
            for client in self.clients[i % slices :: slices]:
                client.send_frame(HEARTBEAT)
            i += 1

    def finish(self, sent: dict[str, int]) -> dict[str, Any]:
        report = self.tally.report()
        lost = sum(c.lost(sent.get(str(c.stream), 0)) for c in self.clients)
        report["lost"] = lost - self.lost_reported
        self.lost_reported = lost
        report["open"] = sum(1 for c in self.clients if c.transport is not None)
        return report

    async def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg["cmd"]
        if cmd == "connect":
            return await self.connect(msg)
        if cmd == "heartbeat":
            self.heartbeat(float(msg["interval"]))
            return {}
        if cmd == "stats":
            snap = self.tally.snapshot()
            snap["open"] = sum(1 for c in self.clients if c.transport is not None)
            return snap
        if cmd == "reset":
            self.tally.reset()
            for client in self.clients:
                client.tally = self.tally
            return {}
        if cmd == "bcast":
            return {"bcast": {str(seq): entry for seq, entry in self.tally.bcast.items()}}
        if cmd == "finish":
            return self.finish(msg.get("sent", {}))
        raise ValueError(f"unknown command {cmd!r}")

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.abort()


async def serve(deadline: float) -> None:
    loop = asyncio.get_running_loop()
    gen = Generator()
    reader = asyncio.StreamReader(limit=64 * 2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    try:
        while True:
            line = await asyncio.wait_for(reader.readline(), max(0.0, deadline - time.monotonic()))
            if not line:
                break
            msg = json.loads(line)
            try:
                reply = await gen.handle(msg)
            except Exception as exc:  # report to the runner, keep serving
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps({**reply, "id": msg.get("id")}) + "\n")  # the runner matches the id
            out.flush()
    except TimeoutError:
        print("loadgen: deadline reached, exiting", file=sys.stderr)
    finally:
        gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="mpim benchmark load generator (driven by the runner)")
    parser.add_argument("--deadline", type=float, default=600.0, help="exit after this many seconds")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    uvloop.run(serve(time.monotonic() + args.deadline))


if __name__ == "__main__":
    main()
