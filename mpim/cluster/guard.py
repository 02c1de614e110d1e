"""Every Redis call of a store goes through a :class:`RedisGuard`: bounded, mapped, logged once.

A call that Redis does not answer within the guard's bound, or that fails in any way
(refused connection, reset, timeout, an error reply, a script error), raises the store's
own error class with a message naming the store, the operation and the Redis URL (its
password hidden), never a redis-py exception and never a hang. A store that tells the two
apart gives an ``unknown`` class too: it is raised when the request may have reached Redis
and run there (a timeout, a connection that broke while waiting for the reply), and the
plain error only when it surely did not (no connection could be made, an error reply). The first failure of an
outage is logged as an error and the first success after it as "back"; the failures in
between are not logged again, so a Redis outage costs two log lines, not one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from mpim.config import redact_url

log = logging.getLogger(__name__)

FAILURES = (RedisError, OSError, TimeoutError)
"""What a Redis call can fail with: redis-py's errors, socket errors, the bound."""


def did_not_run(exc: BaseException) -> bool:
    """Whether a failed call surely never ran in Redis: no connection could be made (redis-py
    says "connecting"), or Redis answered with an error. A timeout or a connection that broke
    while the reply was awaited leaves it unknown."""
    if isinstance(exc, ResponseError | ConnectionRefusedError):
        return True
    return isinstance(exc, RedisError | OSError) and "connecting" in str(exc)


def describe(client: Redis) -> str:
    """The client's Redis as ``host:port/db`` or the unix socket path (no password)."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    scheme = "rediss" if kwargs.get("ssl") or "ssl_context" in kwargs else "redis"
    return redact_url(f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}")


class RedisGuard:
    """Bounds, maps and logs the Redis calls of one store (see the module docstring)."""

    def __init__(
        self,
        store: str,
        client: Redis,
        timeout: float,
        error: type[Exception],
        unknown: type[Exception] | None = None,
    ) -> None:
        self.store = store
        self.where = describe(client)
        self.bound = 3 * timeout  # a connect and a command each within `timeout`, plus slack
        self.error = error
        self.unknown = unknown or error
        self.down = False

    def failed(self, what: str, exc: BaseException) -> Exception:
        """The store's error for `what` failing with `exc` (the first of an outage is logged)."""
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) and not str(exc):
            reason = f"no answer within {self.bound:g} s"
        if not self.down:
            self.down = True
            log.error("%s: Redis %s failed (%s): %s", self.store, self.where, what, reason)
        kind = self.error if did_not_run(exc) else self.unknown
        return kind(f"{self.store}: {what} failed: Redis {self.where}: {reason}")

    def answered(self) -> None:
        if self.down:
            self.down = False
            log.info("%s: Redis %s answers again", self.store, self.where)

    @contextlib.asynccontextmanager
    async def call(self, what: str) -> AsyncIterator[None]:
        """Run the body within the bound; a Redis failure leaves as the store's error."""
        try:
            async with asyncio.timeout(self.bound):
                yield
        except FAILURES as exc:
            raise self.failed(what, exc) from exc
        self.answered()
