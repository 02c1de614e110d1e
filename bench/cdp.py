"""Headless Chromium driven over the DevTools protocol (CDP), with nothing but ``websockets``.

Used by the console's browser test and by ``bench/console_shot.py``. Chromium is
started with ``--remote-debugging-port=0`` in a fresh profile directory; it
writes the port it chose and the browser's WebSocket path to
``DevToolsActivePort`` there. One WebSocket to the browser carries every
command; a page is a target attached in "flat" mode, so its commands travel on
the same socket with a ``sessionId``.

:class:`BrowserError` says in one line why the browser could not start (not
installed, crashed, never opened its port), with the tail of its log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    """The browser could not be started or driven."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process, profile: str, ws: ClientConnection) -> None:
        self.proc = proc
        self.profile = profile
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def launch(cls, executable: str | None = None, timeout: float = 30.0) -> Browser:
        path = executable or find_chromium()
        if path is None:
            raise BrowserError("no chromium on PATH (Debian: apt-get install -y chromium)")
        profile = tempfile.mkdtemp(prefix="mpim-chromium-")
        log = open(os.path.join(profile, "chromium.log"), "wb")  # noqa: SIM115 (lives with the process)
        try:
            proc = await asyncio.create_subprocess_exec(
                path, *FLAGS, f"--user-data-dir={profile}", "about:blank", stdout=log, stderr=log
            )
        except OSError as exc:
            log.close()
            shutil.rmtree(profile, ignore_errors=True)
            raise BrowserError(f"cannot run {path}: {exc}") from None
        log.close()
        port_file = Path(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            if proc.returncode is not None:
                tail = _tail(profile)
                shutil.rmtree(profile, ignore_errors=True)
                raise BrowserError(f"{path} exited with {proc.returncode} at start: {tail}")
            text = port_file.read_text() if port_file.exists() else ""
            if text.count("\n") >= 1 and text.split("\n")[1]:
                port, ws_path = text.split("\n")[:2]
                break
            if time.monotonic() > deadline:
                tail = _tail(profile)
                await _kill(proc)
                shutil.rmtree(profile, ignore_errors=True)
                raise BrowserError(f"{path} did not open its DevTools port within {timeout:g}s: {tail}")
            await asyncio.sleep(0.05)
        try:
            ws = await connect(f"ws://127.0.0.1:{port}{ws_path}", max_size=None, ping_interval=None)
        except OSError as exc:
            await _kill(proc)
            shutil.rmtree(profile, ignore_errors=True)
            raise BrowserError(f"cannot connect to the browser's DevTools socket: {exc}") from None
        return cls(proc, profile, ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                future = self._waiting.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(BrowserError(f"CDP error: {message['error']}"))
                    else:
                        future.set_result(message.get("result", {}))
        except Exception as exc:  # the socket went away: fail whoever waits
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(BrowserError(f"the browser connection closed: {exc}"))
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(BrowserError("the browser connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        await self.ws.send(json.dumps(message))
        return await asyncio.wait_for(future, 30.0)

    async def new_page(self, url: str, width: int = 1280, height: int = 900) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        if url != "about:blank":
            await page.goto(url)
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5.0)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        await _kill(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]!r} failed in the page: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def goto(self, url: str) -> None:
        """Navigate and wait until that document has loaded."""
        await self.send("Page.navigate", {"url": url})
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        await self.wait_for(check, what=f"{url} to load")

    async def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        """Poll until the expression is truthy (an error counts as not yet); returns its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = await self.evaluate(expression)
            except BrowserError as exc:
                last = exc
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression} (last value {last!r})")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))


def _tail(profile: str) -> str:
    try:
        text = Path(profile, "chromium.log").read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-5:]) or "(empty log)"


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10.0)
