from __future__ import annotations

import math

import pytest

from mpim.worker.wheel import TimingWheel, WheelItem


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.expires = 0
        self.wheel_slot = -1


def make() -> tuple[TimingWheel, list[str]]:
    expired: list[str] = []

    def on_expire(item: WheelItem) -> None:
        expired.append(item.name)  # type: ignore[attr-defined]

    return TimingWheel(1.0, on_expire), expired


def test_expires_after_deadline() -> None:
    wheel, expired = make()
    wheel.add(Item("a"), 3)
    wheel.add(Item("b"), 1)
    wheel.advance()  # tick 0 was partly over when they were filed: 1 s has not surely passed
    assert expired == []
    wheel.advance()
    assert expired == ["b"]
    wheel.advance()
    assert expired == ["b"]
    wheel.advance()
    assert expired == ["b", "a"]
    assert len(wheel) == 0


def test_extend_defers_without_refiling_each_time() -> None:
    wheel, expired = make()
    item = Item("a")
    wheel.add(item, 2)
    slot = item.wheel_slot
    wheel.advance()
    for _ in range(10):
        wheel.extend(item, 2)  # heartbeats: no set operations
        assert item.wheel_slot == slot
    wheel.advance()
    wheel.advance()  # old slot due: re-filed, not expired
    assert expired == [] and item.wheel_slot == 4
    wheel.advance()
    assert expired == ["a"]


def test_remove() -> None:
    wheel, expired = make()
    item = Item("a")
    wheel.add(item, 1)
    wheel.remove(item)
    wheel.remove(item)
    wheel.advance()
    assert expired == [] and len(wheel) == 0


def test_items_lists_everything_filed() -> None:
    wheel, _ = make()
    items = [Item(str(i)) for i in range(5)]
    for i, item in enumerate(items):
        wheel.add(item, i + 1)
    assert {x.name for x in wheel.items()} == {"0", "1", "2", "3", "4"}  # type: ignore[attr-defined]


def test_fractional_seconds_round_up() -> None:
    wheel = TimingWheel(0.25, lambda item: None)
    assert wheel.ticks(0.1) == 1 and wheel.ticks(1.0) == 4 and wheel.ticks(1.01) == 5


def test_extend_to_an_earlier_deadline_refiles_at_once() -> None:
    wheel, expired = make()
    item = Item("a")
    wheel.add(item, 10)
    wheel.extend(item, 2)
    assert item.wheel_slot == 3
    wheel.advance()
    wheel.advance()
    assert expired == []
    wheel.advance()
    assert expired == ["a"] and len(wheel) == 0


@pytest.mark.parametrize("tick", [0.25, 1.0])
@pytest.mark.parametrize("seconds", [0.1, 0.25, 1.0, 1.01, 2.5, 8.0])
@pytest.mark.parametrize("extend", [False, True])
def test_deadlines_are_never_early_and_at_most_a_tick_late(tick: float, seconds: float, extend: bool) -> None:
    """Simulated clock: ``advance`` runs at every tick boundary, items are filed anywhere in a tick.

    A timeout filed at time ``t`` fires at the first boundary at or after ``t + seconds``, or
    within one more tick (plus the rounding of ``seconds`` up to whole ticks).
    """
    rounding = math.ceil(seconds / tick) * tick - seconds
    for sixteenth in range(16 * 3):
        filed_at = sixteenth * tick / 16  # 0, 1/16 tick ... across three ticks
        expired: list[WheelItem] = []
        wheel = TimingWheel(tick, expired.append)
        while (wheel.now + 1) * tick <= filed_at:
            wheel.advance()  # the boundaries that passed before filing
        item = Item("a")
        if extend:  # an Auth or heartbeat moves a handshake deadline
            wheel.add(item, 1000.0)
            wheel.extend(item, seconds)
        else:
            wheel.add(item, seconds)
        while not expired:
            wheel.advance()
        fired_at = wheel.now * tick  # the boundary whose advance expired it
        late = fired_at - (filed_at + seconds)
        assert -1e-9 <= late <= tick + rounding + 1e-9, (filed_at, fired_at)
