"""The router shards of one host, linked to each other: calls in one hop, answered in order.

How this works. Shard K listens on ``endpoints.peer_of(K)`` and keeps one link (the
length-prefixed frames of :mod:`mpim.stream`, like a worker's) to every other shard,
connecting again while that shard is down or restarting. A call
(:data:`~mpim.records.ShardCall`) carries a request number; the other shard answers each
call with a :class:`~mpim.records.ShardAnswer` in the order it got them. A call to a shard
whose link is down fails at once with -503 (nothing was done there); one whose link
drops while it waits, or that is not answered within ``timeout``, fails with -504 (it
may have been done).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpim import records, slots, stream
from mpim.records import ShardAnswer, ShardCall, ShardClaim, ShardClaims, ShardRelease
from mpim.router.errors import Refused
from mpim.runtime import Endpoints

if TYPE_CHECKING:
    from mpim.router.core import Router

log = logging.getLogger("mpim.router")

RETRY = 0.1  # seconds between two attempts to link to a shard that is not up
_decode_calls = records.Decoder(list[ShardCall])
_decode_answers = records.Decoder(list[ShardAnswer])

Serve = Callable[[ShardCall], "ShardAnswer | asyncio.Future[ShardAnswer]"]


class _Out(stream.FrameProtocol):
    """This shard's link to another one: calls go out, answers come back."""

    def __init__(self, peers: ShardPeers, shard: int) -> None:
        super().__init__(peers.loop)
        self.peers = peers
        self.shard = shard
        self.gone: asyncio.Future[None] = peers.loop.create_future()

    def on_frame(self, payload: bytes) -> None:
        for answer in _decode_answers(payload):
            self.peers.answered(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.gone.done():
            self.gone.set_result(None)


class _In(stream.FrameProtocol):
    """Another shard's link to this one: its calls come in, the answers go back."""

    def __init__(self, peers: ShardPeers) -> None:
        super().__init__(peers.loop)
        self.peers = peers
        self.shard = -1  # which shard this is, once a call said so
        peers.inbound.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        peers = self.peers
        peers.inbound.discard(self)
        if self.shard >= 0 and not any(link.shard == self.shard for link in peers.inbound):
            peers.gone(self.shard)

    def on_frame(self, payload: bytes) -> None:
        try:
            calls = _decode_calls(payload)
        except records.BadRecord as exc:
            log.warning("a router shard sent a bad call: %s", exc)
            self.abort()
            return
        for call in calls:
            if isinstance(call, ShardClaim | ShardRelease | ShardClaims):
                self.shard = call.shard
            try:
                answer = self.peers.serve(call)
            except Exception as exc:
                self._answer(call, exc)
                continue
            if isinstance(answer, ShardAnswer):
                self.send(records.encode(answer))
            else:  # (answered once done: a store write)
                answer.add_done_callback(functools.partial(self._later, call))

    def _later(self, call: ShardCall, done: asyncio.Future[ShardAnswer]) -> None:
        exc = done.exception() if not done.cancelled() else Refused(-504, "cancelled")
        if exc is not None:
            self._answer(call, exc)
        else:
            self.send(records.encode(done.result()))

    def _answer(self, call: ShardCall, exc: BaseException) -> None:
        if isinstance(exc, Refused):
            answer = ShardAnswer(call.req, exc.code, exc.message)
        else:  # (a bug: the caller hears of it, the link stays)
            log.error("router shard call %s failed", type(call).__name__, exc_info=exc)
            answer = ShardAnswer(call.req, -500, f"router shard error: {exc}")
        self.send(records.encode(answer))


class _Call:
    __slots__ = ("deadline", "future", "shard")

    def __init__(self, shard: int, future: asyncio.Future[ShardAnswer], deadline: float) -> None:
        self.shard = shard
        self.future = future
        self.deadline = deadline


class ShardPeers:
    def __init__(
        self,
        shard: int,
        shards: int,
        endpoints: Endpoints,
        loop: asyncio.AbstractEventLoop,
        serve: Serve,
        timeout: float,
        linked: Callable[[int], None] = lambda shard: None,
        gone: Callable[[int], None] = lambda shard: None,
    ) -> None:
        self.shard = shard
        self.shards = shards
        self.endpoints = endpoints
        self.loop = loop
        self.serve = serve
        self.timeout = timeout
        self.linked = linked  # this shard's link to that one came up (first, or again)
        self.gone = gone  # that shard's link to this one closed (it died, or restarts)
        self.links: dict[int, _Out] = {}
        self.inbound: set[_In] = set()
        self._calls: dict[int, _Call] = {}
        self._req = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = dict.fromkeys(("calls", "unreachable", "lost", "timeouts"), 0)

    def others(self) -> list[int]:
        return [k for k in range(self.shards) if k != self.shard]

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for the other shards (OSError if the endpoint cannot be bound) and link to them."""
        endpoint = self.endpoints.peer_of(self.shard)
        self._server = await stream.serve(self.loop, endpoint, lambda: _In(self))
        self._tasks = [self.loop.create_task(self._keep_linked(k)) for k in self.others()]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
        for link in [*self.links.values(), *self.inbound]:
            link.abort()
        self._fail(lambda call: True, Refused(-503, "this router shard is stopping"))

    async def _keep_linked(self, shard: int) -> None:
        endpoint = self.endpoints.peer_of(shard)
        said = False
        while True:
            try:
                link: _Out = await stream.connect(self.loop, endpoint, lambda: _Out(self, shard))
            except OSError as exc:
                if not said:
                    log.info("router shard %d: waiting for shard %d (%s)", self.shard, shard, exc)
                    said = True
                await asyncio.sleep(RETRY)
                continue
            self.links[shard] = link
            log.info("router shard %d: linked to shard %d", self.shard, shard)
            self.linked(shard)
            said = False
            await link.gone
            if self.links.get(shard) is link:
                del self.links[shard]
            self.stats["lost"] += 1
            log.warning("router shard %d: the link to shard %d closed", self.shard, shard)
            self._fail(
                lambda call: call.shard == shard,
                Refused(-504, f"router shard {shard} went away; it may have been done there"),
            )

    # -- calls ---------------------------------------------------------------------------------
    def up(self, shard: int) -> bool:
        link = self.links.get(shard)
        return link is not None and not link.closed

    def call(self, shard: int, make: Callable[[int], ShardCall]) -> asyncio.Future[ShardAnswer]:
        """Send ``make(req)`` to ``shard``; the future is its answer (Refused: -503 when the link is
        down, -504 when it drops or the answer is late, the other shard's own refusal)."""
        future: asyncio.Future[ShardAnswer] = self.loop.create_future()
        link = self.links.get(shard)
        if link is None or link.closed:
            self.stats["unreachable"] += 1
            future.set_exception(Refused(-503, f"router shard {shard} is unreachable"))
            return future
        self._req = req = self._req + 1
        self._calls[req] = _Call(shard, future, self.loop.time() + self.timeout)
        self.stats["calls"] += 1
        link.send(records.encode(make(req)))
        return future

    def answered(self, answer: ShardAnswer) -> None:
        call = self._calls.pop(answer.req, None)
        if call is None or call.future.done():
            return
        if answer.code:
            call.future.set_exception(Refused(answer.code, answer.message))
        else:
            call.future.set_result(answer)

    def tick(self, now: float) -> None:
        """Fail the calls past their deadline with -504."""
        late = [req for req, call in self._calls.items() if call.deadline <= now]
        for req in late:
            call = self._calls.pop(req)
            self.stats["timeouts"] += 1
            if not call.future.done():
                call.future.set_exception(
                    Refused(-504, f"router shard {call.shard} did not answer in time; it may have been done")
                )

    def _fail(self, which: Callable[[_Call], bool], exc: Refused) -> None:
        for req in [r for r, c in self._calls.items() if which(c)]:
            call = self._calls.pop(req)
            if not call.future.done():
                call.future.set_exception(exc)


class ShardSite:
    """Where a piece of a router shard stands: its router, which shard of how many, its peers."""

    def __init__(self, router: Router, shard: int, shards: int) -> None:
        self.router = router
        self.store = router.store
        self.loop = router.loop
        self.shard = shard
        self.shards = shards
        self.link: ShardPeers | None = None  # set by the router process once it listens

    @property
    def peers(self) -> ShardPeers:
        assert self.link is not None, "the shard link is not set up"
        return self.link

    def owner(self, mid: int) -> int:
        """The shard that owns user ``mid``."""
        return slots.owner_of_mid(mid, self.shards)

    def keeper(self, key: str) -> int:
        """The shard that keeps the claims on ``key``."""
        return slots.owner(0, key, self.shards)


def answers(futures: list[asyncio.Future[ShardAnswer]]) -> asyncio.Future[list[Any]]:
    """Every answer (or the Refused it failed with), in the order of the calls."""
    return asyncio.gather(*futures, return_exceptions=True)


__all__ = ["ShardPeers", "ShardSite", "answers"]
