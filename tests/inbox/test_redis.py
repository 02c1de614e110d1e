"""What only the Redis store promises: shared by hosts, epochs that notice lost data, bounded
failures, one script call per loop turn, keys that expire without rewinding seqs."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
from redis.asyncio import Redis

from mpim import config
from mpim.cluster import redis_client
from mpim.inbox import InboxError, InboxLimits, Position, redis_write
from mpim.inbox.redis import RedisInbox, open_redis_inbox
from mpim.inbox.redis_write import CHUNK, user_bit
from tests.redis_support import RedisServer
from tests.support import free_port, run

T = TypeVar("T")
LIMITS = InboxLimits(max_count=100, max_age=3600.0)


async def opened(url: str, limits: InboxLimits = LIMITS, timeout: float = 2.0, **kwargs: Any) -> RedisInbox:
    """The store on a client made as the server makes it (mpim.cluster.redis_client)."""
    cfg = config.replace(config.Config(), cluster={"redis": url, "timeout": timeout}).cluster
    return await RedisInbox.open(redis_client(cfg), limits, timeout=timeout, owns_client=True, **kwargs)


def with_store(url: str, body: Callable[[RedisInbox], Awaitable[T]], **kwargs: Any) -> T:
    async def main() -> T:
        store = await opened(url, **kwargs)
        try:
            return await body(store)
        finally:
            await store.close()

    return run(main())


def evalsha_calls(url: str) -> int:
    with redis.Redis.from_url(url) as conn:
        stats: dict[str, Any] = conn.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_reopening_with_a_new_client_keeps_epochs_seqs_and_cursors(redis_url: str) -> None:
    async def first(store: RedisInbox) -> tuple[Position, Position]:
        await store.append([(1, 1000, b"a", 0), (1, 1000, b"b", 9), (2, 1000, b"c", 0)])
        await store.ack(1, "phone", 1)
        return await store.top(1), await store.top(3)

    async def second(store: RedisInbox) -> None:
        assert await store.top(1) == top1
        assert await store.top(3) == top3  # the never-written user's epoch too
        page = await store.read(1, 0, 10)
        assert [(m.seq, m.body, m.sender) for m in page.messages] == [(1, b"a", 0), (2, b"b", 9)]
        assert await store.cursors(1) == {"phone": 1}
        assert await store.append([(1, 1000, b"d", 0)]) == [Position(top1.epoch, 3)]

    top1, top3 = with_store(redis_url, first)
    with_store(redis_url, second)


def test_two_hosts_share_the_streams(redis_url: str) -> None:
    async def check() -> None:
        a, b = await opened(redis_url), await opened(redis_url)
        try:
            results = await asyncio.gather(
                a.append([(7, 1000, b"from a", 0)]), b.append([(7, 1000, b"from b", 0)])
            )
            assert sorted(r[0].seq for r in results) == [1, 2]
            assert [m.body for m in (await a.read(7, 0, 10)).messages] == [
                m.body for m in (await b.read(7, 0, 10)).messages
            ]
            assert await b.ack(7, "laptop", 2) == 2
            assert await a.cursors(7) == {"laptop": 2}
        finally:
            await a.close()
            await b.close()

    run(check())


def test_key_prefixes_keep_clusters_apart(redis_url: str) -> None:
    async def check() -> None:
        a, b = await opened(redis_url, prefix="one:"), await opened(redis_url, prefix="two:")
        try:
            await a.append([(1, 1000, b"x", 0)] * 3)
            assert (await b.append([(1, 1000, b"y", 0)]))[0].seq == 1
            assert a.epoch != b.epoch
        finally:
            await a.close()
            await b.close()
        with redis.Redis.from_url(redis_url) as conn:
            keys = sorted(k.decode() for k in conn.keys("*"))
        assert all(k.startswith(("one:inbox:", "two:inbox:")) for k in keys), keys
        assert "one:inbox:{1}:s" in keys and "one:inbox:{1}" in keys

    run(check())


def test_stream_ids_are_the_seqs(redis_url: str) -> None:
    async def body(store: RedisInbox) -> None:
        await store.append([(5, 1000, b"%d" % i, 0) for i in range(4)])

    with_store(redis_url, body, limits=InboxLimits(max_count=3, max_age=3600.0))
    with redis.Redis.from_url(redis_url) as conn:
        entries = conn.xrange("inbox:{5}:s")
        assert [e[0] for e in entries] == [b"2-0", b"3-0", b"4-0"]  # MAXLEN 3 kept the newest
        assert entries[0][1] == {b"o": b"1000", b"b": b"1", b"t": entries[0][1][b"t"], b"f": b"0"}
        assert conn.hgetall("inbox:{5}")[b"s"] == b"4"
        assert 0 < conn.pttl("inbox:{5}:s") <= 3600_000


def test_restart_without_data_is_a_new_epoch(redis_private: RedisServer) -> None:
    async def check() -> None:
        store = await opened(redis_private.url)
        try:
            (before,) = await store.append([(1, 1000, b"x", 0)])
            never = await store.top(2)
            await asyncio.to_thread(redis_private.restart, keep_data=False)
            top = await store.top(1)
            assert top.epoch != before.epoch and top.seq == 0
            assert (await store.top(2)).epoch != never.epoch  # nobody's old position is vouched for
            page = await store.read(1, before.seq, 10)
            assert page.top.epoch != before.epoch  # the client's resume says "not recovered"
            assert await store.append([(1, 1000, b"y", 0)]) == [Position(top.epoch, 1)]
            assert store.epoch == top.epoch
        finally:
            await store.close()

    run(check())


def test_flushall_is_a_new_epoch_and_is_logged(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body(store: RedisInbox) -> None:
        (before,) = await store.append([(1, 1000, b"x", 0)])
        with redis.Redis.from_url(redis_url) as conn:
            conn.flushall()
        (after,) = await store.append([(1, 1000, b"y", 0)])
        assert after.epoch != before.epoch and after.seq == 1

    with caplog.at_level(logging.WARNING, logger="mpim.inbox.redis"):
        with_store(redis_url, body)
    assert any("store epoch changed" in r.getMessage() for r in caplog.records)


def test_restart_keeping_data_keeps_epochs_and_seqs(redis_persistent: RedisServer) -> None:
    async def check() -> None:
        store = await opened(redis_persistent.url)
        try:
            (before,) = await store.append([(1, 1000, b"x", 0)])
            await store.ack(1, "phone", 1)
            await asyncio.to_thread(
                redis_persistent.restart, keep_data=True
            )  # kill -9; AOF with appendfsync always
            assert await store.top(1) == before
            assert await store.append([(1, 1000, b"y", 0)]) == [Position(before.epoch, 2)]
            assert await store.cursors(1) == {"phone": 1}
        finally:
            await store.close()

    run(check())


def test_redis_gone_is_an_inbox_error_not_a_hang(redis_private: RedisServer) -> None:
    async def check() -> None:
        store = await opened(redis_private.url, timeout=0.3)
        try:
            await store.append([(1, 1000, b"x", 0)])
            await asyncio.to_thread(redis_private.kill)
            calls = [
                store.append([(1, 1000, b"y", 0)]),
                store.append([(2, 1000, b"z", 0)]),
                store.ack(1, "d", 1),
                store.read(1, 0, 10),
                store.top(1),
                store.cursors(1),
                store.trim(2e9),
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, InboxError) for r in results), results
            assert "failed: Redis redis://127.0.0.1:" in str(results[0])
            await asyncio.to_thread(redis_private.restart, keep_data=False)
            (position,) = await store.append([(1, 1000, b"back", 0)])
            assert position.seq == 1
        finally:
            await store.close()

    run(check(), timeout=30)


def test_a_silent_redis_is_an_inbox_error_within_the_bound(redis_url: str) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        async def check() -> None:
            client = Redis.from_url(url)  # no timeouts of its own: the store's bound still holds
            with pytest.raises(InboxError, match="no answer within"):
                await RedisInbox.open(client, LIMITS, timeout=0.2, owns_client=True)
            store = RedisInbox(client, LIMITS, timeout=0.2, owns_client=True)
            with pytest.raises(InboxError, match="no answer within"):
                await store.append([(1, 1000, b"x", 0)])
            await store.close()

        run(check(), timeout=30)


def test_open_fails_clearly_when_nothing_listens() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(InboxError, match=r"inbox: open failed: Redis redis://127.0.0.1:\d+: "):
        run(opened(url, timeout=0.3))


def test_one_script_call_per_loop_turn(redis_url: str) -> None:
    async def body(store: RedisInbox) -> None:
        await store.top(1)  # scripts loaded
        before = evalsha_calls(redis_url)
        calls = [store.append([(mid % 7, 1000, b"m", 0)]) for mid in range(100)]
        results = await asyncio.gather(*calls, store.ack(3, "d", 5))
        assert evalsha_calls(redis_url) - before == 1
        assert results[-1] == 5  # mid 3 got 14 messages before the ack, in call order
        big = await store.append([(9, 1000, b"%d" % i, 0) for i in range(CHUNK)])  # several calls
        assert [p.seq for p in big] == list(range(1, CHUNK + 1))

    with_store(redis_url, body, limits=InboxLimits(max_count=10_000))


def test_a_user_whose_keys_expired_restarts_in_a_fresh_epoch(redis_url: str) -> None:
    async def body(store: RedisInbox) -> None:
        (before,) = await store.append([(1, 1000, b"x", 0)])
        await store.ack(1, "phone", 1)
        never = await store.top(2)
        with redis.Redis.from_url(redis_url) as conn:
            for key in ("inbox:{1}", "inbox:{1}:s"):
                assert 0 < conn.pttl(key) <= 60_000
                conn.pexpire(key, 1)  # what max_age of silence does
            deadline = asyncio.get_running_loop().time() + 10
            while conn.exists("inbox:{1}", "inbox:{1}:s"):
                assert asyncio.get_running_loop().time() < deadline, "keys did not expire"
                await asyncio.sleep(0.005)
        top = await store.top(1)
        assert top.epoch not in (before.epoch, store.epoch) and top.seq == 0
        assert await store.top(1) == top  # stable until the next append
        assert await store.cursors(1) == {}
        assert await store.append([(1, 1000, b"y", 0)]) == [Position(top.epoch, 1)]
        assert await store.top(2) == never  # a user never written keeps the store epoch

    with_store(redis_url, body, limits=InboxLimits(max_count=10, max_age=60.0))


def test_a_stream_ahead_of_its_counter_starts_a_new_epoch(redis_url: str) -> None:
    async def body(store: RedisInbox) -> None:
        positions = await store.append([(1, 1000, b"%d" % i, 0) for i in range(5)])
        with redis.Redis.from_url(redis_url) as conn:
            conn.hset("inbox:{1}", "s", 2)  # a counter behind its stream: seqs 3..5 would repeat
        (after,) = await store.append([(1, 1000, b"new", 0)])
        assert after.epoch != positions[0].epoch and after.seq == 1
        page = await store.read(1, 0, 10)
        assert [(m.seq, m.body) for m in page.messages] == [(1, b"new")] and page.complete

    with_store(redis_url, body)


def test_the_existed_before_bitmap_spreads_mids() -> None:
    bits = {user_bit(mid) for mid in [*range(-50, 50), 2**63 - 1, -(2**63), 10**12]}
    assert len(bits) == 103 and all(0 <= b < 2**24 for b in bits)


def test_eviction_policy_warning(redis_private: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    with redis_private.client() as conn:
        conn.config_set("maxmemory", "100mb")
        conn.config_set("maxmemory-policy", "allkeys-lru")

    async def body(store: RedisInbox) -> None:
        pass

    with caplog.at_level(logging.WARNING, logger="mpim.inbox.redis"):
        with_store(redis_private.url, body)
    assert any("maxmemory-policy is allkeys-lru" in r.getMessage() for r in caplog.records)


def test_open_from_the_config_sections(redis_url: str) -> None:
    cfg = config.replace(
        config.Config(),
        cluster={"redis": redis_url, "key_prefix": "c1:", "timeout": 0.5},
        inbox={"max_count": 2, "max_age": 60},
    )

    async def check() -> None:
        store = await open_redis_inbox(cfg.cluster, cfg.inbox)
        try:
            await store.append([(1, 1000, b"%d" % i, 0) for i in range(3)])
            assert [m.seq for m in (await store.read(1, 0, 10)).messages] == [2, 3]
        finally:
            await store.close()
        with redis.Redis.from_url(redis_url) as conn:
            assert 0 < conn.pttl("c1:inbox:{1}:s") <= 60_000

    run(check())


def test_a_lowered_max_count_holds_for_reads_of_another_store_on_the_same_redis(redis_url: str) -> None:
    async def first(store: RedisInbox) -> None:
        await store.append([(1, 1000, b"%d" % i, 0) for i in range(1, 11)])

    async def second(store: RedisInbox) -> None:  # (a config change, then a restart)
        page = await store.read(1, 0, 100)
        assert [m.seq for m in page.messages] == [8, 9, 10] and not page.complete
        assert page.top.seq == 10
        assert (await store.read(1, 7, 100)).complete
        assert not (await store.read(1, 6, 1)).complete
        await store.append([(1, 1000, b"11", 0)])  # MAXLEN trims the stream down
        assert [m.seq for m in (await store.read(1, 0, 100)).messages] == [9, 10, 11]

    with_store(redis_url, first, limits=InboxLimits(max_count=10))
    with_store(redis_url, second, limits=InboxLimits(max_count=3))


def test_a_chat_id_is_a_key_expiring_with_its_window_and_every_host_sees_it(redis_url: str) -> None:
    items = [(2, 1000, b"hi", 1), (1, 1000, b"hi", 1)]

    async def check() -> None:
        a, b = await opened(redis_url, prefix="p:"), await opened(redis_url, prefix="p:")
        try:
            first = await a.append_chat(1, "m 1", items, 30.0)  # (any text is an id)
            assert await b.append_chat(1, "m 1", items, 30.0) == (first.positions, True)
            assert await b.find_chat(1, "m 1") == first.positions
            assert [m.seq for m in (await b.read(2, 0, 10)).messages] == [1]
        finally:
            await a.close()
            await b.close()
        with redis.Redis.from_url(redis_url) as conn:
            assert 0 < conn.pttl("p:inbox:{1}:id:m 1") <= 30_000
            until, *positions = conn.get("p:inbox:{1}:id:m 1").decode().split(" ")
            assert float(until) > 0  # the window's end by the store's clock (the key's expiry is Redis's)
            assert positions == [first.positions[0].epoch, "1", first.positions[1].epoch, "1"]

    run(check())


def test_a_retry_in_another_script_call_of_the_same_batch_is_a_duplicate(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_write, "CHUNK", 12)  # a few ops per call of the write script

    async def body(store: RedisInbox) -> None:
        await store.top(1)  # scripts loaded
        before = evalsha_calls(redis_url)
        chat = [(2, 1000, b"hi", 1), (1, 1000, b"hi", 1)]
        results = await asyncio.gather(
            store.append_chat(1, "m1", chat, 60.0),
            *(store.append([(3, 1000, b"%d" % i, 0)]) for i in range(4)),
            store.append_chat(1, "m1", chat, 60.0),
        )
        assert evalsha_calls(redis_url) - before > 1
        assert results[-1] == (results[0].positions, True) and not results[0].duplicate
        assert [m.seq for m in (await store.read(2, 0, 10)).messages] == [1]

    with_store(redis_url, body)
