"""The router's end of the workers' links: a stream server, one protocol object per worker."""

from __future__ import annotations

import logging

from mpim import records
from mpim.router.core import Router
from mpim.stream import FrameProtocol

log = logging.getLogger("mpim.router")

_decode = records.Decoder(list[records.WorkerRecord])


class WorkerConn(FrameProtocol):
    def __init__(self, router: Router) -> None:
        super().__init__(router.loop)
        self.router = router

    def connection_made(self, transport: object) -> None:
        super().connection_made(transport)
        self.router.workers.attach(self)

    def on_frame(self, payload: bytes) -> None:
        try:
            batch = _decode(payload)
        except records.BadRecord as exc:
            self.router.stats["bad_records"] += 1
            log.warning("ignoring a malformed frame from a worker: %s", exc)
            return
        self.router.on_records(self, batch)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.router.workers.detach(self)
