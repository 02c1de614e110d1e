"""[cluster] in the config, and connect_redis: a ready client or a prompt ClusterError."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpim import config
from mpim.cluster import ClusterError, connect_redis, redis_client
from mpim.config import ClusterSection, ConfigError
from tests.redis_support import RedisServer
from tests.support import free_port, run


def section(**values: object) -> ClusterSection:
    return config.replace(config.Config(), cluster=values).cluster


def test_defaults_mean_one_host() -> None:
    cfg = config.Config().cluster
    assert (cfg.redis, cfg.timeout, cfg.key_prefix) == ("", 1.0, "")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis.internal",
        "rediss://:secret@redis.internal:6380/2",
        "unix:///run/redis/redis.sock",
        "unix:///run/redis/redis.sock?db=3",
    ],
)
def test_redis_urls_accepted(url: str) -> None:
    assert section(redis=url).redis == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379", "is not a redis://, rediss:// or unix:// URL"),
        ("127.0.0.1:6379", "is not a redis://, rediss:// or unix:// URL"),
        ("redis:/127.0.0.1", "is not a redis://, rediss:// or unix:// URL"),
        ("unix://redis.sock", "must name an absolute socket path"),
        ("redis://127.0.0.1:99999/0", "not a URL"),
        ("redis://127.0.0.1:6379/zero", "database 'zero' is not a number"),
        ("redis://127.0.0.1:0", "port 0"),
        ("redis://127.0.0.1:6379/0 ", "white space"),
    ],
)
def test_bad_redis_urls_name_the_key(tmp_path: Path, url: str, reason: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml({"cluster": {"redis": url}}))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert f"{path}: [cluster] redis: " in str(info.value)
    assert reason in str(info.value)


def test_a_password_never_appears_in_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        section(redis="redis://:hunter2@127.0.0.1:6379/x")
    assert "hunter2" not in str(info.value) and ":***@" in str(info.value)
    cfg = section(redis=f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(ClusterError) as failure:
        run(connect_redis(cfg))
    assert "hunter2" not in str(failure.value) and ":***@" in str(failure.value)


def test_timeout_bounds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[cluster\] timeout: 0.0 is below the minimum"):
        section(timeout=0)


def test_connect_to_a_real_server(redis_url: str) -> None:
    async def check() -> None:
        client = await connect_redis(section(redis=redis_url, timeout=0.5))
        try:
            assert await client.ping()
            kwargs = client.connection_pool.connection_kwargs
            assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.5
            assert kwargs["retry"].get_retries() == 0  # a script is never sent twice
        finally:
            await client.aclose()

    run(check())


def test_connect_over_a_unix_socket(redis_unix: RedisServer) -> None:
    async def check() -> None:
        client = await connect_redis(section(redis=redis_unix.url))
        try:
            assert await client.set("k", "v") and await client.get("k") == b"v"
        finally:
            await client.aclose()

    run(check())


def test_nothing_listening_is_a_cluster_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ClusterError) as info:
        run(connect_redis(section(redis=url, timeout=0.5)), timeout=10)
    assert f"[cluster] redis {url}: cannot reach Redis" in str(info.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_a_silent_server_is_a_cluster_error_not_a_hang(silent_port: int) -> None:
    url = f"redis://127.0.0.1:{silent_port}/0"
    with pytest.raises(ClusterError) as info:
        run(connect_redis(section(redis=url, timeout=0.2)), timeout=10)
    assert "cannot reach Redis (timeout 0.2 s)" in str(info.value)


def test_empty_url_has_no_client() -> None:
    with pytest.raises(ClusterError, match="one host"):
        redis_client(section())
