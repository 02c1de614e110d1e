"""Several hosts on one Redis: the client, its error, and the building blocks.

``[cluster] redis`` names the Redis every host of a cluster shares ("" = one host,
embedded, and nothing here is used). :func:`connect_redis` makes the one asyncio client
a process uses: hiredis parser, every connect and command bounded by ``[cluster]
timeout``, and no automatic retry (a retried script could append a message twice), so
a Redis that is gone is a prompt :class:`ClusterError`, never a hang. The stores built
on it: :class:`~mpim.cluster.directory.Directory` (who is where, goim v2's layout, and
the live hosts) and :class:`~mpim.inbox.redis.RedisInbox` (the per-user streams).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mpim.config import redact_url

if TYPE_CHECKING:
    from mpim.config import ClusterSection

__all__ = ["ClusterError", "connect_redis", "redis_client"]


class ClusterError(Exception):
    """Redis cannot be used now (unreachable, timed out, refused); the message says which and why."""


def _pool_options() -> dict[str, Any]:
    """redis-py 7+ skips its check for a connection the server closed (a Redis restart) while
    "maintenance notifications" are on, even as "auto" on RESP2; they are a managed-Redis
    feature mpim does not use, so turn them off where they exist."""
    try:
        module = importlib.import_module("redis.maint_notifications")
    except ImportError:  # redis-py 5 and 6
        return {}
    return {"maint_notifications_config": module.MaintNotificationsConfig(enabled=False)}


def redis_client(cfg: ClusterSection) -> Redis:
    """The client for ``cfg.redis`` with the timeouts set; connects lazily (no I/O here)."""
    if not cfg.redis:
        raise ClusterError("[cluster] redis is empty: one host, embedded; there is no Redis to use")
    return Redis.from_url(
        cfg.redis,
        socket_timeout=cfg.timeout,
        socket_connect_timeout=cfg.timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        client_name="mpim",
        **_pool_options(),
    )


async def connect_redis(cfg: ClusterSection) -> Redis:
    """A client that has answered PING; ClusterError naming the URL when Redis is unreachable."""
    client = redis_client(cfg)
    try:
        await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        reason = str(exc) or type(exc).__name__
        raise ClusterError(
            f"[cluster] redis {redact_url(cfg.redis)}: cannot reach Redis"
            f" (timeout {cfg.timeout:g} s): {reason}"
        ) from None
    return client
