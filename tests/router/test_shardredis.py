"""The fabric of router shards on a cluster of hosts (:class:`ShardRedisFabric`): two shards in one
loop (the pair of test_shards.py), the other hosts faked. Each push goes to the other shards and
the other hosts at once and its answer adds them up; a Redis failure says what this host did; a
room's first member on shard 1 makes shard 0 listen on its channel before the join is confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mpim.cluster.directory import Host, HostInfo, Totals
from mpim.records import PushMids, ShardRooms
from mpim.router.errors import Refused
from mpim.router.shardredis import ShardRedisFabric
from tests.router.test_shards import OWN, A, B, Pair


class OtherHosts:
    """The Redis fabric's part, faked: what it was asked to publish, and what it answers."""

    def __init__(self) -> None:
        self.name = "h"
        self.stats: dict[str, int] = {}
        self.published: list[tuple[str, Any]] = []
        self.took = 0  # connections the other hosts have
        self.fail: Exception | None = None

    async def publish_mids(self, op: int, mids: list[int], seqs: list[int], body: bytes) -> int:
        self.published.append(("mids", (mids, seqs)))
        return self._answer()

    async def publish_keys(self, op: int, keys: list[str], body: bytes) -> int:
        self.published.append(("keys", keys))
        return self._answer()

    def _answer(self) -> int:
        if self.fail is not None:
            raise self.fail
        return self.took

    async def with_remote(self, local: int, remote: Any) -> int:
        try:
            return local + int(await remote)
        except OSError as exc:
            raise Refused(-503, f"delivered on this host only ({local} connections): Redis: {exc}") from None

    async def online_elsewhere(self, mids: list[int]) -> set[int]:
        return {m for m in mids if m == OWN[1][2]}


class CrossHost:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.opened: list[str] = []

    def room_opened(self, room: str) -> asyncio.Future[Any]:
        self.opened.append(room)
        done: asyncio.Future[Any] = self.loop.create_future()
        done.set_result(None)
        return done


class Directory:
    async def online(self, rooms: list[str], exclude: str = "") -> dict[str, int]:
        return dict.fromkeys(rooms, 5)

    async def servers(self) -> list[Host]:
        return [Host("g", HostInfo(conns=7, ips=3), 0.0), Host("h", HostInfo(), 0.0)]


class Cluster:
    """The host's Redis side, faked (every shard has its own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.crosshost = CrossHost(loop)
        self.directory = Directory()
        self.online: dict[str, int] = {"live://1": 5}
        self.up = True
        self.filed: list[tuple[str, int]] = []
        self.host_numbers: Any = None

    def file(self, key: str, mid: int) -> asyncio.Future[int | None]:
        self.filed.append((key, mid))
        done: asyncio.Future[int | None] = self.loop.create_future()
        done.set_result(None)
        return done

    def unfile(self, key: str, mid: int) -> None:
        self.filed.remove((key, mid))

    def refusal(self) -> str:
        return ""

    def rebuild_soon(self) -> None:
        return None

    def info(self) -> HostInfo:
        return HostInfo(shards=2)


class Rig(Pair):
    def __init__(self) -> None:
        super().__init__()
        self.hosts = [OtherHosts(), OtherHosts()]
        self.clusters = [Cluster(self.loop), Cluster(self.loop)]
        self.fabrics_r = {
            k: ShardRedisFabric(self.fabrics[k], self.hosts[k], self.clusters[k])  # type: ignore[arg-type]
            for k in (0, 1)
        }
        for k, h in enumerate(self.h):
            h.router.fabric = self.fabrics_r[k]
            self.peers[k].fabrics = self.fabrics_r  # type: ignore[assignment]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_a_push_by_user_is_stored_by_each_owner_and_published_to_the_other_hosts_with_every_seq(
    rig: Rig,
) -> None:
    w0, w1 = rig.worker("w1")
    rig.connect(0, w0, "ka", A)
    rig.connect(1, w1, "kb", B)
    w0.take(), w1.take()
    rig.hosts[0].took = 3
    connections, seqs = rig.run(rig.h[0].router.push.mids(1000, [A, B], b"x"))
    assert (connections, seqs) == (2 + 3, {A: 1, B: 1})
    assert rig.hosts[0].published == [("mids", ([A, B], [1, 1]))] and rig.hosts[1].published == []
    assert w0.take() == [PushMids(1000, ["ka"], [1], b"x")] and w1.take() == [
        PushMids(1000, ["kb"], [1], b"x")
    ]


def test_a_push_by_key_adds_the_other_shards_and_the_other_hosts(rig: Rig) -> None:
    _, w1 = rig.worker("w1")
    rig.connect(1, w1, "kb", B)
    rig.hosts[0].took = 2
    assert rig.run(rig.h[0].router.push.keys(1000, ["kb", "far"], b"k")) == 1 + 2
    assert rig.hosts[0].published == [("keys", ["kb", "far"])]


def test_redis_failing_answers_503_with_what_this_host_delivered(rig: Rig) -> None:
    _, w1 = rig.worker("w1")
    rig.connect(1, w1, "kb", B)
    rig.hosts[0].fail = OSError("connection reset")
    with pytest.raises(Refused) as info:
        rig.run(rig.h[0].router.push.keys(1000, ["kb"], b"k"))
    assert info.value.code == -503 and "this host only (1 connections)" in info.value.message
    with pytest.raises(Refused) as info:
        rig.run(rig.h[0].router.push.mids(1000, [B], b"m"))
    assert info.value.code == -503 and "this host only (1 connections)" in info.value.message
    assert rig.run(rig.inbox.top(B)).seq == 1  # (stored: the device reads it back when it resumes)


def test_a_connect_claims_its_key_on_the_host_then_files_it_in_redis(rig: Rig) -> None:
    w0, w1 = rig.worker("w1")
    rig.connect(0, w0, "shared", A)
    rig.connect(1, w1, "shared", B)  # (another user of this host holds it: denied, not filed)
    assert rig.clusters[0].filed == [("shared", A)] and rig.clusters[1].filed == []


def test_a_rooms_first_member_on_shard_1_makes_shard_0_listen_on_it(rig: Rig) -> None:
    w0, w1 = rig.worker("w1")
    rig.connect(1, w1, "kb", B, "live://9")
    assert rig.clusters[0].crosshost.opened == ["live://9"] and rig.clusters[1].crosshost.opened == []
    assert any(isinstance(c, ShardRooms) for _, c in rig.peers[1].calls)
    rig.connect(0, w0, "ka", A, "live://8")
    assert rig.clusters[0].crosshost.opened == ["live://9", "live://8"]


def test_numbers_add_the_other_hosts_and_only_shard_0_tells_the_workers_theirs(rig: Rig) -> None:
    w0, w1 = rig.worker("w1")
    rig.connect(0, w0, "ka", A, "live://1")
    rig.connect(1, w1, "kb", B, "live://1")
    fabric = rig.fabrics_r[1]
    assert rig.run(fabric.online_rooms(["live://1"])) == {"live://1": 2 + 5}
    assert rig.fabrics_r[0].room_online("live://1") == 1 + 5 and fabric.room_online("live://1") == 1
    totals = rig.run(fabric.totals())
    assert totals == Totals(3 + 2, 7 + 2)  # (an IP is counted by each shard that has it, as per host)
    # (another shard's user with a session here, and a user on another host)
    assert rig.run(fabric.online_elsewhere([OWN[1][2], A, OWN[0][1]])) == {OWN[1][2], A}
