"""The Redis inbox's key layout and its write batch: ops in, script calls out, results back.

A batch is the appends, private messages and acks of one loop turn, in call order. :func:`split` cuts it
into script calls of about :data:`CHUNK` arguments; :meth:`WriteEncoder.command` turns
one call's ops into an ``EVALSHA`` of :data:`~mpim.inbox.redis_lua.WRITE` (users
numbered in order of appearance, their keys declared, a fresh epoch candidate each, the
numbers that may not fit a Lua double as strings); :func:`decode` reads its reply back
into each op's result. No I/O here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from mpim.cluster.batch import Command, Script
from mpim.inbox.base import SEQ_MAX, Chatted, InboxLimits, Item, Position

USER_BITS = 24  # the "existed before" bitmap: 2**24 bits (2 MiB); a collision only costs a fresh epoch
CHUNK = 2000  # script arguments per call of the write script; a bigger turn takes several calls


class Append(NamedTuple):
    items: tuple[Item, ...]


class Chat(NamedTuple):
    """A private message's items, appended once per id and window (see Inbox.append_chat)."""

    sender: int
    msg_id: str
    items: tuple[Item, ...]
    window: float


class Ack(NamedTuple):
    mid: int
    device: str
    seq: int


Op = Append | Chat | Ack
Result = list[Position] | int | Chatted


class Layout:
    """The inbox's key names (see redis_lua.py)."""

    def __init__(self, prefix: str) -> None:
        base = f"{prefix}inbox:"
        self.base = base
        self.epoch = f"{base}epoch"
        self.users = f"{base}users"
        self.oldest = f"{base}oldest"
        self.idle = f"{base}idle"
        self.slots = f"{base}slots"  # the slot count users are placed with (mpim.slots.SLOTS)

    def user(self, mid: int) -> tuple[str, str]:
        """The user's hash (epoch, seq, cursors) and stream."""
        meta = f"{self.base}{{{mid}}}"
        return meta, f"{meta}:s"

    def chat(self, sender: int, msg_id: str) -> str:
        """The record of a private message id (its window's end and its positions)."""
        return f"{self.base}{{{sender}}}:id:{msg_id}"


def user_bit(mid: int) -> int:
    """The user's bit in the "existed before" bitmap (Fibonacci hashing of the int64)."""
    return ((mid * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> (64 - USER_BITS)


def epochs(count: int) -> list[str]:
    """`count` fresh epochs (8 hex characters each, as base.new_epoch) from one urandom call."""
    raw = os.urandom(4 * count).hex()
    return [raw[8 * i : 8 * i + 8] for i in range(count)]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def split(ops: Sequence[Op]) -> list[list[Op]]:
    """The ops in script calls of at most about CHUNK arguments each, in order."""
    chunks: list[list[Op]] = [[]]
    size = 0
    for op in ops:
        if isinstance(op, Append):
            cost = 5 * len(op.items)
        elif isinstance(op, Chat):
            cost = 5 + 4 * len(op.items)
        else:
            cost = 4
        if chunks[-1] and size + cost > CHUNK:
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += cost
    return chunks


class WriteEncoder:
    """Builds the write script's calls for one store."""

    def __init__(self, keys: Layout, limits: InboxLimits, ttl_ms: int, script: Script) -> None:
        self.keys = keys
        self.store_keys = [keys.epoch, keys.users, keys.oldest, keys.idle]
        self.max_count = limits.max_count
        self.ttl_ms = ttl_ms
        self.script = script

    def command(self, ops: Sequence[Op], now: float) -> Command:
        users: dict[int, int] = {}
        chats: list[str] = []  # their keys follow the users' keys
        args: list[Any] = []
        for op in ops:
            if isinstance(op, Append):
                for mid, code, body, sender in op.items:
                    i = users.setdefault(mid, len(users) + 1)
                    args += ("a", i, code, body, str(sender))
            elif isinstance(op, Chat):
                chats.append(self.keys.chat(op.sender, op.msg_id))
                window_ms = max(1, round(op.window * 1000))
                args += ("c", len(chats), window_ms, repr(now + op.window), len(op.items))
                for mid, code, body, sender in op.items:
                    args += (users.setdefault(mid, len(users) + 1), code, body, str(sender))
            else:
                i = users.setdefault(op.mid, len(users) + 1)
                args += ("k", i, op.device, max(0, min(op.seq, SEQ_MAX)))
        fresh = epochs(len(users) + 1)
        keys = list(self.store_keys)
        head: list[Any] = [fresh[0], repr(now), self.max_count, self.ttl_ms, len(users)]
        for mid, epoch in zip(users, fresh[1:], strict=True):
            keys += self.keys.user(mid)
            head += (user_bit(mid), epoch, mid)
        return self.script.command(keys + chats, head + args)


def decode(ops: Sequence[Op], reply: list[Any]) -> list[Result]:
    """Each op's result from the script's reply (store epoch first, then positions and cursors)."""
    out: list[Result] = []
    at = 1
    for op in ops:
        if isinstance(op, Append):
            positions = []
            for _ in op.items:
                positions.append(Position(text(reply[at]), reply[at + 1]))
                at += 2
            out.append(positions)
        elif isinstance(op, Chat):
            duplicate, count = reply[at], reply[at + 1]
            at += 2
            chatted = [Position(text(reply[at + 2 * j]), int(reply[at + 2 * j + 1])) for j in range(count)]
            at += 2 * count
            out.append(Chatted(chatted, bool(duplicate)))
        else:
            out.append(reply[at])
            at += 1
    return out
