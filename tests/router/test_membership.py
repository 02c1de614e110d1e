"""This host's lease and settling, against a fake directory: the decisions, not Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mpim import config
from mpim.cluster import ClusterError
from mpim.cluster.directory import Claim, Host, HostInfo
from mpim.router.membership import Membership


class FakeDirectory:
    def __init__(self) -> None:
        self.owner = "me"
        self.held_by = ""  # another incarnation's live lease
        self.lapse_after = -1  # claims left before the other one's lease lapses (-1 = never)
        self.ours = False
        self.hosts: list[Host] = []
        self.claims: list[HostInfo] = []

    async def claim_name(self, name: str, info: HostInfo | None, keep: bool = False) -> Claim:
        if info is not None:
            self.claims.append(info)
        if self.held_by:
            if self.lapse_after == 0:
                last, self.held_by = self.held_by, ""
                self.ours = True
                return Claim(True, last, True)
            self.lapse_after -= 1
            return Claim(False, self.held_by, False)
        fresh = not self.ours
        self.ours = True
        return Claim(True, self.owner if not fresh else "", fresh)

    async def servers(self) -> list[Host]:
        return self.hosts


def membership(d: FakeDirectory, **cluster: Any) -> Membership:
    cfg = config.replace(config.Config(), cluster={"lease_interval": 0.05, "lease_ttl": 0.2, **cluster})
    return Membership(cfg.cluster, d, "h", HostInfo, asyncio.get_running_loop())  # type: ignore[arg-type]


def test_start_waits_for_a_dead_predecessor_and_refuses_a_live_one() -> None:
    async def main() -> None:
        d = FakeDirectory()
        d.held_by, d.lapse_after = "dead", 2
        claim = await membership(d).join()
        assert claim == Claim(True, "dead", True) and len(d.claims) == 3
        d = FakeDirectory()
        d.held_by = "alive"
        with pytest.raises(ClusterError, match="another live host of this cluster has that name"):
            await membership(d).join()

    asyncio.run(main())


def test_a_lapsed_lease_refiles_and_a_taken_name_refuses_pushes() -> None:
    async def main() -> None:
        d = FakeDirectory()
        m = membership(d)
        await m.join()
        refiled: list[int] = []
        await m.renew(lambda: refiled.append(1))
        assert refiled == [] and m.refusal() == ""
        d.ours = False  # our lease expired while we were paused
        await m.renew(lambda: refiled.append(1))
        assert refiled == [1] and m.lapses == 1
        d.held_by = "newer"  # we were counted dead and replaced
        await m.renew(lambda: refiled.append(1))
        assert "replaced in the cluster by incarnation newer" in m.refusal()

    asyncio.run(main())


def test_after_redis_comes_back_pushes_wait_for_every_host_seen_before() -> None:
    async def main() -> None:
        d = FakeDirectory()
        m = membership(d)
        await m.join()
        m.saw([Host("h", HostInfo(), 0), Host("other", HostInfo(), 0), Host("gone", HostInfo(), 0)])
        m.unsettle()
        assert "rejoining the cluster" in m.refusal()
        filed: list[int] = []

        async def refile() -> None:
            filed.append(1)

        d.hosts = [Host("other", HostInfo(ready=0), 0)]  # back, still filing itself
        settling = asyncio.get_running_loop().create_task(m.settle(refile))
        await asyncio.sleep(0.1)
        assert filed == [1] and not m.settled and d.claims[-1].ready == 1
        d.hosts = [Host("other", HostInfo(ready=1), 0)]  # "gone" never comes back: a lease later
        await asyncio.wait_for(settling, 2)
        assert m.settled and m.refusal() == ""

    asyncio.run(main())
