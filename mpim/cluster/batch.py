"""One Redis pipeline per loop turn: the commands of every task, in call order.

How this works. :meth:`TurnPipeline.call` puts a command (usually an ``EVALSHA`` of one
of the store's scripts) on a list and waits on a future; the first command of a loop
turn starts a sender task, so everything issued in that turn goes to Redis as ONE
pipeline on one connection. While a pipeline is in flight the next commands wait for it,
so Redis runs them in call order across turns too, and a burst of calls (a reconnect
storm, a push to many users) costs a few round trips and one connection, not one each.

Scripts are sent as ``EVALSHA``. The first pipeline, and the first after any failure,
starts with ``SCRIPT LOAD`` of every script. A Redis that restarted between two calls
(or a ``SCRIPT FLUSH``) answers ``NOSCRIPT``, which means the script did not run: those
commands are sent again, in their order, behind a ``SCRIPT LOAD``. Every write of a
store is a script, so this keeps the writes in call order. An error reply fails only its
own caller; a lost connection or a timeout fails the whole batch (via the store's
:class:`~mpim.cluster.guard.RedisGuard`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from mpim.cluster.guard import FAILURES, RedisGuard

Command = tuple[Any, ...]


class Script:
    """A Lua script known by its SHA1 (loaded by the pipeline that needs it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


Builder = Callable[[], Sequence[Command]]


class TurnPipeline:
    """Batches a store's commands per loop turn (see the module docstring)."""

    def __init__(self, client: Redis, guard: RedisGuard, scripts: Sequence[Script]) -> None:
        self.client = client
        self.guard = guard
        self.scripts = list(scripts)
        self.loaded = False
        self._pending: list[tuple[str, Command | Builder, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0  # pipelines sent (tests and benchmarks read it)

    def call(self, what: str, command: Command | Builder) -> asyncio.Future[Any]:
        """Queue `command`; the future gets its reply or the guard's error. A callable is
        called when the pipeline is sent and returns the commands to send in its place;
        its future then gets the list of their replies (what lets a store merge the
        writes of a whole turn into one script call)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((what, command, fut))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return fut

    async def script(self, what: str, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.call(what, script.command(keys, args))

    async def _send_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._sender = None

    async def _execute(self, commands: Sequence[Command], load: bool) -> list[Any]:
        async with asyncio.timeout(self.guard.bound), self.client.pipeline(transaction=False) as pipe:
            if load:
                for script in self.scripts:
                    pipe.script_load(script.source)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        self.loaded = True
        return replies[len(self.scripts) :] if load else replies

    async def _send(self, batch: list[tuple[str, Command | Builder, asyncio.Future[Any]]]) -> None:
        commands: list[Command] = []
        spans: list[tuple[int, int]] = []  # per entry: its commands, or -1 for a plain command
        try:
            for _, entry, _ in batch:
                if callable(entry):
                    built = entry()
                    spans.append((len(commands), len(built)))
                    commands += built
                else:
                    spans.append((len(commands), -1))
                    commands.append(entry)
            replies = await self._execute(commands, not self.loaded)
            again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if again:  # Redis restarted (or SCRIPT FLUSH) since they were loaded: none of those ran
                retried = await self._execute([commands[i] for i in again], True)
                for i, reply in zip(again, retried, strict=True):
                    replies[i] = reply
        except BaseException as exc:
            self.loaded = False  # Redis may come back without them
            for what, _, fut in batch:
                if not fut.done():
                    fut.set_exception(self.guard.failed(what, exc) if isinstance(exc, FAILURES) else exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.guard.answered()
        self.batches += 1
        for (what, _, fut), (start, count) in zip(batch, spans, strict=True):
            mine = replies[start : start + max(count, 1)] if count else []
            failure = next((r for r in mine if isinstance(r, Exception)), None)
            if fut.done():
                continue
            if failure is not None:
                fut.set_exception(self.guard.error(f"{self.guard.store}: {what} failed: {failure}"))
            else:
                fut.set_result(mine[0] if count < 0 else mine)
