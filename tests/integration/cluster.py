"""Helpers for end-to-end push tests against a real ``mpim master``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from mpim.client import Client, connect_tcp, connect_ws
from mpim.proto import Frame
from tests.support import ServerProcess, http_json, run, wait_port

# Fast reports and sweeps so recovery is quick; the functional checks do not depend on them.
ROUTER = {"report_interval": 0.2, "online_interval": 0.5, "worker_expiry": 3.0, "sweep_interval": 0.2}


def start_master(tmp: Path, workers: int, **sections: dict[str, Any]) -> ServerProcess:
    server: dict[str, Any] = {"workers": workers, "graceful_timeout": 5.0, "worker_timeout": 10.0}
    router = {**ROUTER, **sections.pop("router", {})}
    srv = ServerProcess(tmp, "master", {"server": server, "router": router, **sections})
    bind = sections.get("http", {}).get("bind")
    if bind:  # the test chose the push API's address itself
        srv.http_port = int(str(bind).rpartition(":")[2])
    srv.start(wait=False)
    srv.wait_log("bound:", timeout=30)
    wait_port(srv.http_port, timeout=30, proc=srv.proc)  # the router may come up after the workers
    return srv


def cluster_host(
    tmp: Path, name: str, redis_url: str, workers: int = 1, **sections: dict[str, Any]
) -> ServerProcess:
    """A master named ``name`` in ``tmp/name``, one host of a cluster on ``redis_url``; each of
    ``sections`` is merged into its table."""
    tables: dict[str, dict[str, Any]] = {
        "server": {"name": name, "workers": workers, "graceful_timeout": 5.0, "worker_timeout": 10.0},
        "cluster": {"redis": redis_url, "timeout": 0.5},
    }
    for section, table in sections.items():
        tables[section] = {**tables.get(section, {}), **table}
    (tmp / name).mkdir(exist_ok=True)
    return start_master(tmp / name, workers, **tables)


@contextlib.contextmanager
def serving(
    servers: tuple[ServerProcess, ...], ready: Callable[[ServerProcess], Awaitable[Any]]
) -> Iterator[tuple[ServerProcess, ...]]:
    """The servers once each is ``ready``; all stopped after."""
    try:
        for srv in servers:
            run(ready(srv))
        yield servers
    finally:
        for srv in servers:
            srv.stop()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


class Cluster:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.clients: list[Client] = []

    async def get(self, target: str) -> Any:
        status, answer = await http_json(self.srv.http_port, "GET", target)
        assert status == 200 and answer["code"] == 0, answer
        return answer["data"]

    async def post(self, target: str, body: bytes) -> Any:
        status, answer = await http_json(self.srv.http_port, "POST", target, body)
        assert status == 200 and answer["code"] == 0, answer
        return answer["data"]

    async def workers(self) -> dict[str, int]:
        """Worker id -> pid, as the router knows them."""
        return {
            w["id"]: w["pid"] for w in await self.get("/mpim/workers") if w["pid"]
        }  # (pid 0: another host)

    async def wait_workers(self, n: int) -> dict[str, int]:
        """Until ``n`` workers of this host report, each with its bus fence through (before
        that, a push to everyone is refused with -503: that worker might miss it)."""

        async def enough() -> dict[str, int] | None:
            here = [w for w in await self.get("/mpim/workers") if w["pid"]]
            if len(here) == n and all(w["bus"] for w in here):
                return {w["id"]: w["pid"] for w in here}
            return None

        return dict(await until(enough, what=f"{n} workers reporting"))

    async def worker_of(self, key: str) -> str:
        async def find() -> str:
            conns = await self.get(f"/mpim/session?key={key}")
            return str(conns[0]["worker"]) if conns else ""

        return str(await until(find, what=f"key {key} in the router's tables"))

    async def join(
        self, key: str, mid: int, room: str = "", accepts: tuple[int, ...] = (1000,), ws: bool = False
    ) -> tuple[Client, str]:
        """Connect and authenticate; returns the client and the worker that holds it."""
        srv = self.srv
        client = await (connect_ws(srv.ws_url) if ws else connect_tcp("127.0.0.1", srv.tcp_port))
        await client.auth({"mid": mid, "key": key, "room_id": room, "accepts": list(accepts)})
        self.clients.append(client)
        return client, await self.worker_of(key)

    async def spread(
        self, prefix: str, mid: int | None, room: str, count: int, workers: int, **kw: Any
    ) -> list[tuple[Client, str, str]]:
        """``count`` clients (TCP and WebSocket alternating) covering ``workers`` distinct workers.

        The kernel picks the worker of each connection; extra connections are made
        (and closed again) until the wanted spread is reached.
        """
        assert count >= workers
        chosen: list[tuple[Client, str, str]] = []
        for i in range(200):
            key = f"{prefix}-{i}"
            user = mid if mid is not None else 1000 + i
            client, worker = await self.join(key, user, room, ws=i % 2 == 1, **kw)
            covered = Counter(w for _, _, w in chosen)
            if len(chosen) < count:
                chosen.append((client, key, worker))
            elif worker not in covered:
                victim = next(c for c in chosen if covered[c[2]] > 1)
                chosen.remove(victim)
                await self.leave(victim[0], victim[1])
                chosen.append((client, key, worker))
            else:
                await self.leave(client, key)
            if len(chosen) == count and len({w for _, _, w in chosen}) >= workers:
                return chosen
        raise AssertionError("the kernel never spread connections over the workers")

    async def leave(self, client: Client, key: str) -> None:
        await client.close()
        self.clients.remove(client)

        async def gone() -> bool:
            return not await self.get(f"/mpim/session?key={key}")

        await until(gone, what=f"key {key} leaving the tables")

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()


async def pushes(client: Client, n: int, timeout: float = 10.0) -> list[Frame]:
    return [await client.recv_push(timeout) for _ in range(n)]


async def nothing_more(client: Client, quiet: float = 0.3) -> None:
    """No further push arrives within ``quiet`` seconds (heartbeat replies are not pushes)."""
    try:
        frame = await client.recv_push(quiet)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected push {frame}")


def with_cluster(srv: ServerProcess, test: Callable[[Cluster], Awaitable[None]]) -> None:
    """Run ``test`` with a Cluster view of a running master, closing its clients after."""

    async def main() -> None:
        cluster = Cluster(srv)
        try:
            await test(cluster)
        finally:
            await cluster.close()

    run(main())


def in_cluster(
    tmp: Path, workers: int, scenario: Callable[[ServerProcess, Cluster], Awaitable[None]]
) -> None:
    """Start a master with ``workers`` workers, run ``scenario`` once they report, stop everything."""
    srv = start_master(tmp, workers)

    async def main() -> None:
        c = Cluster(srv)
        try:
            await c.wait_workers(workers)
            await scenario(srv, c)
        finally:
            await c.close()

    try:
        run(main())
    finally:
        srv.stop()
