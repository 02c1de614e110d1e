"""The nemesis: one fault at a time on a seeded schedule, each healed and followed by a wait
until the system serves again (:class:`~bench.chaos.probe.Prober`).

Each fault is one operation of process ``nemesis``: ``time`` = when it began, ``end`` = when
the system was healthy again (``null`` and outcome ``info`` if it did not come back within
the wait), values ``host``, ``applied``, ``healed`` and what was done (pids, exit codes,
restart attempts and their refusals). The checker treats [time, end] as the fault's window.

One host: kill -9 (the master restarts it) and SIGSTOP/SIGCONT of a worker, the router and
the bus; kill -9 of the whole master tree and SIGSTOP of it; SIGTERM (a drain) — both then
``mpim master`` again on the same config and inbox; SIGHUP reloads that change a worker
setting, a router setting, or write an invalid file (refused; the valid file is put back).
Two hosts add: kill -9 (restart on its AOF) and SIGSTOP of redis-server, and through one
host's Redis proxy a partition, added latency, or dropped connections. mpim's hosts talk to
each other only through Redis, so cutting one host off Redis while the other keeps it is the
partition between the hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from bench.chaos.ctx import Ctx
from bench.chaos.history import INFO, OK
from bench.chaos.probe import Prober
from bench.chaos.proxy import DELAY, DROP, PARTITION, PASS
from bench.chaos.servers import Host, StartRefused, alive, signal_all
from bench.chaos.topology import Topology

ONE_HOST = (
    "kill-worker",
    "pause-worker",
    "kill-router",
    "pause-router",
    "kill-bus",
    "pause-bus",
    "kill-master",
    "pause-master",
    "term",
    "reload-workers",
    "reload-router",
    "reload-invalid",
)
TWO_HOSTS = ("kill-redis", "pause-redis", "partition-redis", "delay-redis", "drop-redis")
RECOVERY = 45.0  # seconds a fault may take to be healed and the system to serve again
NAME_HELD = "another live host of this cluster has that name"  # (the router's boot error, issue 22)


def applicable(hosts: int) -> tuple[str, ...]:
    return ONE_HOST + (TWO_HOSTS if hosts > 1 else ())


class Nemesis:
    def __init__(self, ctx: Ctx, topology: Topology, prober: Prober, names: list[str]) -> None:
        self.ctx = ctx
        self.topology = topology
        self.prober = prober
        self.names = names
        self.rng: random.Random = ctx.rng("nemesis")
        self.stopped = asyncio.Event()
        self.count = 0
        self._flip = 0

    async def run(self, until: float) -> None:
        """Faults until ``until`` (history seconds): a calm gap of 2-5 s, then one fault."""
        history = self.ctx.history
        while self.names and history.now() < until and not self.stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), self.rng.uniform(2, 5))
            if self.stopped.is_set() or history.now() >= until:
                break
            await self.one(self.rng.choice(self.names))

    async def one(self, name: str) -> None:
        history = self.ctx.history
        start = history.now()
        values: dict[str, Any] = {}
        action: Callable[[dict[str, Any]], Awaitable[None]] = getattr(self, "_" + name.replace("-", "_"))
        self.count += 1
        claims = {h.label: h.log_count(NAME_HELD) for h in self.topology.hosts}
        await action(values)
        values.setdefault("applied", start)
        values.setdefault("healed", values["applied"])
        ok, state = await self.prober.healthy(RECOVERY)
        refused = {h.label: h.log_count(NAME_HELD) - claims[h.label] for h in self.topology.hosts}
        if (
            any(refused.values()) and "refused" not in values
        ):  # (a restarted router, held off by its own name)
            values["refused"] = [
                f"host {label}: {n} router start(s) refused: {NAME_HELD}" for label, n in refused.items() if n
            ]
        values["waited"] = round(history.now() - values["healed"], 2)
        if not ok:
            values["state"] = state
        history.record("nemesis", name, OK if ok else INFO, values, time=start, end=None if not ok else -1.0)

    def _pick(self, values: dict[str, Any]) -> Host:
        host = self.rng.choice(self.topology.hosts)
        values["host"] = host.label
        return host

    async def _hold(self, lo: float, hi: float) -> None:
        await asyncio.sleep(self.rng.uniform(lo, hi))

    def _now(self) -> float:
        return self.ctx.history.now()

    # -- processes of one host ---------------------------------------------------------------
    async def _kill(self, values: dict[str, Any], title: str) -> None:
        pids = self._pick(values).children(title)
        if pids:
            pid = self.rng.choice(pids)
            values["pid"] = pid
            os.kill(pid, signal.SIGKILL)
        values["applied"] = self._now()

    async def _pause(self, values: dict[str, Any], title: str) -> None:
        pids = self._pick(values).children(title)
        if not pids:
            return
        pid = self.rng.choice(pids)
        values["pid"] = pid
        os.kill(pid, signal.SIGSTOP)
        values["applied"] = self._now()
        await self._hold(1, 3)
        os.kill(pid, signal.SIGCONT)
        values["healed"] = self._now()

    async def _kill_worker(self, values: dict[str, Any]) -> None:
        await self._kill(values, "worker")

    async def _kill_router(self, values: dict[str, Any]) -> None:
        await self._kill(values, "router")

    async def _kill_bus(self, values: dict[str, Any]) -> None:
        await self._kill(values, "bus")

    async def _pause_worker(self, values: dict[str, Any]) -> None:
        await self._pause(values, "worker")

    async def _pause_router(self, values: dict[str, Any]) -> None:
        await self._pause(values, "router")

    async def _pause_bus(self, values: dict[str, Any]) -> None:
        await self._pause(values, "bus")

    # -- a whole host ----------------------------------------------------------------------------
    async def _kill_master(self, values: dict[str, Any]) -> None:
        host = self._pick(values)
        values["pids"] = await host.kill()
        values["applied"] = self._now()
        await self._hold(0.5, 2)
        await self._restart(host, values)

    async def _pause_master(self, values: dict[str, Any]) -> None:
        host = self._pick(values)
        pids = host.pause()
        values["applied"] = self._now()
        await self._hold(1, 3)
        signal_all(pids, signal.SIGCONT)
        values["healed"] = self._now()

    async def _term(self, values: dict[str, Any]) -> None:
        host = self._pick(values)
        host.signal(signal.SIGTERM)
        values["applied"] = self._now()
        values["exit"] = await host.wait_exit(30)
        if values["exit"] is None:
            await host.kill()
        await self._restart(host, values)

    async def _restart(self, host: Host, values: dict[str, Any]) -> None:
        """``mpim master`` again on the same config and data, retried each second for a while."""
        refused: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY
        while True:
            try:
                await host.start()
                break
            except StartRefused as exc:
                refused.append(str(exc))
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(1.0)
        if refused:
            values["refused"] = refused[:3] + ([f"... {len(refused)} in all"] if len(refused) > 3 else [])
        values["healed"] = self._now()

    # -- reloads ---------------------------------------------------------------------------------
    async def _reload(self, values: dict[str, Any], section: str, key: str, choices: tuple[Any, Any]) -> None:
        host = self._pick(values)
        self._flip += 1
        sections = host.changed(section, key, choices[self._flip % 2])
        host.write_config(sections)
        host.sections = sections
        before = host.log_count("reload done")
        host.signal(signal.SIGHUP)
        values.update(applied=self._now(), change=f"[{section}] {key} = {choices[self._flip % 2]!r}")
        if section != "router":
            await self._log(host, "reload done", before, 20)
            values["seen"] = host.log_count("reload done") > before

    async def _reload_workers(self, values: dict[str, Any]) -> None:
        await self._reload(values, "room", "batch", (20, 10))

    async def _reload_router(self, values: dict[str, Any]) -> None:
        await self._reload(values, "router", "push_timeout", (3.0, 4.0))

    async def _reload_invalid(self, values: dict[str, Any]) -> None:
        host = self._pick(values)
        before = host.log_count("reload refused")
        broken = {name: dict(table) for name, table in host.sections.items()}
        broken.setdefault("protocol", {})["heartbeat"] = -1.0
        host.write_config(broken)
        host.signal(signal.SIGHUP)
        values["applied"] = self._now()
        await self._log(host, "reload refused", before, 10)
        values["reload_refused"] = host.log_count("reload refused") > before
        host.write_config(host.sections)  # the valid file back (for later restarts)
        values["healed"] = self._now()

    async def _log(self, host: Host, text: str, before: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while host.log_count(text) <= before and loop.time() < deadline:
            await asyncio.sleep(0.1)

    # -- Redis and the network between the hosts ---------------------------------------------------
    async def _kill_redis(self, values: dict[str, Any]) -> None:
        redis = self.topology.redis
        assert redis is not None
        values["pid"] = redis.pid
        await redis.kill()
        values["applied"] = self._now()
        await self._hold(1, 3)
        await redis.start()
        values["healed"] = self._now()

    async def _pause_redis(self, values: dict[str, Any]) -> None:
        redis = self.topology.redis
        assert redis is not None
        redis.pause(True)
        values["applied"] = self._now()
        await self._hold(1, 3)
        redis.pause(False)
        values["healed"] = self._now()

    async def _proxy(
        self, values: dict[str, Any], mode: str, lo: float, hi: float, delay: float = 0.0
    ) -> None:
        host = self._pick(values)
        proxy = self.topology.proxies[host.label]
        proxy.set(mode, delay)
        values["applied"] = self._now()
        if delay:
            values["delay"] = round(delay, 3)
        await self._hold(lo, hi)
        proxy.set(PASS)
        values["healed"] = self._now()

    async def _partition_redis(self, values: dict[str, Any]) -> None:
        await self._proxy(values, PARTITION, 2, 5)

    async def _delay_redis(self, values: dict[str, Any]) -> None:
        await self._proxy(values, DELAY, 2, 5, self.rng.uniform(0.05, 0.3))

    async def _drop_redis(self, values: dict[str, Any]) -> None:
        await self._proxy(values, DROP, 2, 4)

    # -- the end -----------------------------------------------------------------------------------
    async def heal_all(self) -> tuple[bool, str]:
        """Undo whatever is left (a stopped process, a proxy fault, a host or Redis down) and wait."""
        self.stopped.set()
        for host in self.topology.hosts:
            signal_all([p for p in host.tree() if alive(p)], signal.SIGCONT)
        for proxy in self.topology.proxies.values():
            proxy.set(PASS)
        redis = self.topology.redis
        if redis is not None:
            if redis.pid:
                redis.pause(False)
            else:
                await redis.start()
        for host in self.topology.hosts:
            if not host.pid:
                await self._restart(host, {})
        return await self.prober.healthy(RECOVERY)
