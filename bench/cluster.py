"""Two mpim hosts on one redis-server, on this machine: the servers of ``python -m bench hosts``.

:class:`TwoHosts` starts a ``redis-server`` of its own on a free loopback port (no
persistence: ``--save "" --appendonly no``), then two ``mpim master`` processes, each
with its own ports, ``[server] name`` (``host-a``, ``host-b``) and ``[cluster] redis``
pointing at that Redis (goim's several-hosts layout, README "Several hosts"). Its
:attr:`group` measures all three process trees as one server, each process named
after its host: ``A router``, ``B worker 1``, ``redis``, so ``--profile "A router"``
works as for one host. :meth:`TwoHosts.wait_filed` waits until each host's sessions
are in the Redis directory (the ``conns_<server>`` index a host keeps of its own
connections), i.e. until a push by mid through the other host can find them.

Nothing is installed here: without ``redis-server`` on PATH, :class:`Missing` says how.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.procs import ProcessGroup, descendants, title
from bench.servers import ROOT, Missing, MpimServer, Server, free_port

HOST_NAMES = {"A": "host-a", "B": "host-b"}


def redis_missing() -> str | None:
    """What to install to run Redis, or None when ``redis-server`` is on PATH."""
    if shutil.which("redis-server"):
        return None
    return "redis-server is not installed; install it with:\n    sudo apt-get install -y redis-server"


class Trees(ProcessGroup):
    """Several process trees measured as one server.

    ``trees`` is a list of (label, root pid, keep the process title): an mpim
    master's processes are named ``<label> <title>`` (``A worker 1``), a process
    whose title says nothing useful (redis-server) just ``<label>``.
    """

    def __init__(self, trees: list[tuple[str, int, bool]]) -> None:
        self.trees = trees
        super().__init__(trees[0][1])

    def refresh(self) -> None:
        for label, root, titled in self.trees:
            for pid in descendants(root):
                if pid in self.names:
                    continue
                try:
                    self.names[pid] = f"{label} {title(pid)}" if titled else label
                except OSError:
                    continue


class RedisProcess(Server):
    """A redis-server of the benchmark's own on 127.0.0.1, without persistence."""

    name = "redis"

    def __init__(self) -> None:
        problem = redis_missing()
        if problem:
            raise Missing(problem)
        super().__init__()
        self.port = free_port()
        self.log_path = self.tmp / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0, socket_connect_timeout=5.0)

    async def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no"]
        argv += ["--dir", str(self.tmp), "--logfile", str(self.log_path), "--daemonize", "no"]
        argv += ["--save", "", "--appendonly", "no"]
        with open(self.tmp / "stdout.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        async with self.client() as conn:
            while True:
                try:
                    if await conn.ping():
                        break
                except (RedisError, OSError):
                    pass
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
                await asyncio.sleep(0.05)
        self.group = ProcessGroup(self.proc.pid)

    def worker_pids(self) -> list[int]:
        return []


class TwoHosts(Server):
    """Redis and two mpim masters (``host-a`` and ``host-b``) sharing it; see the module docstring."""

    name = "hosts"

    def __init__(
        self, host_workers: int, overrides: dict[str, dict[str, Any]] | None = None, root: Path = ROOT
    ) -> None:
        super().__init__()
        self.redis = RedisProcess()
        self.host_workers = host_workers
        self.hosts: dict[str, MpimServer] = {}
        for label, host in HOST_NAMES.items():
            sections = {name: dict(table) for name, table in (overrides or {}).items()}
            sections.setdefault("server", {})["name"] = host
            sections.setdefault("cluster", {})["redis"] = self.redis.url
            self.hosts[label] = MpimServer(host_workers, sections, root)

    @property
    def a(self) -> MpimServer:
        return self.hosts["A"]

    @property
    def b(self) -> MpimServer:
        return self.hosts["B"]

    async def start(self) -> None:
        await self.redis.start()
        await asyncio.gather(*(host.start() for host in self.hosts.values()))
        assert self.redis.proc is not None
        trees = [(label, host.proc.pid, True) for label, host in self.hosts.items() if host.proc is not None]
        self.group = Trees([*trees, ("redis", self.redis.proc.pid, False)])

    async def stop(self) -> None:
        # the hosts first: a clean stop drops their directory entries while Redis is still there
        for host in self.hosts.values():
            await host.stop()
        await self.redis.stop()
        await super().stop()

    def worker_pids(self) -> list[int]:
        assert self.group is not None
        return [pid for pid, name in self.group.names.items() if " worker" in name]

    def log_count(self, text: str) -> int:
        return sum(host.log_count(text) for host in self.hosts.values())

    def log_tail(self, chars: int = 2000) -> str:
        parts = [f"--- {label}:\n{host.log_tail(chars)}" for label, host in self.hosts.items()]
        return "\n".join([*parts, f"--- redis:\n{self.redis.log_tail(chars)}"])

    async def filed(self) -> dict[str, int]:
        """Host label -> connections it has filed in the Redis directory (``conns_<server>``, or
        ``conns_<server>.<shard>`` per router shard; see mpim/cluster/directory.py)."""
        counts: dict[str, int] = {}
        async with self.redis.client() as conn:
            for label in self.hosts:
                index = f"conns_{HOST_NAMES[label]}"
                parts = [index, *[k async for k in conn.scan_iter(match=f"{index}.*")]]
                counts[label] = sum([await conn.hlen(k) for k in parts])
        return counts

    async def command_stats(self) -> dict[str, tuple[int, int]]:
        """Redis's ``INFO commandstats``: command -> (calls, microseconds) since it started."""
        async with self.redis.client() as conn:
            info: dict[str, Any] = await conn.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in info.items()
            if isinstance(v, dict)
        }

    async def wait_filed(self, expected: dict[str, int], timeout: float = 60.0) -> None:
        """Until each host has filed exactly ``expected[label]`` connections in the directory."""
        want = {label: expected.get(label, 0) for label in self.hosts}
        deadline = time.monotonic() + timeout
        seen: dict[str, int] = {}
        while True:
            with contextlib.suppress(RedisError, OSError):
                seen = await self.filed()
                if seen == want:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the directory holds {seen} connections, not {want}, after {timeout:g}s")
            await asyncio.sleep(0.1)
