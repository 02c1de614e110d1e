"""The inbox of several hosts: one Redis stream per user, the seq given out by a Lua script.

How this works. Every call goes through the store's
:class:`~mpim.cluster.batch.TurnPipeline`: what the tasks of one loop turn ask goes to
Redis as one pipeline, one batch in flight at a time, so Redis applies it in call order.
``append`` and ``ack`` put an op on a list and wait on a future; the turn's first op
queues one pipeline entry that, when sent, takes every op pending by then and becomes
ONE call of the write script (:data:`~mpim.inbox.redis_lua.WRITE`), which, atomically,
per user reads the counter, XADDs each message with the explicit ID ``<seq>-0`` and
``MAXLEN max_count``, moves cursors, and renews the keys' expiry. A private message is an
op of that call too: its id is looked up and, when new, recorded (a key expiring with the
de-duplication window) by the call that appends it. Reads are one call of the read script
each (position, oldest stored seq and an XRANGE by seq, from one snapshot, without the
messages past ``max_age`` or beyond the newest ``max_count``). :meth:`trim` visits only
the users an index says have messages or cursors older than ``max_age`` and drops them
with ``XTRIM MINID``; chat ids go by their keys' expiry.

Epochs. The store epoch is a key created at open (``SET NX``) and checked by every script:
a Redis that lost its data (restart without persistence, FLUSHALL) has lost that key, the
script writes a new one, and every position handed out before says "not recovered". A
user's keys expire ``max_age`` after its last append or ack (nothing of it would survive
trimming anyway); a user created again after that gets a fresh epoch (a bitmap remembers
who existed), so old positions never alias new seqs. A Redis restored from an older
snapshot is not detected (its epoch key exists): run Redis with AOF or without
persistence, never with RDB snapshots alone, and with ``maxmemory-policy noeviction``.

Slots. ``<prefix>inbox:slots`` records the slot count users are placed with
(:data:`mpim.slots.SLOTS`): written at the first open (``SET NX``, so a store made before
it gets it then), checked at every open: a store made with another count is refused.

Durability is Redis's: with ``appendfsync always`` an append that returned survives a
Redis crash. A call that times out may still have been applied (at least once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from mpim.cluster import redis_client
from mpim.cluster.batch import Command, Script, TurnPipeline
from mpim.cluster.guard import RedisGuard
from mpim.inbox import redis_lua
from mpim.inbox.base import (
    SEQ_MAX,
    Chatted,
    InboxError,
    InboxLimits,
    InboxUnknown,
    Item,
    Message,
    Page,
    Position,
    check_ack,
    check_chat,
    check_items,
    check_mid,
    check_read,
    check_text,
    decode_positions,
    new_epoch,
    page_complete,
)
from mpim.inbox.redis_write import (
    CHUNK,
    Ack,
    Append,
    Chat,
    Layout,
    Op,
    Result,
    WriteEncoder,
    decode,
    split,
    text,
    user_bit,
)
from mpim.slots import SLOTS

if TYPE_CHECKING:
    from mpim.config import ClusterSection, InboxSection

log = logging.getLogger(__name__)

_BEFORE = ("ZRANGEBYSCORE",)
_SOME = ("LIMIT", 0, CHUNK // 4)  # users visited per trim step


class RedisInbox:
    """:class:`~mpim.inbox.base.Inbox` on Redis Streams (see the module docstring)."""

    def __init__(
        self,
        client: Redis,
        limits: InboxLimits,
        *,
        prefix: str = "",
        timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
        owns_client: bool = False,
    ) -> None:
        """Use :meth:`open`, which also creates (or reads) the store epoch."""
        self._client = client
        self._limits = limits
        self._clock = clock
        self._owns_client = owns_client
        self._keys = keys = Layout(prefix)
        self._epoch_key = keys.epoch
        self._store_keys = [keys.epoch, keys.users, keys.oldest, keys.idle]
        self._ttl_ms = max(1, round(limits.max_age * 1000))
        self._guard = RedisGuard("inbox", client, timeout, InboxError, unknown=InboxUnknown)
        self._write = Script(redis_lua.WRITE)
        self._encoder = WriteEncoder(keys, limits, self._ttl_ms, self._write)
        self._read = Script(redis_lua.READ)
        self._trim = Script(redis_lua.TRIM)
        self._force = Script(redis_lua.FORCE_SEQ)
        scripts = [self._write, self._read, self._trim, self._force]
        self.pipeline = TurnPipeline(client, self._guard, scripts)
        self.epoch = ""  # the store epoch last seen
        self._pending: list[tuple[Op, asyncio.Future[Result]]] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        client: Redis,
        limits: InboxLimits,
        *,
        prefix: str = "",
        timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
        owns_client: bool = False,
    ) -> RedisInbox:
        """Open the store in `client`'s Redis (InboxError if it cannot be reached)."""
        self = cls(client, limits, prefix=prefix, timeout=timeout, clock=clock, owns_client=owns_client)
        async with self._guard.call("open"):
            candidate = new_epoch()
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(self._epoch_key, candidate, nx=True)
                pipe.get(self._epoch_key)
                pipe.set(self._keys.slots, str(SLOTS), nx=True)
                pipe.get(self._keys.slots)
                _, epoch, _, slots = await pipe.execute()
        if text(slots) != str(SLOTS):
            await self.close()
            raise InboxError(
                f"inbox {self._guard.where}: made with {text(slots)} slots ({self._keys.slots}), this mpim"
                f" places users in {SLOTS}: its users would be owned by the wrong router shards; use an"
                " mpim with the same slot count or another [cluster] key_prefix"
            )
        self.epoch = text(epoch)
        state = "new" if self.epoch == candidate else "existing"
        log.info("inbox %s: open (%s epoch %s)", self._guard.where, state, self.epoch)
        await self._check_eviction()
        return self

    async def _check_eviction(self) -> None:
        """Warn when Redis may evict keys (a lost user hash would rewind its seqs)."""
        try:
            async with asyncio.timeout(self._guard.bound):
                limit = await self._client.config_get("maxmemory")
                policy = await self._client.config_get("maxmemory-policy")
        except Exception:  # CONFIG may be disabled (managed Redis): nothing to check
            return
        if text(limit.get("maxmemory", "0")) != "0" and text(policy.get("maxmemory-policy")) != "noeviction":
            log.warning(
                "inbox %s: maxmemory-policy is %s; set noeviction, an evicted user hash loses its seqs",
                self._guard.where,
                text(policy.get("maxmemory-policy")),
            )

    def _user_keys(self, mid: int) -> tuple[str, str]:
        return self._keys.user(mid)

    def _check_open(self) -> None:
        if self._closed:
            raise InboxError("inbox redis: closed")

    def _seen(self, store: Any) -> None:
        epoch = text(store)
        if epoch != self.epoch:
            if self.epoch:
                log.warning(
                    "inbox %s: the store epoch changed from %s to %s: Redis lost its data (a restart"
                    " without persistence, FLUSHALL or eviction); earlier positions are not recovered",
                    self._guard.where,
                    self.epoch,
                    epoch,
                )
            self.epoch = epoch

    # -- writes: one script call per loop turn ------------------------------------------

    def _submit(self, op: Op) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        self._pending.append((op, fut))
        if len(self._pending) == 1:  # the turn's first write: one entry in the pipeline for all
            self._start_batch()
        return fut

    def _start_batch(self) -> None:
        """Queue one pipeline entry that, when sent, takes every write pending by then."""
        taken: list[list[tuple[Op, asyncio.Future[Result]]]] = []
        chunks: list[list[Op]] = []

        def build() -> list[Command]:
            batch, self._pending = self._pending, []
            taken.append(batch)
            chunks.extend(split([op for op, _ in batch]))
            now = self._clock()
            return [self._encoder.command(chunk, now) for chunk in chunks]

        def settle(done: asyncio.Future[list[Any]]) -> None:
            self._inflight.discard(done)
            if not taken:  # the pipeline failed before taking them
                taken.append(self._pending)
                self._pending = []
            failure = asyncio.CancelledError() if done.cancelled() else done.exception()
            if failure is not None:
                if not isinstance(failure, InboxError):
                    failure = InboxError(f"inbox: write failed: {failure!r}")
                for _, fut in taken[0]:
                    if not fut.done():
                        fut.set_exception(failure)
                return
            results: list[Result] = []
            for chunk, reply in zip(chunks, done.result(), strict=True):
                self._seen(reply[0])
                results += decode(chunk, reply)
            for (_, fut), result in zip(taken[0], results, strict=True):
                if not fut.done():
                    fut.set_result(result)

        done = self.pipeline.call("write", build)
        self._inflight.add(done)
        done.add_done_callback(settle)

    async def append(self, items: Sequence[Item]) -> list[Position]:
        self._check_open()
        check_items(items)
        if not items:
            return []
        result = await self._submit(Append(tuple(items)))
        assert isinstance(result, list)
        return result

    async def append_chat(self, sender: int, msg_id: str, items: Sequence[Item], window: float) -> Chatted:
        self._check_open()
        check_chat(sender, msg_id, items, window)
        result = await self._submit(Chat(sender, msg_id, tuple(items), window))
        assert isinstance(result, Chatted)
        return result

    async def find_chat(self, sender: int, msg_id: str) -> list[Position] | None:
        self._check_open()
        check_mid(sender)
        check_text("chat id", msg_id)
        record = await self.pipeline.call("find_chat", ("GET", self._keys.chat(sender, msg_id)))
        if record is None:
            return None
        until, _, positions = text(record).partition(" ")
        return decode_positions(positions) if float(until) >= self._clock() else None

    async def ack(self, mid: int, device: str, seq: int) -> int:
        self._check_open()
        check_ack(mid, device, seq)
        result = await self._submit(Ack(mid, device, seq))
        assert isinstance(result, int)
        return result

    # -- reads ----------------------------------------------------------------------------

    async def _call_read(self, mid: int, what: str, after: int = 0, limit: int = 0) -> list[Any]:
        cutoff = repr(self._clock() - self._limits.max_age)
        args: list[str | int] = [new_epoch(), user_bit(mid), new_epoch(), what, after, limit, self._ttl_ms]
        args += (cutoff, self._limits.max_count)
        keys = [self._epoch_key, self._store_keys[1], *self._user_keys(mid)]
        reply: list[Any] = await self.pipeline.script(what, self._read, keys, args)
        self._seen(reply[0])
        return reply

    async def read(self, mid: int, after: int, limit: int) -> Page:
        self._check_open()
        check_read(mid, after, limit)
        reply = await self._call_read(mid, "read", max(0, min(after, SEQ_MAX)), max(limit, 1))
        top = Position(text(reply[1]), reply[2])
        rest = reply[4:]
        messages = [
            Message(rest[j], int(rest[j + 1]), rest[j + 2], float(rest[j + 3]), int(rest[j + 4]))
            for j in range(0, len(rest), 5)
        ]
        complete = page_complete(after, reply[3], top.seq, limit, [m.seq for m in messages])
        return Page(messages[:limit], top, complete)

    async def top(self, mid: int) -> Position:
        self._check_open()
        check_mid(mid)
        reply = await self._call_read(mid, "top")
        return Position(text(reply[1]), reply[2])

    async def cursors(self, mid: int) -> dict[str, int]:
        self._check_open()
        check_mid(mid)
        reply = await self._call_read(mid, "cursors")
        fields = reply[3:]
        return {
            fields[j][2:].decode(): int(fields[j + 1])
            for j in range(0, len(fields), 2)
            if fields[j].startswith(b"c:")
        }

    # -- maintenance ------------------------------------------------------------------

    async def trim(self, now: float) -> int:
        """Drop messages and cursors older than max_age, visiting only users the indexes name."""
        cutoff = now - self._limits.max_age
        oldest, idle = self._store_keys[2], self._store_keys[3]
        dropped = 0
        while True:
            self._check_open()
            due = [
                self.pipeline.call("trim", (*_BEFORE, key, "-inf", f"({cutoff!r}", *_SOME))
                for key in (oldest, idle)
            ]
            mids = sorted({int(mid) for found in await asyncio.gather(*due) for mid in found})
            if not mids:
                break
            keys = [oldest, idle]
            for mid in mids:
                keys += self._user_keys(mid)
            dropped += await self.pipeline.script("trim", self._trim, keys, [repr(cutoff), *mids])
        if dropped:
            log.debug(
                "inbox %s: trimmed %d messages older than %.0f s",
                self._guard.where,
                dropped,
                self._limits.max_age,
            )
        return dropped

    async def _settled(self) -> None:
        """Wait until every write issued so far has its answer."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def close(self) -> None:
        """Send what is pending, then refuse further calls (and close an owned client)."""
        if self._closed:
            return
        await self._settled()
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    async def force_seq(self, mid: int, seq: int) -> None:
        """Test only (see :class:`~mpim.inbox.base.InboxTestHooks`): empty stream at `seq`."""
        await self._settled()
        keys = [self._epoch_key, self._store_keys[1], *self._user_keys(mid)]
        self._seen(
            await self.pipeline.script("force_seq", self._force, keys, [new_epoch(), user_bit(mid), seq])
        )


async def open_redis_inbox(
    cluster: ClusterSection, inbox: InboxSection, clock: Callable[[], float] = time.time
) -> RedisInbox:
    """The store of ``[cluster] redis`` with the ``[inbox]`` limits (its own client, closed with it)."""
    limits = InboxLimits(max_count=inbox.max_count, max_age=inbox.max_age)
    return await RedisInbox.open(
        redis_client(cluster),
        limits,
        prefix=cluster.key_prefix,
        timeout=cluster.timeout,
        clock=clock,
        owns_client=True,
    )
