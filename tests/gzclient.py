"""A go-zero chat client for the tests: JSON text frames over the ``websockets`` library."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

Frame = dict[str, Any]


def token_url(base: str, token: str | dict[str, Any]) -> str:
    text = token if isinstance(token, str) else json.dumps(token)
    return f"{base}?token={urllib.parse.quote(text)}"


class GzClient:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, url: str, token: str | dict[str, Any], via: str = "query") -> GzClient:
        """``via``: where the token goes, "query" (``?token=``), "bearer" or "subprotocol"."""
        text = token if isinstance(token, str) else json.dumps(token)
        if via == "query":
            conn = await connect(token_url(url, text), open_timeout=10)
        elif via == "bearer":
            conn = await connect(url, additional_headers={"Authorization": f"Bearer {text}"}, open_timeout=10)
        else:
            conn = await connect(url, subprotocols=[Subprotocol(text)], open_timeout=10)
        return cls(conn)

    async def send(self, **fields: Any) -> None:
        await self.conn.send(json.dumps(fields))

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def recv(self, timeout: float = 5.0) -> Frame:
        if self.frames:
            return self.frames.pop(0)
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        frame: Frame = json.loads(raw)
        return frame

    async def next(self, match: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame that ``match`` es; the others read meanwhile stay queued in order."""
        skipped: list[Frame] = []
        try:
            while True:
                frame = await self.recv(timeout)
                if match(frame):
                    return frame
                skipped.append(frame)
        finally:
            self.frames[:0] = skipped

    async def push(self, timeout: float = 5.0) -> Frame:
        return await self.next(lambda f: f["frameType"] == 0 and f["method"] == "push", timeout)

    async def ack_pushes(self, seq: int) -> None:
        await self.send(frameType=2, method="push", ackSeq=seq)

    async def nothing(self, quiet: float = 0.3) -> None:
        try:
            frame = await self.recv(quiet)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")

    async def closed(self, timeout: float = 5.0) -> list[Frame]:
        """Read until the server closes; returns the frames received meanwhile."""
        got: list[Frame] = list(self.frames)
        self.frames.clear()
        try:
            while True:
                got.append(json.loads(await asyncio.wait_for(self.conn.recv(), timeout)))
        except ConnectionClosed:
            return got

    async def close(self) -> None:
        await self.conn.close()
