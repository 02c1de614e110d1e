"""Is the system serving again? The harness's end-to-end check after every fault.

Healthy means, for every host: its master runs, ``/mpim/workers`` lists at least its
configured workers (each with its bus fence through, where the server reports it), its probe
client is connected, and a room push, a push by key and a push by mid through that host are
answered ok and reach the probe client of *every* host (so, with two hosts, Redis and both
directions of the cluster work). The probe pushes are ordinary ``push`` operations of the
history (process ``probe``), judged like any other.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.chaos.backend import Pushers
from bench.chaos.ctx import PROBE_ROOM, Ctx
from bench.chaos.goim import GoimClient


class Prober:
    def __init__(self, ctx: Ctx, pushers: Pushers, clients: list[GoimClient]) -> None:
        self.ctx = ctx
        self.pushers = pushers
        self.clients = clients

    async def healthy(self, timeout: float) -> tuple[bool, str]:
        """Poll until healthy; (True, "") or (False, what was still wrong)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = "not checked"
        while True:
            state = await self._check(max(1.0, min(5.0, deadline - loop.time())))
            if not state:
                return True, ""
            if loop.time() >= deadline:
                return False, state
            await asyncio.sleep(0.3)

    async def _check(self, wait: float) -> str:
        for host in self.ctx.hosts:
            if not host.pid:
                return f"host {host.label} is not running"
            try:
                workers = await self.pushers.get(host.label, "/mpim/workers")
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                return f"host {host.label}: /mpim/workers: {exc or type(exc).__name__}"
            rows = [w for w in workers.get("data") or [] if isinstance(w, dict) and w.get("pid")]
            if len(rows) < host.workers or not all(w.get("bus", True) for w in rows):
                return f"host {host.label}: {len(rows)} workers report (bus: {[w.get('bus') for w in rows]})"
        offline = [c.process for c in self.clients if not c.online.is_set()]
        if offline:
            return f"probe clients offline: {offline}"
        sent: list[str] = []
        for host in self.ctx.hosts:
            for target, kw in (
                ("room", {"room": PROBE_ROOM}),
                ("key", {"keys": [c.key for c in self.clients]}),
                ("mid", {"mids": [c.mid for c in self.clients]}),
            ):
                body = self.pushers.body("Q")
                args: dict[str, Any] = {
                    "target": target,
                    "host": host.label,
                    "via": "http",
                    "body": body,
                    **kw,
                }
                answer = await self.pushers.push("probe", **args)
                if answer.get("code") != 0:
                    said = f"{answer.get('code')} {answer.get('message') or answer.get('error')}"
                    return f"probe push by {target} via {host.label}: {said}"
                sent.append(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        missing: list[tuple[str, str]] = []
        while loop.time() < deadline:
            missing = [(c.process, b) for c in self.clients for b in sent if b not in c.got]
            if not missing:
                return ""
            await asyncio.sleep(0.05)
        return f"probe pushes not delivered: {missing[:4]}"
