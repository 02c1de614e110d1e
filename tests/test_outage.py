"""An outage costs a few log lines, not one per failing call."""

from __future__ import annotations

import logging

import pytest

from mpim.outage import OutageLog


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_one_line_at_the_start_a_summary_per_interval_and_one_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = OutageLog(logging.getLogger("t"), "inbox write", "pushes are refused", every=10.0, clock=clock)
    outage.ok()  # nothing was wrong: nothing to say
    with caplog.at_level(logging.INFO, "t"):
        for i in range(142):  # 142 failing pushes in 5 s
            clock.t = i * 5 / 142
            outage.failed(f"Redis down #{i}")
        assert [(r.levelname, r.getMessage()[:40]) for r in caplog.records] == [
            ("ERROR", "inbox write failed: Redis down #0; pushe")
        ]
        clock.t = 12.0
        outage.failed("still down")
        assert caplog.records[-1].levelname == "WARNING"
        assert "142 more failures in the last 12s (last: still down)" in caplog.records[-1].getMessage()
        clock.t = 13.5
        outage.ok()
        outage.ok()
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING", "INFO"]
    assert caplog.records[-1].getMessage() == "inbox write works again after 13.5s (143 failures)"
    assert outage.failures == 143
    outage.failed("again")  # a new outage is logged again
    assert outage.down_since == 13.5
