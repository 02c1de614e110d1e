"""One abusive client address: ``python -m bench.flooder --source 127.66.0.1 --ports 3101,3102 ...``.

Driven by the flood scenario (``python -m bench flood``). From a single source
address it keeps up to ``--conns`` connections open at once, reopening each as
soon as the server closes it, at up to ``--rate`` attempts per second (0 = as
fast as it can). No connection ever authenticates; they take turns at
(``--mix``, all three by default):

- **hold**: connect and send nothing (costs the server a socket until its
  handshake timeout);
- **garbage**: random bytes (a bad goim header, or bytes that are no HTTP
  request on the WebSocket port): the server closes at once;
- **trickle**: a goim header announcing a body that never comes.

It stops after ``--seconds`` (or on stdin EOF) and prints one JSON line:
attempts, connected, failed (the connect itself failed), closed by the server
(within a second, and later), the most connections open at once, and the
attempts per second it achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import struct
import sys
import time
from typing import Any

import uvloop

HOST = "127.0.0.1"
HOLD_MAX = 30.0  # a held connection is dropped and reopened after this long
BEHAVIOURS = ("hold", "garbage", "trickle")


class Stats:
    def __init__(self) -> None:
        self.attempts = 0
        self.connected = 0
        self.failed = 0
        self.closed_fast = 0  # by the server within 1 s (refused by a limit, bad input)
        self.closed_slow = 0  # by the server later (handshake timeout)
        self.open = 0
        self.max_open = 0


class Abuser(asyncio.Protocol):
    def __init__(self, stats: Stats, behaviour: str, rng: random.Random) -> None:
        self.stats = stats
        self.behaviour = behaviour
        self.rng = rng
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened = 0.0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.opened = time.monotonic()
        self.stats.connected += 1
        self.stats.open += 1
        self.stats.max_open = max(self.stats.max_open, self.stats.open)
        if self.behaviour == "garbage":
            transport.write(self.rng.randbytes(self.rng.randrange(1, 64)))
        elif self.behaviour == "trickle":
            transport.write(struct.pack(">ihhii", 16 + 4000, 16, 1, 7, 1) + b"{")  # Auth, body never ends

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        if not self.done.done():
            self.done.set_result(None)


def _same(protocol: Abuser) -> Abuser:
    return protocol


async def flood(args: argparse.Namespace, stats: Stats, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    ports = [int(p) for p in args.ports.split(",")]
    mix = [b for b in args.mix.split(",") if b]
    gap = 1.0 / args.rate if args.rate > 0 else 0.0
    next_at = time.monotonic()
    lock = asyncio.Lock()  # paces attempts over all the slots

    async def slot(index: int) -> None:
        nonlocal next_at
        rng = random.Random(index)
        turn = index
        while not stop.is_set():
            if gap:
                async with lock:
                    now = time.monotonic()
                    next_at = max(next_at + gap, now)
                    wait = next_at - now
                if wait > 0:
                    await asyncio.sleep(wait)
            turn += 1
            abuser = Abuser(stats, mix[turn % len(mix)], rng)
            stats.attempts += 1
            try:
                port = ports[turn % len(ports)]
                await loop.create_connection(
                    functools.partial(_same, abuser), HOST, port, local_addr=(args.source, 0)
                )
            except OSError:
                stats.failed += 1
                await asyncio.sleep(0.05)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(abuser.done), HOLD_MAX)
            if abuser.done.done():
                if time.monotonic() - abuser.opened < 1.0:
                    stats.closed_fast += 1
                else:
                    stats.closed_slow += 1
            elif abuser.transport is not None:
                abuser.transport.abort()
                await abuser.done

    slots = [asyncio.create_task(slot(i)) for i in range(args.conns)]
    await stop.wait()
    for task in slots:
        task.cancel()
    await asyncio.gather(*slots, return_exceptions=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_eof() -> None:
        await reader.read()
        stop.set()

    eof = asyncio.create_task(until_eof())
    loop.call_later(args.seconds, stop.set)
    started = time.monotonic()
    await flood(args, stats, stop)
    eof.cancel()
    seconds = time.monotonic() - started
    return {
        "seconds": seconds,
        "attempts": stats.attempts,
        "attempts_per_s": stats.attempts / seconds if seconds else 0.0,
        "connected": stats.connected,
        "failed": stats.failed,
        "closed_fast": stats.closed_fast,
        "closed_slow": stats.closed_slow,
        "max_open": stats.max_open,
    }


def main() -> None:
    p = argparse.ArgumentParser(description="one abusive client address (the flood scenario drives it)")
    p.add_argument("--source", default="127.66.0.1", help="the one source address (a loopback address)")
    p.add_argument("--ports", required=True, help="server ports, comma-separated (TCP, WebSocket)")
    p.add_argument("--conns", type=int, default=3000, help="connections kept open (or trying) at once")
    p.add_argument("--rate", type=float, default=0.0, help="attempts per second at most; 0 = unpaced")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long (or at stdin EOF)")
    p.add_argument(
        "--mix", default=",".join(BEHAVIOURS), help="behaviours taking turns: hold,garbage,trickle"
    )
    args = p.parse_args()
    if not args.mix or any(b not in BEHAVIOURS for b in args.mix.split(",")):
        p.error(f"--mix: a comma-separated list of {', '.join(BEHAVIOURS)}")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    result = uvloop.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
