"""The worker's listeners keep the configured ``[tcp] backlog`` / ``[websocket] backlog``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mpim import config
from mpim.worker.server import Worker
from tests.support import listen_backlog, local_config
from tests.worker.harness import run, serving

# Below asyncio's default (100) and any kernel's somaxconn, so the value seen is ours.
BACKLOGS = {"tcp": {"backlog": 77}, "websocket": {"backlog": 88}}


def test_listeners_keep_the_configured_backlog() -> None:
    seen: dict[str, int] = {}

    async def scenario() -> None:
        async with serving(**BACKLOGS) as srv:
            seen["tcp"] = listen_backlog(srv.tcp[1])
            seen["ws"] = listen_backlog(int(srv.ws_url.split(":")[2].split("/")[0]))

    run(scenario)
    assert seen == {"tcp": 77, "ws": 88}


def test_create_server_is_given_the_configured_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same, without ss: create_server listens again, so it must be told the backlog."""
    given: list[int] = []
    real = asyncio.BaseEventLoop.create_server

    async def spy(self: asyncio.BaseEventLoop, factory: Any, *args: Any, **kw: Any) -> Any:
        given.append(kw.get("backlog", 100))
        return await real(self, factory, *args, **kw)

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_server", spy)

    async def scenario() -> None:
        cfg: config.Config = local_config(**BACKLOGS)
        worker = Worker(cfg, asyncio.get_running_loop())
        await worker.start()
        worker.stop(graceful=False)
        await worker.wait_stopped()

    asyncio.run(scenario())  # the plain asyncio loop, whose create_server the spy wraps
    assert sorted(given) == [77, 88]
