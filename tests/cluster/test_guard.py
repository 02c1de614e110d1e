"""RedisGuard: every failure becomes the store's error; an outage is logged once, and its end."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.exceptions
from redis.asyncio import Redis

from mpim import config
from mpim.cluster import redis_client
from mpim.cluster.guard import RedisGuard
from tests.redis_support import RedisServer
from tests.support import run


class StoreError(Exception):
    pass


def test_outage_logged_once_and_recovery_once(
    redis_private: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def check() -> None:
        cfg = config.replace(config.Config(), cluster={"redis": redis_private.url, "timeout": 0.5})
        client = redis_client(cfg.cluster)
        guard = RedisGuard("store", client, 0.5, StoreError)
        try:
            async with guard.call("ping"):
                await client.ping()
            await asyncio.to_thread(redis_private.kill)
            for _ in range(3):
                with pytest.raises(StoreError) as info:
                    async with guard.call("ping"):
                        await client.ping()
                assert str(info.value).startswith(f"store: ping failed: Redis {guard.where}: ")
            await asyncio.to_thread(redis_private.restart, keep_data=False)
            for _ in range(2):
                async with guard.call("ping"):
                    await client.ping()
        finally:
            await client.aclose()

    with caplog.at_level(logging.INFO, logger="mpim.cluster.guard"):
        run(check())
    lines = [r.getMessage() for r in caplog.records if r.name == "mpim.cluster.guard"]
    assert len(lines) == 2, lines
    assert "failed (ping)" in lines[0] and "answers again" in lines[1]


def test_errors_of_the_caller_are_not_redis_failures() -> None:
    async def check() -> None:
        client = Redis.from_url("redis://127.0.0.1:1/0")
        guard = RedisGuard("store", client, 0.5, StoreError)
        with pytest.raises(ValueError):
            async with guard.call("x"):
                raise ValueError("bad input")
        assert not guard.down
        await client.aclose()

    run(check())


def test_where_hides_nothing_but_the_password() -> None:
    client = Redis.from_url("redis://:pw@example.invalid:6390/2")
    assert RedisGuard("s", client, 1.0, StoreError).where == "redis://example.invalid:6390"
    unix = Redis.from_url("unix:///tmp/r.sock")
    assert RedisGuard("s", unix, 1.0, StoreError).where == "unix:///tmp/r.sock"


def test_a_failure_that_may_have_run_in_redis_is_the_unknown_error() -> None:
    class Unknown(StoreError):
        pass

    guard = RedisGuard("inbox", Redis(), 1.0, StoreError, unknown=Unknown)
    ran_maybe = [
        redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379"),
        redis.exceptions.ConnectionError("Connection closed by server."),
        TimeoutError(),  # the guard's own bound
    ]
    never_ran = [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.exceptions.TimeoutError("Timeout connecting to server"),
        redis.exceptions.ResponseError("NOSCRIPT No matching script"),
        ConnectionRefusedError(111, "Connection refused"),
    ]
    assert all(type(guard.failed("write", exc)) is Unknown for exc in ran_maybe)
    assert all(type(guard.failed("write", exc)) is StoreError for exc in never_ran)
