"""The ``inbox`` fixture: the contract suite runs once per store in FACTORIES.

A store joins the suite with one entry in FACTORIES: an async factory taking the test
case (its scratch directory, clock and, for "redis", the URL of a flushed real
redis-server from tests/redis_support.py) and the limits, returning the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from mpim import config
from mpim.cluster import redis_client
from mpim.inbox import Inbox, InboxLimits, MemoryInbox, SqliteInbox
from mpim.inbox.redis import RedisInbox


class FakeClock:
    """A clock tests move by hand (``clock.now += 60``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Factory = Callable[["InboxCase", InboxLimits], Awaitable[Inbox]]


async def memory_inbox(case: InboxCase, limits: InboxLimits) -> Inbox:
    return MemoryInbox(limits, case.clock)


async def sqlite_inbox(case: InboxCase, limits: InboxLimits) -> Inbox:
    return SqliteInbox(case.tmp / "inbox.sqlite3", limits, case.clock)


async def redis_inbox(case: InboxCase, limits: InboxLimits) -> Inbox:
    cfg = config.replace(config.Config(), cluster={"redis": case.redis_url, "timeout": 5.0}).cluster
    client = redis_client(cfg)
    return await RedisInbox.open(client, limits, clock=case.clock, timeout=5.0, owns_client=True)


FACTORIES: dict[str, Factory] = {
    "memory": memory_inbox,
    "sqlite": sqlite_inbox,
    "redis": redis_inbox,
}
NEEDS_REDIS = {"redis"}


class InboxCase:
    """One store under test: ``case.run(body)`` opens it, awaits ``body(inbox)``, closes it."""

    def __init__(self, name: str, factory: Factory, tmp: Path, redis_url: str = "") -> None:
        self.name = name
        self.factory = factory
        self.tmp = tmp
        self.redis_url = redis_url
        self.clock = FakeClock()
        self.durable = name != "memory"  # a store opened again (``run`` once more) finds what was written

    def run(self, body: Callable[[Inbox], Awaitable[None]], limits: InboxLimits | None = None) -> None:
        async def main() -> None:
            inbox = await self.factory(self, limits or InboxLimits())
            try:
                await body(inbox)
            finally:
                await inbox.close()

        uvloop.run(main())


@pytest.fixture(params=sorted(FACTORIES))
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> InboxCase:
    name: str = request.param
    url = request.getfixturevalue("redis_url") if name in NEEDS_REDIS else ""
    return InboxCase(name, FACTORIES[name], tmp_path, url)
