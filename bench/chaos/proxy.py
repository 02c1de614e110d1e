"""A small TCP proxy between one host and Redis, on 127.0.0.1, that injects network faults.

Each host's ``[cluster] redis`` points at its own :class:`Proxy`, which forwards to the
run's redis-server. Modes (:meth:`Proxy.set`):

- ``pass`` — bytes flow both ways;
- ``delay`` — every chunk is held ``delay`` seconds before it is forwarded (latency, not a
  throughput cap: chunks keep their order and overlap in time);
- ``drop`` — connections are cut at random (a reset) every ``0.2``-``1`` s, new ones work;
- ``partition`` — nothing flows either way: bytes are discarded, new connections are
  accepted and hang. On healing (back to ``pass``) every connection that lost bytes is
  reset, since its stream is broken; the client reconnects, as after a real partition that
  outlived its TCP timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from bench.servers import free_port

PASS, DELAY, DROP, PARTITION = "pass", "delay", "drop", "partition"


class _Pipe:
    def __init__(self, proxy: Proxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.broken = False  # bytes were discarded: reset it when the partition heals
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()
        for t in self.tasks:
            t.cancel()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.get_running_loop().create_task(self._send(queue, writer))
        try:
            while data := await reader.read(65536):
                if self.proxy.mode == PARTITION:
                    self.broken = True
                    continue
                delay = self.proxy.delay if self.proxy.mode == DELAY else 0.0
                queue.put_nowait((time.monotonic() + delay, data))
            with contextlib.suppress(TimeoutError):  # (an orderly end: what is queued still leaves)
                await asyncio.wait_for(queue.join(), self.proxy.delay + 1.0)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            self.close()
            self.proxy.pipes.discard(self)

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if self.proxy.mode == PARTITION:
                    self.broken = True
                else:
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                queue.task_done()


class Proxy:
    def __init__(self, upstream_port: int, seed: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = PASS
        self.delay = 0.0
        self.pipes: set[_Pipe] = set()
        self._server: asyncio.Server | None = None
        self._dropper: asyncio.Task[None] | None = None
        self._rng = random.Random(seed)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pipe = _Pipe(self, writer)
        self.pipes.add(pipe)
        if self.mode == PARTITION:  # hangs: discards what it gets until healed
            pipe.broken = True
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            pipe.close()
            self.pipes.discard(pipe)
            return
        try:
            up_reader, pipe.upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            pipe.close()
            self.pipes.discard(pipe)
            return
        loop = asyncio.get_running_loop()
        pipe.tasks = [
            loop.create_task(pipe.pump(reader, pipe.upstream)),
            loop.create_task(pipe.pump(up_reader, writer)),
        ]

    def set(self, mode: str, delay: float = 0.0) -> None:
        healing = self.mode == PARTITION and mode != PARTITION
        self.mode, self.delay = mode, delay
        if healing:
            for pipe in [p for p in self.pipes if p.broken]:
                pipe.close()
                self.pipes.discard(pipe)
        if mode == DROP and self._dropper is None:
            self._dropper = asyncio.get_running_loop().create_task(self._drop())
        elif mode != DROP and self._dropper is not None:
            self._dropper.cancel()
            self._dropper = None

    async def _drop(self) -> None:
        while True:
            await asyncio.sleep(self._rng.uniform(0.2, 1.0))
            if self.pipes:
                pipe = self._rng.choice(sorted(self.pipes, key=id))
                pipe.close()
                self.pipes.discard(pipe)

    async def stop(self) -> None:
        self.set(PASS)
        if self._server is not None:
            self._server.close()
        for pipe in list(self.pipes):
            pipe.close()
        self.pipes.clear()
