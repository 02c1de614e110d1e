"""The adaptive window alone: busy share of each period in, window out (loop time given, no clock)."""

from __future__ import annotations

import pytest

from mpim.worker.window import FIRST_STEP, HIGH, LOW, PERIOD, Window


def period(window: Window, start: float, load: float) -> float:
    """One period in which flushes kept the loop busy ``load`` of the time; returns its end."""
    end = round(start + PERIOD, 9)  # no float drift below a period
    window.flushed(end - load * PERIOD, end)
    return end


def test_no_decision_before_a_period_has_passed() -> None:
    window = Window(0.01, 0.25)
    window.flushed(0.0, PERIOD / 2)  # busy all along, but only half a period
    assert window.value == 0.01 and window.load == 0.0


def test_busy_doubles_up_to_the_ceiling() -> None:
    window = Window(0.01, 0.25)
    t, widths = 0.0, []
    for _ in range(6):
        t = period(window, t, 0.9)
        widths.append(window.value)
    assert widths == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.25, 0.25])
    assert window.load == pytest.approx(0.9)


def test_holds_between_the_thresholds_and_narrows_below() -> None:
    window = Window(0.01, 1.0)
    t = 0.0
    for _ in range(4):
        t = period(window, t, 0.95)
    assert window.value == pytest.approx(0.16)
    t = period(window, t, (LOW + HIGH) / 2)
    assert window.value == pytest.approx(0.16)
    t = period(window, t, LOW / 2)
    assert window.value == pytest.approx(0.08)


def test_idle_periods_narrow_once_each() -> None:
    window = Window(0.01, 1.0)
    t = 0.0
    for _ in range(5):
        t = period(window, t, 1.0)
    assert window.value == pytest.approx(0.32)
    window.flushed(t + 3 * PERIOD, t + 3 * PERIOD)  # three idle periods, then a short flush
    assert window.value == pytest.approx(0.04)
    window.flushed(t + 30, t + 30)
    assert window.value == 0.01  # the floor, exactly


def test_zero_floor_widens_by_a_first_step_and_narrows_to_zero() -> None:
    window = Window(0.0, 0.1)
    t = period(window, 0.0, 1.0)
    assert window.value == FIRST_STEP
    t = period(window, t, 1.0)
    assert window.value == 2 * FIRST_STEP
    for _ in range(5):
        t = period(window, t, 0.0)
    assert window.value == 0.0


def test_ceiling_below_floor_and_retune() -> None:
    window = Window(0.05, 0.01)
    assert window.ceiling == 0.05
    t = period(window, 0.0, 1.0)
    assert window.value == 0.05
    window.retune(0.0, 0.02)
    assert window.value == 0.02
    window.retune(0.03, 0.5)
    assert window.value == 0.03
    period(window, t, 1.0)
    assert window.value == 0.06
