"""The runner's side of the load generators: spawn, command, merge.

A :class:`Fleet` is a set of ``bench.loadgen`` processes, each holding at most
``per_process`` sockets (the per-process open-file limit here is ~20,000). A
command goes to every process at once and the replies are gathered.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

PER_PROCESS = 15_000


class GeneratorError(RuntimeError):
    pass


class Generator:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()
        self.source = source_address()

    async def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One command and its reply. Shielded: a caller cancelled while it waits (a progress
        ticker) must not leave its reply in the pipe for the next command to read."""
        return await asyncio.shield(self._call(msg))

    async def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise GeneratorError(f"load generator {self.proc.pid} exited ({msg['cmd']})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise GeneratorError(f"load generator {self.proc.pid}: {reply['error']}")
        return reply


class Fleet:
    def __init__(self, gens: list[Generator]) -> None:
        self.gens = gens

    @classmethod
    async def start(cls, processes: int, deadline: float) -> Fleet:
        gens = []
        for _ in range(processes):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.loadgen",
                "--deadline",
                str(deadline),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=256 * 2**20,
            )
            gens.append(Generator(proc))
        return cls(gens)

    @property
    def pids(self) -> list[int]:
        return [g.proc.pid for g in self.gens]

    async def all(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(g.call(msg) for g in self.gens)))

    async def connect(self, spec: dict[str, Any], total: int, first: int = 0) -> list[dict[str, Any]]:
        """Open ``total`` connections split evenly over the processes.

        Each process connects from its own loopback address (127.x.y.z, fresh
        for each fleet): one source address has only ~28,000 ephemeral ports
        toward one server port, and closed connections keep theirs in
        TIME_WAIT for a minute after a run.
        """
        share = -(-total // len(self.gens))
        calls = []
        for i, gen in enumerate(self.gens):
            count = min(share, total - i * share)
            if count > 0:
                msg = {
                    **spec,
                    "cmd": "connect",
                    "first": first + i * share,
                    "count": count,
                    "source": gen.source,
                }
                calls.append(gen.call(msg))
        return list(await asyncio.gather(*calls))

    async def stop(self) -> None:
        for gen in self.gens:
            if gen.proc.stdin is not None and not gen.proc.stdin.is_closing():
                gen.proc.stdin.close()
        for gen in self.gens:
            try:
                await asyncio.wait_for(gen.proc.wait(), 15)
            except TimeoutError:
                gen.proc.kill()
                await gen.proc.wait()


def source_address() -> str:
    """A random loopback address other than 127.0.0.1 (all of 127.0.0.0/8 is the loopback)."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(0, 256)}.{random.randrange(1, 255)}"


def processes_for(connections: int, minimum: int = 1) -> int:
    return max(minimum, -(-connections // PER_PROCESS))
