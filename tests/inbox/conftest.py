"""The ``inbox`` fixture: the contract suite runs once per store in FACTORIES.

A new store (Redis Streams) joins the suite with one entry in FACTORIES: an async
factory taking a scratch directory, the limits and a clock, returning the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from mpim.inbox import Inbox, InboxLimits, MemoryInbox, SqliteInbox


class FakeClock:
    """A clock tests move by hand (``clock.now += 60``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Factory = Callable[[Path, InboxLimits, FakeClock], Awaitable[Inbox]]


async def memory_inbox(tmp: Path, limits: InboxLimits, clock: FakeClock) -> Inbox:
    return MemoryInbox(limits, clock)


async def sqlite_inbox(tmp: Path, limits: InboxLimits, clock: FakeClock) -> Inbox:
    return SqliteInbox(tmp / "inbox.sqlite3", limits, clock)


FACTORIES: dict[str, Factory] = {
    "memory": memory_inbox,
    "sqlite": sqlite_inbox,
}


class InboxCase:
    """One store under test: ``case.run(body)`` opens it, awaits ``body(inbox)``, closes it."""

    def __init__(self, name: str, factory: Factory, tmp: Path) -> None:
        self.name = name
        self.factory = factory
        self.tmp = tmp
        self.clock = FakeClock()

    def run(self, body: Callable[[Inbox], Awaitable[None]], limits: InboxLimits | None = None) -> None:
        async def main() -> None:
            inbox = await self.factory(self.tmp, limits or InboxLimits(), self.clock)
            try:
                await body(inbox)
            finally:
                await inbox.close()

        uvloop.run(main())


@pytest.fixture(params=sorted(FACTORIES))
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> InboxCase:
    name: str = request.param
    return InboxCase(name, FACTORIES[name], tmp_path)
