"""Fixtures shared by the whole suite (helpers that are not fixtures live in tests/support.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop that is not running: tests drive protocols on it by hand."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


# Real redis-server processes for the Redis inbox and the cluster directory (tests/redis_support.py).
from tests.redis_support import (  # noqa: E402
    redis_persistent,
    redis_private,
    redis_server,
    redis_unix,
    redis_url,
)

__all__ = ["loop", "redis_persistent", "redis_private", "redis_server", "redis_unix", "redis_url"]
