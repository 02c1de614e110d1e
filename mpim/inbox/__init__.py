"""Per-user inbox store: the seam reliable delivery (acks, offline inbox, resume) writes to.

:class:`Inbox` is the protocol; :class:`MemoryInbox`, :class:`SqliteInbox` and
:class:`~mpim.inbox.redis.RedisInbox` (Redis Streams, for several hosts) implement it and
pass the same contract suite (``tests/inbox/contract.py``). :func:`open_inbox` picks an
embedded one from the ``[inbox]`` config section; :func:`mpim.inbox.redis.open_redis_inbox`
opens the Redis one for ``[cluster] redis``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpim.inbox.base import (
    SEQ_MAX,
    Chatted,
    Inbox,
    InboxError,
    InboxLimits,
    InboxUnknown,
    Item,
    Message,
    Page,
    Position,
)
from mpim.inbox.memory import MemoryInbox
from mpim.inbox.sqlite import SqliteInbox

if TYPE_CHECKING:
    from mpim.config import InboxSection

__all__ = [
    "SEQ_MAX",
    "Chatted",
    "Inbox",
    "InboxError",
    "InboxLimits",
    "InboxUnknown",
    "Item",
    "MemoryInbox",
    "Message",
    "Page",
    "Position",
    "SqliteInbox",
    "open_inbox",
]

MEMORY_PATH = ":memory:"


def open_inbox(cfg: InboxSection, clock: Callable[[], float] = time.time, shared: bool = False) -> Inbox:
    """The store `cfg` names: memory for ``path = ":memory:"`` (not durable), else SQLite
    (``shared``: written by several processes at once, router shards)."""
    limits = InboxLimits(max_count=cfg.max_count, max_age=cfg.max_age)
    if cfg.path == MEMORY_PATH:
        return MemoryInbox(limits, clock)
    return SqliteInbox(
        cfg.path, limits, clock, durability=cfg.durability, group_window=cfg.group_window, shared=shared
    )
