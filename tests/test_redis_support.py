"""The redis-server the tests start: TCP and unix socket, kill -9, restart with and without data."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import redis

from tests.redis_support import RedisServer


def test_shared_server_is_flushed_for_each_test(redis_server: RedisServer, redis_url: str) -> None:
    with redis_server.client() as conn:
        assert conn.dbsize() == 0
        conn.set("left-over", "1")  # the next test must not see it
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_no_persistence_unless_asked(redis_private: RedisServer) -> None:
    with redis_private.client() as conn:
        assert conn.config_get("save") == {"save": ""}
        assert conn.config_get("appendonly") == {"appendonly": "no"}
        conn.set("k", "v")
    port = redis_private.port
    redis_private.restart(keep_data=False)
    assert redis_private.port == port
    with redis_private.client() as conn:
        assert conn.get("k") is None
    with pytest.raises(ValueError, match="persist=True"):
        redis_private.restart(keep_data=True)


def test_kill_9_and_restart_keeping_data(redis_persistent: RedisServer) -> None:
    with redis_persistent.client() as conn:
        conn.set("k", "v")
    old_pid = redis_persistent.pid
    redis_persistent.kill()
    with pytest.raises(redis.ConnectionError), redis_persistent.client() as conn:
        conn.ping()
    redis_persistent.restart(keep_data=True)
    assert redis_persistent.pid != old_pid
    with redis_persistent.client() as conn:
        assert conn.get("k") == b"v"
    redis_persistent.restart(keep_data=False)
    with redis_persistent.client() as conn:
        assert conn.get("k") is None


def test_unix_socket_server_is_private(redis_unix: RedisServer) -> None:
    assert redis_unix.url.startswith("unix:///")
    mode = os.stat(redis_unix.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o700
    with redis_unix.client() as conn:
        assert conn.ping()
        assert conn.config_get("port") == {"port": "0"}  # no TCP listener


def test_a_server_that_cannot_start_fails_with_the_reason(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    with socket.socket() as holder:  # the port is taken: redis-server cannot listen on it and exits
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server.port = holder.getsockname()[1]
        with pytest.raises(pytest.fail.Exception) as info:
            server.start()
    message = str(info.value)
    assert "redis-server did not start" in message and "exited" in message
    assert "already in use" in message  # the reason, from its log
