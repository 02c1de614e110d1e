"""This host's membership of the cluster: its lease, and whether its view of the others is whole.

How this works:

- **Lease.** A host is alive to the others while its lease (``srv_<name>`` in Redis, with
  its incarnation id, ports and counts) exists. :class:`Membership` claims it at start and
  renews it every ``[cluster] lease_interval``; it expires ``lease_ttl`` after the last
  renewal, so a host killed with kill -9 (or cut off from Redis, or paused) is dead to the
  others within ``lease_ttl``: lookups skip its entries, its counts drop out.
- **Start.** The name is free as soon as the old incarnation's lease lapsed: a restarted
  host waits at most one lease for a dead predecessor's to lapse, takes the name over and
  drops the dead incarnation's entries (one log line). While a live incarnation keeps
  renewing, the start fails with a clear error: two live hosts never share a name.
- **Lapses.** A renewal that finds its own lease gone (the host was paused or cut off for
  longer than ``lease_ttl``) files the host's sessions again; one that finds another
  incarnation holding the name means this host was replaced: it refuses pushes from then on.
- **Settling after Redis came back.** Until this host filed its sessions again, and every
  host it saw alive before the outage did too (its lease says ``ready``) or stayed away for
  a whole lease, the cluster view is partial: pushes are refused with -503 rather than
  answered "ok" for connections that the view does not show yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mpim.cluster import ClusterError
from mpim.cluster.directory import Claim, Directory, Host, HostInfo

if TYPE_CHECKING:
    from mpim.config import ClusterSection

log = logging.getLogger("mpim.cluster")

SETTLE_POLL = 0.2  # seconds between two looks at the other hosts while settling


class Membership:
    def __init__(
        self,
        cfg: ClusterSection,
        directory: Directory,
        name: str,
        info: Callable[[], HostInfo] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.directory = directory
        self.name = name
        self.info = info  # this host's lease fields, read at every renewal
        self.loop = loop
        self.reconfigure(cfg)
        self.lease_until = 0.0  # loop time until which this host's lease is known to live
        self.replaced_by = ""  # another incarnation took the name: this one is out
        self.ready = False  # this host's sessions and channels are filed (its lease says so)
        self.settled = True  # the view of the whole cluster is whole (False while settling)
        self.others: set[str] = set()  # the other hosts seen alive last
        self.lapses = 0

    def reconfigure(self, cfg: ClusterSection) -> None:
        self.interval = cfg.lease_interval
        self.ttl = cfg.lease_ttl

    def lease_info(self) -> HostInfo | None:
        """The lease's fields; None: this router shard does not speak for the host (it only
        keeps the lease alive)."""
        return None if self.info is None else dataclasses.replace(self.info(), ready=int(self.ready))

    async def claim(self) -> Claim:
        info = self.lease_info()
        return await self.directory.claim_name(self.name, info, keep=info is None)

    # -- start ------------------------------------------------------------------------------------
    async def join(self) -> Claim:
        """Claim the name, waiting up to one lease for a dead predecessor's to lapse."""
        first = self.loop.time()
        deadline = first + self.ttl + 2 * self.interval
        waited = False
        while True:
            started = self.loop.time()
            try:
                claim = await self.claim()
            except ClusterError:
                if started >= deadline:
                    raise
                await asyncio.sleep(min(0.25, self.interval))  # (Redis slow at start: try again)
                continue
            if claim.taken:
                self.lease_until = started + self.ttl
                if waited:
                    log.info("host %s: the old lease lapsed after %.1fs", self.name, started - first)
                return claim
            if self.loop.time() >= deadline:
                raise ClusterError(
                    f"[server] name {self.name!r}: another live host of this cluster has that name"
                    f" (incarnation {claim.other} kept renewing its lease for"
                    f" {self.ttl + 2 * self.interval:g}s);"
                    " give every host its own name"
                )
            if not waited:
                waited = True
                log.warning(
                    "host %s: the name is held by incarnation %s; waiting up to %gs for its lease to lapse"
                    " (a host that just died)",
                    self.name,
                    claim.other,
                    self.ttl + 2 * self.interval,
                )
            await asyncio.sleep(min(0.25, self.interval))

    # -- renewal ----------------------------------------------------------------------------------
    async def renew(self, refile: Callable[[], None]) -> None:
        """One lease renewal (every ``lease_interval``); ``refile`` when the lease had lapsed."""
        if self.replaced_by:
            return
        started = self.loop.time()
        claim = await self.claim()
        if not claim.taken:
            self.replaced_by = claim.other
            log.error(
                "host %s: incarnation %s holds this host's name now (this one was counted dead);"
                " it refuses pushes from now on: restart it, or give every host its own name",
                self.name,
                claim.other,
            )
            return
        if claim.fresh and self.lease_until:
            self.lapses += 1
            log.warning(
                "host %s: its lease had lapsed (paused, or cut off from Redis, for over %gs): the other"
                " hosts counted it dead; filing its sessions again",
                self.name,
                self.ttl,
            )
            refile()
        self.lease_until = started + self.ttl

    # -- settling after Redis came back -------------------------------------------------------------
    def unsettle(self) -> None:
        """Redis failed: the view is partial until :meth:`settle` (once it answers) says otherwise."""
        self.settled = False
        self.ready = False

    async def settle(self, refile: Callable[[], Awaitable[None]]) -> None:
        """File this host again, then wait for the hosts seen before to be back (or gone)."""
        back = self.loop.time()
        await refile()
        self.ready = True
        await self.claim()
        waiting = set(self.others)
        while waiting and self.loop.time() - back < self.ttl + 2 * self.interval:
            live = {h.name: h for h in await self.directory.servers()}
            waiting = {name for name in waiting if not (name in live and live[name].info.ready)}
            if waiting:
                await asyncio.sleep(SETTLE_POLL)
        if waiting:
            log.info("hosts %s did not come back within a lease: counted dead", ", ".join(sorted(waiting)))
        self.settled = True
        log.info(
            "host %s: the cluster view is whole again (%.1fs after Redis came back)",
            self.name,
            self.loop.time() - back,
        )

    def saw(self, hosts: list[Host]) -> None:
        """The live hosts, as last read (what settling waits for after an outage)."""
        if self.settled:
            self.others = {h.name for h in hosts if h.name != self.name}

    def refusal(self) -> str:
        """Why pushes must be refused now ("" = they need not)."""
        if self.replaced_by:
            return f"this host was replaced in the cluster by incarnation {self.replaced_by}; restart it"
        if not self.settled:
            return "this host is rejoining the cluster after a Redis outage; retry in a moment"
        return ""
