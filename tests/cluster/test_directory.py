"""The session directory and host registry against a real redis-server: goim v2's layout,
expiry by Redis's own clock, the kick check-and-set under races, name claims, rebuilds and
Redis restarts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import redis

from mpim import config
from mpim.cluster import ClusterError, redis_client
from mpim.cluster.directory import Directory, Entry, Filing, Host, HostInfo, Totals
from tests.redis_support import RedisServer
from tests.support import run

T = TypeVar("T")
TTL = 60.0


@asynccontextmanager
async def directory(
    url: str, ttl: float = TTL, prefix: str = "", timeout: float = 2.0, lease: float = 0.0
) -> AsyncIterator[Directory]:
    cfg = config.replace(config.Config(), cluster={"redis": url, "timeout": timeout}).cluster
    client = redis_client(cfg)
    try:
        yield Directory(client, ttl=ttl, lease=lease or ttl, prefix=prefix, timeout=timeout)
    finally:
        await client.aclose()


def with_directory(
    url: str, body: Callable[[Directory], Awaitable[T]], alive: tuple[str, ...] = (), **kwargs: Any
) -> T:
    """Run ``body`` with a directory whose owner holds the leases of the ``alive`` hosts."""

    async def main() -> T:
        async with directory(url, **kwargs) as d:
            for name in alive:
                assert (await d.claim_name(name)).taken
            return await body(d)

    return run(main())


def sync(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


async def wait_until(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll (Redis's own expiry) until `check` holds; fail after `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, f"{what}: not within {limit} s"
        await asyncio.sleep(0.005)


def test_connect_files_goim_v2_layout_with_expiry(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        assert (await d.connect("k1", 7, "A")).previous is None
        assert (await d.connect("k2", 7, "B")).previous is None
        assert (await d.connect("guest", 0, "A")).previous is None  # no user: no mid_ entry

    with_directory(redis_url, body)
    with sync(redis_url) as r:
        assert r.get("key_k1") == "A" and r.get("key_k2") == "B" and r.get("key_guest") == "A"
        assert r.hgetall("mid_7") == {"k1": "A", "k2": "B"}
        assert r.hgetall("conns_A") == {"k1": "7", "guest": ""}
        assert sorted(r.keys("mid_*")) == ["mid_7"]
        for key in ("key_k1", "key_guest", "mid_7", "conns_A", "conns_B"):
            assert 0 < r.pttl(key) <= TTL * 1000


def test_a_key_connecting_on_another_server_names_the_one_to_kick(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        assert await d.connect("k", 7, "A") == Filing(None, None)
        assert await d.connect("k", 7, "B") == Filing("A", None)
        assert await d.connect("k", 7, "B") == Filing("B", None)  # same server again: its own table kicks
        assert await d.disconnect("k", 7, "A") is False  # the kicked one leaves B's entry alone
        assert await d.server_of_keys(["k"]) == {"k": "B"}
        assert await d.servers_of_mids([7]) == {"B": ["k"]}

    with_directory(redis_url, body, alive=("A", "B", "C"))
    with sync(redis_url) as r:
        assert r.hgetall("mid_7") == {"k": "B"}
        assert r.hgetall("conns_A") == {} and r.hgetall("conns_B") == {"k": "7"}


def test_another_user_cannot_take_a_key_another_server_holds(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        await d.connect("k", 7, "B")
        assert await d.connect("k", 8, "C") == Filing("B", 7)  # denied: nothing filed
        assert await d.connect("k", 0, "C") == Filing("B", 7)  # nor by a connection without a user
        await d.connect("guest", 0, "B")
        assert await d.connect("guest", 8, "C") == Filing("B", 0)
        assert await d.servers_of_mids([7, 8]) == {"B": ["k"]}
        assert await d.server_of_keys(["k", "guest"]) == {"k": "B", "guest": "B"}
        assert await d.disconnect("k", 7, "B") is True
        assert await d.connect("k", 8, "C") == Filing(None, None)  # free again
        assert await d.servers_of_mids([7, 8]) == {"C": ["k"]}

    with_directory(redis_url, body, alive=("A", "B", "C"))
    with sync(redis_url) as r:
        assert r.hgetall("mid_8") == {"k": "C"} and r.hgetall("conns_C") == {"k": "8"}


def test_disconnect_forgets_the_connection(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        await d.connect("k1", 7, "A")
        await d.connect("k2", 7, "A")
        assert await d.disconnect("k1", 7, "A") is True
        assert await d.disconnect("k1", 7, "A") is False
        assert await d.servers_of_mids([7]) == {"A": ["k2"]}
        assert await d.server_of_keys(["k1", "k2", "nope"]) == {"k2": "A"}

    with_directory(redis_url, body, alive=("A", "B", "C"))
    with sync(redis_url) as r:
        assert r.hgetall("conns_A") == {"k2": "7"}


def test_lookups_group_by_server_and_drop_stale_fields(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        for key, mid, server in [("a1", 1, "A"), ("a2", 1, "B"), ("b1", 2, "A"), ("c1", 3, "C")]:
            await d.connect(key, mid, server)
        with sync(redis_url) as r:
            r.delete("key_c1")  # what the expiry of a dead host's key leaves behind
        found = await d.servers_of_mids([1, 2, 3, 4, 1, 0, -5])
        assert {s: sorted(k) for s, k in found.items()} == {"A": ["a1", "b1"], "B": ["a2"]}
        with sync(redis_url) as r:
            assert r.hgetall("mid_3") == {}  # the stale field is gone
        assert await d.server_of_keys([]) == {} and await d.servers_of_mids([]) == {}

    with_directory(redis_url, body, alive=("A", "B", "C"))


def test_renew_extends_expiry_refiles_and_reports_taken_keys(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        await d.connect("k1", 7, "A")
        await d.connect("k2", 0, "A")
        await d.connect("k3", 8, "A")
        await d.connect("k3", 8, "B")  # taken by B
        with sync(redis_url) as r:
            r.pexpire("key_k1", 50)
            r.pexpire("mid_7", 50)
            r.delete("key_k2")  # lost (a Redis that came back without it)
        restored, lost = await d.renew("A", [Entry("k1", 7), Entry("k2", 0), Entry("k3", 8)])
        assert (restored, lost) == (["k2"], ["k3"])
        with sync(redis_url) as r:
            assert r.pttl("key_k1") > 50 and r.pttl("mid_7") > 50 and r.pttl("conns_A") > 50
            assert r.get("key_k2") == "A" and r.get("key_k3") == "B"
            assert r.hgetall("conns_A") == {"k1": "7", "k2": ""}
        many = [Entry(f"m{i}", i) for i in range(1200)]  # several script calls
        assert await d.renew("A", many) == ([e.key for e in many], [])
        found = await d.servers_of_mids(range(1200))
        assert len(found["A"]) == 1200 and found["B"] == ["k3"]  # m1..m1199 and k1

    with_directory(redis_url, body, alive=("A", "B", "C"))


def test_a_host_that_dies_leaves_nothing_after_the_expiry(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        assert (await d.claim_name("A", HostInfo(conns=3))).taken
        for i in range(3):
            await d.connect(f"k{i}", i + 1, "A")
        await d.put_online("A", {"live://1": 3}, ttl=0.2)
        assert [h.name for h in await d.servers()] == ["A"]
        # host A stops renewing here
        with sync(redis_url) as r:  # (but the record of who held the name last)
            await wait_until(lambda: r.keys("*") == ["hosts"], "keys expired")
        assert await d.servers() == []
        assert await d.online(["live://1"]) == {"live://1": 0}
        assert await d.servers_of_mids([1, 2, 3]) == {}

    with_directory(redis_url, body, ttl=0.2)


def test_two_hosts_racing_for_keys_one_wins_the_other_is_told(redis_url: str) -> None:
    keys = [f"k{i}" for i in range(300)]

    async def main() -> None:
        async with directory(redis_url) as a, directory(redis_url) as b:
            assert (await a.claim_name("A")).taken and (await b.claim_name("B")).taken
            calls = []
            for key in keys:
                pair = [(a, "A"), (b, "B")]
                random.shuffle(pair)
                calls += [d.connect(key, 7, server) for d, server in pair]
            results = [f.previous for f in await asyncio.gather(*calls)]
            holders = await a.server_of_keys(keys)
            for i, key in enumerate(keys):
                first, second = results[2 * i], results[2 * i + 1]
                assert sorted([first, second], key=str) == sorted(
                    [None, {"A": "B", "B": "A"}[holders[key]]], key=str
                )
            # many hosts on one key: exactly one saw it free, every other was told who held it
            many = [directory(redis_url) for _ in range(8)]
            dirs = [await m.__aenter__() for m in many]
            for i, d in enumerate(dirs):
                assert (await d.claim_name(f"H{i}")).taken
            try:
                filed = await asyncio.gather(*(d.connect("hot", 9, f"H{i}") for i, d in enumerate(dirs)))
                told = [f.previous for f in filed]
                final = (await dirs[0].server_of_keys(["hot"]))["hot"]
                assert told.count(None) == 1
                assert sorted(t for t in told if t) == sorted(f"H{i}" for i in range(8) if f"H{i}" != final)
                assert await dirs[0].servers_of_mids([9]) == {final: ["hot"]}
            finally:
                for m in many:
                    await m.__aexit__(None, None, None)

    run(main())


def test_a_second_live_host_with_the_same_name_is_refused(redis_url: str) -> None:
    async def main() -> None:
        async with directory(redis_url) as a, directory(redis_url) as b:
            info = HostInfo(
                domain="a.example", addresses=("10.0.0.1", "10.0.0.2"), tcp_port=3101, ws_port=3102
            )
            assert (await a.claim_name("host1", info)).taken
            assert not (await b.claim_name("host1", HostInfo(domain="b.example"))).taken
            assert (await a.claim_name("host1", info)).taken  # its owner renews it
            (host,) = await b.servers()
            assert host.name == "host1" and host.info == info and host.updated > 1e9
            with sync(redis_url) as r:
                r.pexpire("srv_host1", 1)  # A stopped renewing: its claim lapses
                await wait_until(lambda: not r.exists("srv_host1"), "claim expired")
            assert (await b.claim_name("host1", HostInfo(domain="b.example"))).taken
            assert not (await a.claim_name("host1", info)).taken
            assert not await a.release_name("host1")
            assert [h.info.domain for h in await a.servers()] == ["b.example"]
            assert (await a.claim_name("host2", info)).taken
            with sync(redis_url) as r:
                r.delete("srv_host2")  # as its expiry does; the set still names it
                assert sorted(r.smembers("servers")) == ["host1", "host2"]
            assert [h.name for h in await a.servers()] == ["host1"]
            with sync(redis_url) as r:
                assert r.smembers("servers") == {"host1"}  # pruned
            assert await b.release_name("host1")
            assert await a.servers() == []

    run(main())


def test_online_counts_are_summed_over_live_hosts(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        assert (await d.claim_name("A", HostInfo(conns=4, ips=2))).taken
        assert (await d.claim_name("B", HostInfo(conns=7, ips=3))).taken
        await d.put_online("A", {"live://1": 3, "live://2": 1, "empty": 0}, ttl=60)
        await d.put_online("B", {"live://1": 2, "chat://x": 5}, ttl=60)
        await d.put_online("Z", {"live://1": 100}, ttl=60)  # no live claim: not counted
        assert await d.online(["live://1", "live://2", "chat://x", "none"]) == {
            "live://1": 5,
            "live://2": 1,
            "chat://x": 5,
            "none": 0,
        }
        assert await d.top_rooms("live://", 10) == [("live://1", 5), ("live://2", 1)]
        assert await d.top_rooms("", 2) == [("chat://x", 5), ("live://1", 5)]
        assert await d.top_rooms("live://", 0) == []
        assert await d.totals() == Totals(ip_count=5, conn_count=11)
        await d.put_online("A", {"live://2": 4}, ttl=60)  # replaced whole
        assert await d.online(["live://1", "live://2"]) == {"live://1": 2, "live://2": 4}
        await d.put_online("A", {}, ttl=60)
        assert await d.online(["live://2"]) == {"live://2": 0}
        rooms = [f"r{i}" for i in range(1500)]  # several calls
        await d.put_online("B", dict.fromkeys(rooms, 1), ttl=60)
        assert set((await d.online(rooms)).values()) == {1}
        with sync(redis_url) as r:
            assert r.hget("ol_B", "r7") == "1" and 0 < r.pttl("ol_B") <= 60_000

    with_directory(redis_url, body)


def test_rebuild_replaces_exactly_the_servers_entries(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        for i in range(1, 6):
            await d.connect(f"k{i}", i, "A")
        await d.connect("b1", 1, "B")
        await d.connect("k7", 7, "B")  # B holds k7; A still believes it has it
        lost = await d.rebuild("A", [Entry("k1", 1), Entry("k2", 2), Entry("k6", 6), Entry("k7", 7)])
        assert lost == ["k7"]
        found = await d.servers_of_mids(range(1, 8))
        assert {s: sorted(k) for s, k in found.items()} == {"A": ["k1", "k2", "k6"], "B": ["b1", "k7"]}
        with sync(redis_url) as r:
            assert sorted(r.hkeys("conns_A")) == ["k1", "k2", "k6"]
            assert not r.exists("key_k3", "key_k4", "key_k5", "rebuild_A")
            assert r.hgetall("mid_3") == {}
        big = [Entry(f"x{i}", i) for i in range(1100)]
        await d.rebuild("A", big)
        await d.rebuild("A", big[:10])
        with sync(redis_url) as r:
            assert r.hlen("conns_A") == 10 and len(r.keys("key_x*")) == 10

    with_directory(redis_url, body, alive=("A", "B", "C"))


def test_drop_removes_a_server_and_nothing_else(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        await d.connect("a", 1, "A")
        await d.connect("b", 1, "B")
        await d.put_online("A", {"live://1": 1}, ttl=60)
        assert await d.drop("A") == 1
        assert await d.servers_of_mids([1]) == {"B": ["b"]}

    with_directory(redis_url, body, alive=("A", "B", "C"))
    with sync(redis_url) as r:
        assert not r.exists("key_a", "ol_A", "conns_A")


def test_key_prefixes_keep_clusters_apart(redis_url: str) -> None:
    async def main() -> None:
        async with directory(redis_url, prefix="c1:") as one, directory(redis_url, prefix="c2:") as two:
            assert (await one.claim_name("A")).taken
            await one.connect("k", 7, "A")
            assert (await two.connect("k", 7, "B")).previous is None
            assert await one.servers_of_mids([7]) == {"A": ["k"]}
            assert (await one.claim_name("A")).taken and (await two.claim_name("A")).taken

    run(main())
    with sync(redis_url) as r:
        assert all(k.startswith(("c1:", "c2:")) for k in r.keys("*"))
        assert r.get("c1:key_k") == "A" and r.get("c2:key_k") == "B"


def test_over_a_unix_socket(redis_unix: RedisServer) -> None:
    async def body(d: Directory) -> None:
        assert (await d.connect("k", 7, "A")).previous is None
        assert await d.servers_of_mids([7]) == {"A": ["k"]}

    with_directory(redis_unix.url, body, alive=("A",))


def test_redis_restart_is_a_cluster_error_then_rebuild_works(redis_private: RedisServer) -> None:
    entries = [Entry(f"k{i}", i % 3 + 1) for i in range(20)]

    async def main() -> None:
        async with directory(redis_private.url, timeout=0.3) as d:
            assert (await d.claim_name("A")).taken
            for key, mid in entries:
                await d.connect(key, mid, "A")
            await asyncio.to_thread(redis_private.kill)
            calls: list[Awaitable[Any]] = [
                d.connect("x", 1, "A"),
                d.disconnect("k1", 2, "A"),
                d.renew("A", entries),
                d.servers_of_mids([1]),
                d.server_of_keys(["k1"]),
                d.put_online("A", {"r": 1}, 1.0),
                d.online(["r"]),
                d.top_rooms("", 5),
                d.totals(),
                d.servers(),
                d.claim_name("A"),
                d.rebuild("A", entries),
            ]
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
            assert all(isinstance(r, ClusterError) for r in results), results
            assert str(results[0]).startswith("directory: connect failed: Redis redis://127.0.0.1:")
            await asyncio.to_thread(redis_private.restart, keep_data=False)
            assert await d.servers_of_mids([1, 2, 3]) == {}  # Redis came back empty
            assert (await d.claim_name("A")).taken
            assert await d.rebuild("A", entries) == []
            found = await d.servers_of_mids([1, 2, 3])
            assert sorted(found["A"]) == sorted(e.key for e in entries)
            assert [h.name for h in await d.servers()] == ["A"]

    run(main(), timeout=60)


def test_ttl_must_be_positive(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    with pytest.raises(ValueError, match="ttl"):
        Directory(client, ttl=0)


def test_host_info_round_trips_and_tolerates_odd_fields() -> None:
    info = HostInfo(
        domain="d", addresses=("a", "b"), tcp_port=1, ws_port=2, wss_port=3, weight=4, conns=5, ips=6
    )
    fields = info.fields()
    raw = dict(zip(fields[::2], fields[1::2], strict=True))
    assert HostInfo.parse(raw) == info
    assert HostInfo.parse({"conns": "many", "addresses": "[", "future": "x"}) == HostInfo()
    assert Host("n", info, 1.0).name == "n"


def test_calls_of_one_loop_turn_are_one_pipeline_in_call_order(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        await d.servers()  # scripts loaded
        before = d.pipeline.batches
        calls: list[Awaitable[Any]] = []
        for i in range(200):
            calls += [d.connect(f"k{i}", i + 1, "A"), d.disconnect(f"k{i}", i + 1, "A")]
        calls.append(d.connect("k0", 1, "B"))
        results = await asyncio.gather(*calls)
        assert d.pipeline.batches - before == 1
        assert results[:4] == [Filing(None, None), True, Filing(None, None), True]
        assert results[-1] == Filing(None, None)
        assert await d.servers_of_mids(range(1, 201)) == {"B": ["k0"]}

    with_directory(redis_url, body, alive=("A", "B", "C"))


def test_an_error_reply_fails_only_its_caller(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        with sync(redis_url) as r:
            r.hset("key_bad", "x", "y")  # not a string: the script's GET fails (WRONGTYPE)
        results = await asyncio.gather(
            d.connect("good1", 1, "A"),
            d.connect("bad", 2, "A"),
            d.connect("good2", 3, "A"),
            return_exceptions=True,
        )
        assert results[0] == results[2] == Filing(None, None)
        assert isinstance(results[1], ClusterError) and "WRONGTYPE" in str(results[1])
        assert str(results[1]).startswith("directory: connect failed: ")

    with_directory(redis_url, body)


def test_scripts_flushed_behind_its_back_are_loaded_again(redis_url: str) -> None:
    async def body(d: Directory) -> None:
        await d.connect("k", 1, "A")
        with sync(redis_url) as r:
            r.script_flush()
        before = d.pipeline.batches
        assert (await d.connect("k2", 1, "A")).previous is None  # NOSCRIPT: loaded and sent again
        assert d.pipeline.batches == before + 1
        assert sorted((await d.servers_of_mids([1]))["A"]) == ["k", "k2"]

    with_directory(redis_url, body, alive=("A", "B", "C"))


# -- leases: a host is alive while its lease is ------------------------------------------------------


def test_a_dead_hosts_entries_are_skipped_at_once_and_its_keys_are_free(redis_url: str) -> None:
    """B's lease lapses (kill -9): lookups stop naming it, its counts drop out, another user may
    take a key it held, and A takes back a key B had taken from it; B's entries stay for B's
    next incarnation (or their own, longer expiry)."""

    async def main() -> None:
        async with directory(redis_url, lease=60) as a, directory(redis_url, lease=0.3) as b:
            assert (await a.claim_name("A", HostInfo(conns=1))).taken
            assert (await b.claim_name("B", HostInfo(conns=5))).taken
            await a.connect("a1", 1, "A")
            await b.connect("b1", 1, "B")
            await b.connect("b2", 2, "B")
            await b.connect("shared", 3, "B")
            await a.put_online("A", {"live://1": 1}, ttl=60)
            await b.put_online("B", {"live://1": 5}, ttl=60)
            assert await a.servers_of_mids([1, 2]) == {"A": ["a1"], "B": ["b1", "b2"]}
            assert await a.online(["live://1"]) == {"live://1": 6}
            assert await a.online(["live://1"], exclude="A") == {"live://1": 5}
            assert await a.connect("b2", 9, "A") == Filing("B", 2)  # B alive: another user is denied
            with sync(redis_url) as r:
                await wait_until(lambda: not r.exists("srv_B"), "B's lease lapsed")
                assert r.get("key_b1") == "B"  # the entry itself lives on
            assert await a.servers_of_mids([1, 2]) == {"A": ["a1"]}
            assert await a.server_of_keys(["a1", "b1", "b2"]) == {"a1": "A"}
            assert await a.online(["live://1"]) == {"live://1": 1}
            assert await a.totals() == Totals(ip_count=0, conn_count=1)
            assert await a.connect("b2", 9, "A") == Filing("B", None)  # a dead host's key is free
            restored, lost = await a.renew("A", [Entry("shared", 3)])  # held by dead B: ours again
            assert (restored, lost) == (["shared"], [])
            assert await a.server_of_keys(["shared", "b2"]) == {"shared": "A", "b2": "A"}

    run(main())


def test_a_claim_says_whose_name_it_took_and_whether_the_lease_had_lapsed(redis_url: str) -> None:
    async def main() -> None:
        async with directory(redis_url, lease=0.3) as first, directory(redis_url, lease=60) as second:
            claim = await first.claim_name("H")
            assert claim == (True, "", True)  # a first claim: nobody before
            assert await first.claim_name("H") == (True, first.owner, False)  # a renewal
            refused = await second.claim_name("H")
            assert refused == (False, first.owner, False)  # alive: refused, naming the owner
            with sync(redis_url) as r:
                await wait_until(lambda: not r.exists("srv_H"), "H's lease lapsed")
            taken = await second.claim_name("H")
            assert taken == (True, first.owner, True)  # took over from a dead incarnation
            with sync(redis_url) as r:
                r.delete("srv_H")  # (its own lease lapsed: paused, or cut off)
            assert await second.claim_name("H") == (True, second.owner, True)

    run(main())


def test_a_removal_queued_while_a_rebuild_runs_is_not_undone(redis_url: str) -> None:
    """The two-host soak's stale entry (seed 31): a connection closed while the host's rebuild
    waited on Redis (0.29 s of latency) was filed again by the rebuild's earlier snapshot and
    counted as delivered by the other host until its expiry. The entries are read when the
    renewal is queued, so a removal queued before stays done."""

    async def body(d: Directory) -> None:
        held = {f"k{i}": i for i in range(1, 4)}
        for key, mid in held.items():
            await d.connect(key, mid, "A")

        def now() -> list[Entry]:
            return [Entry(k, m) for k, m in held.items()]

        rebuild = asyncio.ensure_future(d.rebuild("A", now))
        await asyncio.sleep(0)  # the rebuild sets the old index aside and waits for Redis
        del held["k2"]  # ...while the connection closes: the host removes it
        removal = asyncio.ensure_future(d.disconnect("k2", 2, "A"))
        await asyncio.gather(rebuild, removal)
        found = await d.servers_of_mids([1, 2, 3])
        assert sorted(found["A"]) == ["k1", "k3"]
        with sync(redis_url) as r:
            assert not r.exists("key_k2") and sorted(r.hkeys("conns_A")) == ["k1", "k3"]

    with_directory(redis_url, body, alive=("A",))


def test_a_removal_queued_while_a_long_renewal_runs_is_not_undone(redis_url: str) -> None:
    """A renewal of more than one script call queues every call at once: a removal queued
    after it cannot land between two of its calls and be filed again by the later one."""

    async def body(d: Directory) -> None:
        held = {f"k{i}": i for i in range(1, 1201)}
        await d.renew("A", [Entry(k, m) for k, m in held.items()])

        def now() -> list[Entry]:
            return [Entry(k, m) for k, m in held.items()]

        renewal = asyncio.ensure_future(d.renew("A", now))
        await asyncio.sleep(0)
        del held["k1100"]  # in the renewal's last call
        await asyncio.gather(renewal, d.disconnect("k1100", 1100, "A"))
        assert await d.servers_of_mids([1100]) == {}
        with sync(redis_url) as r:
            assert not r.exists("key_k1100") and r.hlen("conns_A") == 1199

    with_directory(redis_url, body, alive=("A",))


def test_the_router_shards_of_a_host_keep_an_index_each_and_its_keys_stay_protected(redis_url: str) -> None:
    """A host of two router shards: each files into ``conns_<host>.<shard>``; another host's
    user is denied a key either shard holds (the lease says ``shards``); one shard's drop, or
    rebuild, leaves the other's entries and the host's counts alone."""

    async def body(d: Directory) -> None:
        client = d.client
        one = Directory(client, ttl=TTL, lease=TTL)
        one.owner = d.owner  # (the shards of a host share its incarnation)
        d.part, one.part = ".0", ".1"
        assert (await d.claim_name("H", HostInfo(shards=2))).taken
        assert (await one.claim_name("H", keep=True)).taken  # (keeps shard 0's fields)
        assert {h.name: h.info.shards for h in await d.servers()} == {"H": 2, "G": 1}
        await d.connect("k0", 10, "H")
        await one.connect("k1", 11, "H")
        await d.put_online("H", {"live://1": 2}, ttl=60)
        assert await d.connect("k1", 12, "G") == Filing("H", 11)  # denied: shard 1 holds it
        assert await one.connect("k0", 0, "G") == Filing("H", 10)
        assert await d.servers_of_mids([10, 11]) == {"H": ["k0", "k1"]}
        assert await one.rebuild("H", [Entry("k1", 11), Entry("k2", 12)]) == []
        assert await one.drop("H", counts=False) == 2
        assert await d.servers_of_mids([10, 11, 12]) == {"H": ["k0"]}
        assert await d.online(["live://1"]) == {"live://1": 2}
        assert await d.connect("k1", 12, "G") == Filing(None, None)  # free again

    with_directory(redis_url, body, alive=("G",))
    with sync(redis_url) as r:
        assert r.hgetall("conns_H.0") == {"k0": "10"} and not r.exists("conns_H.1", "conns_H")


def test_a_rebuild_after_one_that_never_swept_drops_the_stale_entries_of_both(redis_url: str) -> None:
    """A rebuild sets the index aside, files the live entries, then sweeps the rest. When an
    aside index is still there (a rebuild that runs, or whose router died before its sweep), the
    next one adds to it instead of replacing it: nothing stale escapes the sweep (the two-host
    soak, seed 31: a connection closed while its host was cut off from Redis stayed filed)."""

    async def body(d: Directory) -> None:
        await d.connect("gone", 7, "A")
        await d.connect("live", 8, "A")
        index, aside = d.conns_key("A"), d.aside_key("A")
        await d.pipeline.script("rebuild", d._begin, [index, aside], [])  # (its sweep never came)
        await d.connect("gone-too", 9, "A")
        assert await d.rebuild("A", [Entry("live", 8)]) == []
        assert await d.servers_of_mids([7, 8, 9]) == {"A": ["live"]}
        assert await d.server_of_keys(["gone", "gone-too", "live"]) == {"live": "A"}

    with_directory(redis_url, body, alive=("A",))
    with sync(redis_url) as r:
        assert r.hgetall("conns_A") == {"live": "8"} and not r.exists("rebuild_A", "mid_7", "mid_9")
