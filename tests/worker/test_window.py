"""The adaptive window alone: busy share of each period in, window out (loop time given, no clock)."""

from __future__ import annotations

import pytest

from mpim.worker.window import FIRST_STEP, HIGH, LOW, PERIOD, Window


def period(window: Window, start: float, load: float) -> float:
    """One period in which flushes kept the loop busy ``load`` of the time; returns its end."""
    end = round(start + PERIOD, 9)  # no float drift below a period
    window.flushed(end - load * PERIOD, end)
    return end


def periods(window: Window, start: float, loads: list[float]) -> tuple[float, list[float]]:
    """Several periods; returns the end and the window after each."""
    widths = []
    for load in loads:
        start = period(window, start, load)
        widths.append(window.value)
    return start, widths


def test_no_decision_before_a_period_has_passed() -> None:
    window = Window(0.01, 0.25)
    window.flushed(0.0, PERIOD / 2)  # busy all along, but only half a period
    assert window.value == 0.01 and window.load == 0.0


def test_busy_doubles_up_to_the_ceiling() -> None:
    window = Window(0.01, 0.25)
    _, widths = periods(window, 0.0, [1.0] * 8)
    # the smoothed load passes HIGH at the third busy period, then the window doubles each period
    assert widths == pytest.approx([0.01, 0.01, 0.02, 0.04, 0.08, 0.16, 0.25, 0.25])
    assert window.load > HIGH


def test_one_busy_period_is_noise_two_are_not() -> None:
    window = Window(0.01, 1.0)
    t, _ = periods(window, 0.0, [0.5] * 10)
    t, widths = periods(window, t, [1.0, 0.3, 1.0, 0.3])
    assert widths == [0.01] * 4
    _, widths = periods(window, t, [1.0, 1.0])
    assert widths == [0.01, 0.02]


def test_holds_between_the_thresholds_and_narrows_below() -> None:
    window = Window(0.01, 1.0)
    t, _ = periods(window, 0.0, [1.0] * 6)
    assert window.value == pytest.approx(0.16)
    t, widths = periods(window, t, [(LOW + HIGH) / 2] * 10)
    assert widths == pytest.approx([0.16] * 10)
    _, widths = periods(window, t, [0.0] * 3)
    assert widths == pytest.approx([0.08, 0.04, 0.02])  # the smoothed load is below LOW at once


def test_idle_periods_narrow_once_each() -> None:
    window = Window(0.01, 1.0)
    t, _ = periods(window, 0.0, [1.0] * 7)
    assert window.value == pytest.approx(0.32)
    window.flushed(t + 3 * PERIOD, t + 3 * PERIOD)  # three idle periods, then a short flush
    assert window.value == pytest.approx(0.04) and window.load < LOW
    window.flushed(t + 30, t + 30)
    assert window.value == 0.01  # the floor, exactly


def test_zero_floor_widens_by_a_first_step_and_narrows_to_zero() -> None:
    window = Window(0.0, 0.1)
    t, widths = periods(window, 0.0, [1.0] * 4)
    assert widths == [0.0, 0.0, FIRST_STEP, 2 * FIRST_STEP]
    t, _ = periods(window, t, [0.0] * 8)
    assert window.value == 0.0


def test_ceiling_below_floor_and_retune() -> None:
    window = Window(0.05, 0.01)
    assert window.ceiling == 0.05
    t, _ = periods(window, 0.0, [1.0] * 3)
    assert window.value == 0.05
    window.retune(0.0, 0.02)
    assert window.value == 0.02
    window.retune(0.03, 0.5)
    assert window.value == 0.03
    period(window, t, 1.0)
    assert window.value == 0.06
