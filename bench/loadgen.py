"""One load generator process: ``python -m bench.loadgen --deadline SECONDS``.

The runner drives it with one JSON object per line on stdin and reads one JSON
reply per command on stdout:

- ``{"cmd": "connect", "kind": "tcp"|"ws"|"nchan", "port": P, "path": "/sub",
  "first": G, "count": N, "rooms": R, "mode": "room"|"mid", "inflight": K}``
  opens N connections with global indexes G..G+N-1 (mid = index + 1, room =
  index % R; in "mid" mode a connection follows stream index // group, with
  ``"group": K`` users per push) and waits until each is authenticated (Nchan:
  upgraded; a Nchan subscriber's channel is its stream, ``{path}/<stream>``);
  replies ``{"ok", "failed", "seconds"}``.
  With ``"ack": true`` (tcp, ws) they are ack clients (:mod:`bench.ackclients`:
  caps ack, resume, acks), ready once resumed; ``"chat": true`` makes them
  private-chat clients too. ``"kind": "gozero"`` (``"path"``: ``[gozero] path``)
  opens go-zero chat clients (:mod:`bench.gzclients`), ready once upgraded;
  ``"noack": true`` when the server acks nothing (``[upstream] ack = "none"``).
- ``{"cmd": "chat", "rate": R, "duration": S, "users": U, "contacts": K, "seed": N}``
  starts sending R private messages/s for S s from this process's chat clients
  to random users 1..U (or K contacts each) and replies at once;
  ``{"cmd": "chat_wait"}`` waits for the end -> ``{"sent", "skipped", "seconds"}``.
- ``{"cmd": "publish", "port": P, "users": U, "per_push": K, "size": B, "nchan": bool,
  "part": i, "parts": n, "conns": C, "rate": R, "duration": S, "tick": T}`` publishes pushes by
  mid (:mod:`bench.publisher`: this process's share of the groups, R requests/s over C
  keep-alive connections) for S s, waits for the answers and replies with the phase's counters
  and the pushes per stream since the first publish.
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

from bench.ackclients import AckTally, AckTcpClient, AckWsClient, Chatter, ack_client, chat_loop
from bench.clients import Client, NchanClient, TcpClient, WsClient
from bench.gzclients import GzChatClient, gozero_url
from bench.publisher import Publisher
from bench.wire import HEARTBEAT, room_name

HOST = "127.0.0.1"
MAX_SOCKETS = 18_000


class Generator:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tally = AckTally()  # a Tally with the ack clients' counters too
        self.clients: list[Client] = []
        self.chatters: list[Chatter] = []
        self._chat: asyncio.Task[dict[str, Any]] | None = None
        self._beat: asyncio.Task[None] | None = None
        self.lost_reported = 0  # lost messages already reported by an earlier finish
        self.publisher: Publisher | None = None

    async def connect(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind, port, path = spec["kind"], int(spec["port"]), spec.get("path", "/sub")
        first, count, rooms = int(spec["first"]), int(spec["count"]), int(spec.get("rooms", 1))
        source = str(spec.get("source", HOST))
        by_mid = spec.get("mode", "room") == "mid"
        group = int(spec.get("group", 1))
        ack, chat = bool(spec.get("ack")), bool(spec.get("chat"))
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
            if kind == "gozero":
                url = gozero_url(port, path, mid, HOST)
                client = GzChatClient(self.tally, stream, ready, mid, url, bool(spec.get("noack")))
            elif ack:
                url = f"ws://{HOST}:{port}{path}"
                client = ack_client(kind, self.tally, stream, room, ready, mid, url, chat)
            elif kind == "tcp":
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
            if chat and isinstance(client, AckTcpClient | AckWsClient | GzChatClient):
                self.chatters.append(client)

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
        if cmd == "publish":
            if self.publisher is None or not self.publisher.same(msg):
                if self.publisher is not None:
                    self.publisher.close()
                self.publisher = Publisher(msg)
            rate, duration = float(msg["rate"]), float(msg["duration"])
            return await self.publisher.publish(rate, duration, float(msg.get("tick", 0.002)))
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
        if cmd == "chat":
            if self._chat is not None and not self._chat.done():
                raise ValueError("a chat phase is already running")
            self._chat = self.loop.create_task(
                chat_loop(
                    self.chatters, float(msg["rate"]), float(msg["duration"]), int(msg["users"]),
                    int(msg.get("contacts", 0)), int(msg.get("seed", 1)),
                )
            )  # fmt: skip
            return {}
        if cmd == "chat_wait":
            if self._chat is None:
                return {"sent": 0, "skipped": 0, "seconds": 0.0}
            return await self._chat
        if cmd == "finish":
            return self.finish(msg.get("sent", {}))
        raise ValueError(f"unknown command {cmd!r}")

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
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
            try:
                reply = await gen.handle(json.loads(line))
            except Exception as exc:  # report to the runner, keep serving
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")
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
