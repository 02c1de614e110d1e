"""The per-user inbox: types and the :class:`Inbox` protocol every store implements.

Every push by mid and every private message is appended to the recipient's stream and
gets the next per-user sequence number. A :class:`Position` ``(epoch, seq)`` names a
point in one user's stream, as centrifuge's ``StreamPosition{Offset, Epoch}`` does for
a channel: ``seq`` orders messages within an epoch, and a new ``epoch`` means the store
can no longer vouch for what came before (it lost the user's data, or ``seq`` wrapped).

Rules every implementation keeps (``tests/inbox/contract.py`` checks them):

- seqs start at 1 and are consecutive per user; they never go back within an epoch. A
  user whose messages were all trimmed keeps its counter and epoch.
- A user's seq is an int32. The append that would pass ``SEQ_MAX`` (2**31-1) starts a
  new epoch at seq 1 instead, and drops the user's older messages and device cursors
  (they belong to the old epoch). At one push per second that is 68 years away.
- Trimming by count happens at append (the newest ``max_count`` per user stay);
  trimming by age happens in :meth:`Inbox.trim`. Both drop the oldest messages first, so
  a user's stored messages are always the range ``(trimmed, top]``.
- The limits hold when the inbox is read, not only once trimmed: a read returns no
  message older than ``max_age`` at read time and none but the newest ``max_count`` (a
  store opened with a lower limit), and says ``complete=False`` when such a message comes
  after ``after``: what a read gives does not depend on when :meth:`Inbox.trim` last ran.
  The position (``top``) keeps the last seq.
- A private message is appended with :meth:`Inbox.append_chat`, which records its id
  ``(sender, msg_id)`` with the positions it got, atomically with the message (same
  transaction, same script call). The same id within the window (also later in the same
  write batch, also after the store was closed and opened again, or from another host on
  Redis) appends nothing and gets the first positions back, flagged a duplicate. An id
  is forgotten once its window is over (dropped at trim, or by its key's expiry).
- Epochs are opaque short strings; a user never written to reports the store's epoch and
  seq 0, so the position a client saw before its first message stays valid after it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

SEQ_MAX = 2**31 - 1
"""The largest per-user seq (the goim header's int32 ``seq`` field)."""

_MID_MIN, _MID_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

Item = tuple[int, int, bytes, int]
"""One message to append: ``(mid, op, body, sender)``."""


class Position(NamedTuple):
    """A point in one user's stream."""

    epoch: str  # changes when the store lost this user's data (or seq wrapped)
    seq: int  # last seq; 0 = empty stream


class Message(NamedTuple):
    seq: int  # per-user, starts at 1, consecutive, int32 (1..2**31-1)
    op: int  # goim operation of the push
    body: bytes
    at: float  # unix time of the append
    sender: int  # mid of the sending user for private chat; 0 = pushed by the backend


class Page(NamedTuple):
    messages: list[Message]  # seq > after, ascending, at most `limit`, none past the limits
    top: Position  # the stream's latest position when read
    complete: bool  # False if some message with seq > after was trimmed away or is past the limits


class Chatted(NamedTuple):
    """What :meth:`Inbox.append_chat` did."""

    positions: list[Position]  # each item's position; for a duplicate, those the first one got
    duplicate: bool  # the id was seen within its window: nothing was appended


@dataclass(frozen=True)
class InboxLimits:
    """How much of each user's stream is kept."""

    max_count: int = 1000  # messages per user; older ones are dropped at append
    max_age: float = 604800.0  # seconds; older messages (and idle device cursors) go at trim

    def __post_init__(self) -> None:
        if self.max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {self.max_count}")
        if not self.max_age > 0:
            raise ValueError(f"max_age must be positive, got {self.max_age}")


class InboxError(Exception):
    """The store failed (I/O error, corrupt file, closed); the message says which and where."""


class InboxUnknown(InboxError):
    """The store did not answer in time (or the connection broke after the request left): a
    write may or may not have been applied."""


class Inbox(Protocol):
    """Per-user message streams with device cursors (bounded by :class:`InboxLimits`)."""

    async def append(self, items: Sequence[Item]) -> list[Position]:
        """Append (mid, op, body, sender) items; per user the seqs are consecutive and follow
        the order of `items` (and of concurrent calls, in call order). Returns each item's
        position (epoch, its seq). When it returns, the items are durable for a durable store."""
        ...

    async def append_chat(self, sender: int, msg_id: str, items: Sequence[Item], window: float) -> Chatted:
        """Append a private message's items (the recipient's copy, the sender's own) unless
        `sender` already sent `msg_id` within the last `window` seconds; either way the items'
        positions, and whether it was such a retry (then the first positions, nothing appended).
        The id is recorded with the items, atomically, in call order with the other writes."""
        ...

    async def find_chat(self, sender: int, msg_id: str) -> list[Position] | None:
        """The positions `sender`'s message `msg_id` got, while its window lasts (else None)."""
        ...

    async def read(self, mid: int, after: int, limit: int) -> Page:
        """Up to `limit` messages with seq > `after`, oldest first, none older than max_age nor
        beyond the newest max_count; with the top, and whether nothing after `after` was trimmed
        or is past those limits."""
        ...

    async def top(self, mid: int) -> Position:
        """The user's latest position; ``(store epoch, 0)`` for a user never written to."""
        ...

    async def ack(self, mid: int, device: str, seq: int) -> int:
        """Move `device`'s cursor forward to seq (never backwards, never past top); returns the cursor."""
        ...

    async def cursors(self, mid: int) -> dict[str, int]:
        """Every device cursor of the user: device -> acked seq."""
        ...

    async def trim(self, now: float) -> int:
        """Drop messages (and device cursors) older than max_age, and chat ids whose window is
        over; returns how many messages."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the store; later calls raise InboxError."""
        ...


class InboxTestHooks(Protocol):
    """Test-only entry points an implementation offers to the contract suite."""

    async def force_seq(self, mid: int, seq: int) -> None:
        """Make the user's stream empty at its current epoch and `seq` (messages dropped,
        cursors kept), so the next append gets ``seq + 1``. Tests use it to reach the
        int32 wrap; nothing else may call it."""
        ...


def new_epoch() -> str:
    """A fresh opaque epoch: 8 random hex characters."""
    return secrets.token_hex(4)


def check_items(items: Sequence[Item]) -> None:
    """Refuse malformed items before they join a batch that other callers share."""
    for item in items:
        if len(item) != 4:
            raise ValueError(f"inbox item {item!r} is not (mid, op, body, sender)")
        mid, op, body, sender = item
        check_mid(mid)
        if type(op) is not int or not _INT32_MIN <= op <= _INT32_MAX:
            raise ValueError(f"inbox item op {op!r} is not an int32")
        if not isinstance(body, bytes):
            raise TypeError(f"inbox item body must be bytes, got {type(body).__name__}")
        if type(sender) is not int or not _MID_MIN <= sender <= _MID_MAX:
            raise ValueError(f"inbox item sender {sender!r} is not an int64 mid")


def check_chat(sender: int, msg_id: str, items: Sequence[Item], window: float) -> None:
    """Refuse a malformed private message before it joins a batch that other callers share."""
    check_mid(sender)
    check_text("chat id", msg_id)
    if not msg_id:
        raise ValueError("a chat id must not be empty")
    if not items:
        raise ValueError("a chat needs at least one item")
    if type(window) not in (int, float) or not window > 0:
        raise ValueError(f"chat window {window!r} is not a positive number of seconds")
    check_items(items)


def check_text(what: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"{what} {value!r} is not valid text") from None


def check_mid(mid: int) -> None:
    if type(mid) is not int or not _MID_MIN <= mid <= _MID_MAX:
        raise ValueError(f"mid {mid!r} is not an int64")


def check_read(mid: int, after: int, limit: int) -> None:
    check_mid(mid)
    if type(after) is not int:
        raise ValueError(f"after {after!r} is not an integer")
    if type(limit) is not int or limit < 0:
        raise ValueError(f"limit {limit!r} is not a non-negative integer")


def check_ack(mid: int, device: str, seq: int) -> None:
    check_mid(mid)
    check_text("device", device)
    if type(seq) is not int:
        raise ValueError(f"ack seq {seq!r} is not an integer")


def clamp_ack(old: int, seq: int, top: int) -> int:
    """The cursor after acking `seq`: never backwards, never past top."""
    return max(old, min(seq, top))


def read_floor(trimmed: int, top: int, limits: InboxLimits) -> int:
    """Every seq at or below this is gone for a reader: trimmed, or beyond the newest max_count
    (a store opened with a lower max_count than it was written with)."""
    return max(trimmed, top - limits.max_count)


def page_complete(after: int, floor: int, top: int, limit: int, seqs: Sequence[int]) -> bool:
    """Whether a read lost nothing after `after`. `seqs` are what it found: the unexpired
    messages after ``max(after, floor)``, oldest first, up to ``max(limit, 1)`` of them, out of
    a stored range ``(floor, top]`` without holes; so a seq missing from the start or the
    middle, or before top in a short page, expired."""
    if after < floor:
        return False
    found = len(seqs)
    if found and (seqs[0] != after + 1 or seqs[-1] != after + found):
        return False
    return found >= max(limit, 1) or after + found >= top


def encode_positions(positions: Sequence[Position]) -> str:
    """A chat id's positions as stored: ``"<epoch> <seq> <epoch> <seq>"`` (epochs have no spaces)."""
    return " ".join(f"{p.epoch} {p.seq}" for p in positions)


def decode_positions(text: str) -> list[Position]:
    parts = text.split()
    return [Position(parts[j], int(parts[j + 1])) for j in range(0, len(parts), 2)]
