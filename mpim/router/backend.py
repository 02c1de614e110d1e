"""Where client messages that are not private chat go: the receive hook, or the business backend.

``[upstream] url`` set: each message is POSTed to it (aiohttp, keep-alive pool), with
``mid``, ``key`` and ``op`` as query parameters and the client's body as the request
body; a 2xx answer's body is returned to the client in its reply frame. At most
``[upstream] concurrency`` requests are in flight; more wait, and one that cannot
start before ``[upstream] timeout`` — or whose answer does not come by then, or that
gets a non-2xx status — is an error for the client and one log line.

No URL: the Python receive hook (:mod:`mpim.router.hook`) gets the message and the
client gets an empty answer, as goim's echo.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mpim.config import Config
from mpim.router.hook import Receiver

log = logging.getLogger("mpim.upstream")


class BackendError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Backend:
    def __init__(self, cfg: Config, receiver: Receiver) -> None:
        self.receiver = receiver
        self.reconfigure(cfg)
        self._session: Any = None
        self._slots = asyncio.Semaphore(cfg.upstream.concurrency)
        self.stats = dict.fromkeys(("posted", "failed"), 0)

    def reconfigure(self, cfg: Config) -> None:
        self.url = cfg.upstream.url
        self.timeout = cfg.upstream.timeout

    @property
    def answers(self) -> bool:
        """Whether a client's reply waits for an answer (a backend URL is configured)."""
        return bool(self.url)

    async def deliver(self, mid: int, key: str, op: int, body: bytes) -> bytes:
        """Hand one message over; the backend's answer body (b"" from the hook)."""
        if not self.url:
            self.receiver(mid, key, op, body)
            return b""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._slots:
                    return await self._post(mid, key, op, body)
        except TimeoutError:
            self.stats["failed"] += 1
            log.warning("backend %s did not answer mid=%d op=%d within %gs", self.url, mid, op, self.timeout)
            raise BackendError(-504, "the backend did not answer in time") from None

    async def _post(self, mid: int, key: str, op: int, body: bytes) -> bytes:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        params = {"mid": str(mid), "key": key, "op": str(op)}
        try:
            async with self._session.post(self.url, params=params, data=body) as resp:
                answer: bytes = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self.stats["failed"] += 1
            log.warning(
                "backend %s failed for mid=%d op=%d: %s", self.url, mid, op, exc or type(exc).__name__
            )
            raise BackendError(-502, "the backend could not be reached") from None
        if not 200 <= status < 300:
            self.stats["failed"] += 1
            log.warning("backend %s answered %d for mid=%d op=%d", self.url, status, mid, op)
            raise BackendError(-502, f"the backend answered HTTP {status}")
        self.stats["posted"] += 1
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.receiver.close()
