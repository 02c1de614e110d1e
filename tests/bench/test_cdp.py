"""The DevTools driver says clearly why a browser could not start (the console test relies on it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.cdp import Browser, BrowserError


def test_a_missing_browser_is_named(tmp_path: Path) -> None:
    with pytest.raises(BrowserError, match="cannot run"):
        asyncio.run(Browser.launch(str(tmp_path / "no-such-chromium")))


def test_a_browser_that_exits_at_once_is_reported_with_its_code(tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 7\n")
    fake.chmod(0o755)
    with pytest.raises(BrowserError, match=r"exited with 7 at start: cannot open display"):
        asyncio.run(Browser.launch(str(fake)))


def test_a_browser_that_never_opens_its_port_times_out(tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(BrowserError, match="did not open its DevTools port"):
        asyncio.run(Browser.launch(str(fake), timeout=0.5))
