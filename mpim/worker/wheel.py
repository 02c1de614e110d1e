"""A hashed timing wheel for handshake and heartbeat deadlines.

Each item carries an absolute ``expires`` tick and the ``wheel_slot`` it is filed
under. A heartbeat only moves ``expires`` forward (one integer store); the item is
re-filed lazily when its old slot comes due. So an item costs one set operation
per timeout period, never one per heartbeat, and there are no per-connection
timer handles at all.

``now`` counts whole ticks elapsed, so when an item is filed the current tick is
already partly gone. A deadline is therefore filed one tick beyond the whole ticks
covering the timeout: it never fires early, and fires at most one tick (plus the
rounding of the timeout up to whole ticks) late, as long as :meth:`advance` is
called once per tick boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol


class WheelItem(Protocol):
    expires: int
    wheel_slot: int


class TimingWheel:
    def __init__(self, tick: float, on_expire: Callable[[WheelItem], None]) -> None:
        if tick <= 0:
            raise ValueError("tick must be positive")
        self.tick = tick
        self.now = 0
        self._slots: dict[int, set[WheelItem]] = {}
        self._on_expire = on_expire
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def items(self) -> list[WheelItem]:
        """Every filed item (the worker's open connections), in no order."""
        return [item for slot in self._slots.values() for item in slot]

    def ticks(self, seconds: float) -> int:
        """Whole ticks covering ``seconds`` (at least one)."""
        return max(1, math.ceil(seconds / self.tick))

    def deadline(self, seconds: float) -> int:
        """The tick at which ``seconds`` from now have surely passed (the current tick is partly over)."""
        return self.now + 1 + self.ticks(seconds)

    def add(self, item: WheelItem, seconds: float) -> None:
        """File ``item`` to expire ``seconds`` from now."""
        item.expires = self.deadline(seconds)
        self._file(item, item.expires)
        self._size += 1

    def extend(self, item: WheelItem, seconds: float) -> None:
        """Move the deadline. Later: one integer store, the wheel re-files it lazily.
        Earlier than the slot it is filed under (auth with a heartbeat timeout shorter
        than the handshake timeout): re-filed now."""
        item.expires = expires = self.deadline(seconds)
        if expires < item.wheel_slot:
            slot = self._slots.get(item.wheel_slot)
            if slot is not None and item in slot:
                slot.remove(item)
                if not slot:
                    del self._slots[item.wheel_slot]
                self._file(item, expires)

    def remove(self, item: WheelItem) -> None:
        slot = self._slots.get(item.wheel_slot)
        if slot is not None and item in slot:
            slot.remove(item)
            self._size -= 1
            if not slot:
                del self._slots[item.wheel_slot]

    def _file(self, item: WheelItem, at: int) -> None:
        at = max(at, self.now + 1)
        item.wheel_slot = at
        slot = self._slots.get(at)
        if slot is None:
            self._slots[at] = {item}
        else:
            slot.add(item)

    def advance(self) -> int:
        """Move one tick; expire due items, re-file those whose deadline moved. Returns expired."""
        self.now += 1
        due = self._slots.pop(self.now, None)
        if not due:
            return 0
        expired = 0
        for item in due:
            if item.expires > self.now:
                self._file(item, item.expires)
            else:
                self._size -= 1
                item.wheel_slot = -1
                expired += 1
                self._on_expire(item)
        return expired
