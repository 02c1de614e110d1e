"""An inbox in this process's memory: dicts of deques, lost on exit.

For tests and for running without a durable store. Every user stream starts in the
store's epoch, a random string drawn when the store is created, so after a restart every
user's epoch differs from what clients saw: exactly the "not recovered" signal.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence

from mpim.inbox.base import (
    SEQ_MAX,
    Chatted,
    InboxError,
    InboxLimits,
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
    clamp_ack,
    new_epoch,
    page_complete,
    read_floor,
)


class _Stream:
    """One user's stream: messages ``(trimmed, seq]`` and device cursors."""

    __slots__ = ("cursors", "epoch", "messages", "seq", "trimmed")

    def __init__(self, epoch: str, max_count: int) -> None:
        self.epoch = epoch
        self.seq = 0  # last seq given out
        self.trimmed = 0  # every seq <= trimmed has been dropped
        self.messages: deque[Message] = deque(maxlen=max_count)
        self.cursors: dict[str, tuple[int, float]] = {}  # device -> (acked seq, last seen)

    def restart(self) -> None:
        """The int32 wrap: a new epoch from seq 1; the old epoch's messages and cursors go."""
        self.epoch = new_epoch()
        self.seq = self.trimmed = 0
        self.messages.clear()
        self.cursors.clear()


class MemoryInbox:
    """:class:`~mpim.inbox.base.Inbox` in memory, bounded by :class:`InboxLimits`."""

    def __init__(self, limits: InboxLimits, clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._clock = clock
        self._epoch = new_epoch()
        self._streams: dict[int, _Stream] = {}
        self._chats: dict[tuple[int, str], tuple[float, list[Position]]] = {}  # id -> (until, positions)
        self._closed = False

    def _stream(self, mid: int) -> _Stream:
        stream = self._streams.get(mid)
        if stream is None:
            stream = self._streams[mid] = _Stream(self._epoch, self._limits.max_count)
        return stream

    def _check_open(self) -> None:
        if self._closed:
            raise InboxError("memory inbox: closed")

    async def append(self, items: Sequence[Item]) -> list[Position]:
        self._check_open()
        check_items(items)
        return self._append(items)

    def _append(self, items: Sequence[Item]) -> list[Position]:
        now = self._clock()
        max_count = self._limits.max_count
        out = []
        for mid, op, body, sender in items:
            stream = self._stream(mid)
            seq = stream.seq + 1
            if seq > SEQ_MAX:
                stream.restart()
                seq = 1
            stream.seq = seq
            stream.messages.append(Message(seq, op, body, now, sender))  # maxlen drops the oldest
            if seq - stream.trimmed > max_count:
                stream.trimmed = seq - max_count
            out.append(Position(stream.epoch, seq))
        return out

    async def append_chat(self, sender: int, msg_id: str, items: Sequence[Item], window: float) -> Chatted:
        self._check_open()
        check_chat(sender, msg_id, items, window)
        first = self._first(sender, msg_id)
        if first is not None:
            return Chatted(first, True)
        positions = self._append(items)
        self._chats[sender, msg_id] = (self._clock() + window, positions)
        return Chatted(positions, False)

    async def find_chat(self, sender: int, msg_id: str) -> list[Position] | None:
        self._check_open()
        check_mid(sender)
        check_text("chat id", msg_id)
        return self._first(sender, msg_id)

    def _first(self, sender: int, msg_id: str) -> list[Position] | None:
        seen = self._chats.get((sender, msg_id))
        if seen is None or seen[0] < self._clock():
            return None
        return list(seen[1])

    async def read(self, mid: int, after: int, limit: int) -> Page:
        self._check_open()
        check_read(mid, after, limit)
        stream = self._streams.get(mid)
        if stream is None:
            return Page([], Position(self._epoch, 0), True)
        cutoff = self._clock() - self._limits.max_age
        floor = read_floor(stream.trimmed, stream.seq, self._limits)
        start = max(after, floor) - stream.trimmed  # index of seq `max(after, floor) + 1`
        wanted = max(limit, 1)
        messages: list[Message] = []
        for message in itertools.islice(stream.messages, start, None):
            if message.at >= cutoff:  # (what trim would keep)
                messages.append(message)
                if len(messages) == wanted:
                    break
        complete = page_complete(after, floor, stream.seq, limit, [m.seq for m in messages])
        return Page(messages[:limit], Position(stream.epoch, stream.seq), complete)

    async def top(self, mid: int) -> Position:
        self._check_open()
        check_mid(mid)
        stream = self._streams.get(mid)
        if stream is None:
            return Position(self._epoch, 0)
        return Position(stream.epoch, stream.seq)

    async def ack(self, mid: int, device: str, seq: int) -> int:
        self._check_open()
        check_ack(mid, device, seq)
        stream = self._stream(mid)
        old = stream.cursors.get(device, (0, 0.0))[0]
        cursor = clamp_ack(old, seq, stream.seq)
        stream.cursors[device] = (cursor, self._clock())
        return cursor

    async def cursors(self, mid: int) -> dict[str, int]:
        self._check_open()
        check_mid(mid)
        stream = self._streams.get(mid)
        if stream is None:
            return {}
        return {device: seq for device, (seq, _) in stream.cursors.items()}

    async def trim(self, now: float) -> int:
        self._check_open()
        cutoff = now - self._limits.max_age
        dropped = 0
        for stream in self._streams.values():
            messages = stream.messages
            while messages and messages[0].at < cutoff:
                stream.trimmed = messages.popleft().seq
                dropped += 1
            stale = [device for device, (_, seen) in stream.cursors.items() if seen < cutoff]
            for device in stale:
                del stream.cursors[device]
        over = [key for key, (until, _) in self._chats.items() if until < now]
        for key in over:
            del self._chats[key]
        return dropped

    async def close(self) -> None:
        self._closed = True

    async def force_seq(self, mid: int, seq: int) -> None:
        """Test only (see :class:`~mpim.inbox.base.InboxTestHooks`): empty stream at `seq`."""
        stream = self._stream(mid)
        stream.messages.clear()
        stream.seq = stream.trimmed = seq
