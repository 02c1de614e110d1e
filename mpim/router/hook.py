"""The receive hook: where client messages (SendMsg and other non-protocol ops) go.

``[router] receive_hook = "package.module:function"`` names a callable
``function(mid: int, key: str, op: int, body: bytes)``, called in the router
process for every upstream frame. It may be a coroutine function: the router
schedules it and logs its failure. The default logs one line per message.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mpim.upstream")

ReceiveHook = Callable[[int, str, int, bytes], Any]


class HookError(Exception):
    """The configured hook cannot be loaded; the message says why."""


def log_message(mid: int, key: str, op: int, body: bytes) -> None:
    log.info("upstream mid=%d key=%s op=%d body=%r", mid, key, op, body[:200])


def load_hook(spec: str) -> ReceiveHook:
    """``"module:function"`` -> the callable; ``""`` -> :func:`log_message`."""
    if not spec:
        return log_message
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HookError(f"receive_hook {spec!r}: cannot import {module_name}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise HookError(f"receive_hook {spec!r}: {module_name} has no callable {attr}")
    return func  # type: ignore[no-any-return]


class Receiver:
    """Calls the hook safely: errors are logged, coroutines are scheduled and awaited."""

    def __init__(self, hook: ReceiveHook) -> None:
        self._hook = hook
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = 0
        self.calls = 0

    def __call__(self, mid: int, key: str, op: int, body: bytes) -> None:
        self.calls += 1
        try:
            result = self._hook(mid, key, op, body)
        except Exception:
            self.failed += 1
            log.exception("receive hook failed for mid=%d key=%s op=%d", mid, key, op)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failed += 1
            log.error("receive hook failed: %r", task.exception())

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
