"""The status pipe from a worker to the master: one short text line per event.

A worker writes ``ready`` once its ports are bound, ``beat`` from its event loop
at a fraction of ``[server] worker_timeout`` (so a hung loop stops beating), and
``told N`` when its drain told N clients to disconnect. Lines are far shorter than
PIPE_BUF, so each write is atomic; a full pipe drops the line instead of blocking.
"""

from __future__ import annotations

import os

READY = "ready"
BEAT = "beat"
TOLD = "told"

# A worker that cannot start (a port owned by another program, a bad address)
# exits with this code; the master then stops instead of fork-looping.
EXIT_BOOT_ERROR = 3


class StatusWriter:
    """The worker's end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, line: str) -> bool:
        """False once the master is gone (its end of the pipe is closed)."""
        try:
            os.write(self.fd, line.encode() + b"\n")
        except BlockingIOError:
            return True  # the master is behind; a later line will do
        except OSError:
            return False
        return True


class StatusReader:
    """The master's end for one worker: splits the bytes read into lines."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [line.decode(errors="replace") for line in lines if line]
