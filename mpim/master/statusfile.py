"""What the master tells the router about the host: a small JSON file in the run directory.

The master has no socket and no event loop, so it writes ``<run_dir>/master.json``
(atomically: a temporary file renamed over the old one) whenever its view
changes: its pid, the serving generation, the number of router shards, how many reloads were done, abandoned
or refused, how many children were restarted, and every child's pid, role, slot,
generation and state. The router reads it when it renders metrics or a console
snapshot (only when the file changed), which gives it reloads, restarts and the
pids whose CPU and memory it reports per role.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, NamedTuple

NAME = "master.json"


def path_in(run_dir: str) -> str:
    return os.path.join(run_dir, NAME)


class ChildInfo(NamedTuple):
    pid: int
    kind: str  # worker, router, bus
    slot: int  # workers: 1..N; routers: the shard
    generation: int
    state: str


class MasterStatus(NamedTuple):
    pid: int
    generation: int
    counts: dict[str, int]  # reload_done, reload_abandoned, reload_refused, restart_<kind>, hung_killed
    children: list[ChildInfo]
    shards: int = 1  # [router] shards (a file without it: 1)


class StatusFile:
    """The master's writer: rewrites the file only when the content changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._last: dict[str, Any] | None = None

    def update(self, status: dict[str, Any]) -> None:
        if status == self._last:
            return
        self._last = status
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(status, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:
            self._last = None  # try again next time (the run directory may be gone at exit)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def parse(data: bytes) -> MasterStatus:
    """The file's bytes -> :class:`MasterStatus`; ``ValueError`` if they are not one."""
    try:
        raw = json.loads(data)
        children = [
            ChildInfo(int(c["pid"]), str(c["kind"]), int(c["slot"]), int(c["generation"]), str(c["state"]))
            for c in raw["children"]
        ]
        counts = {str(k): int(v) for k, v in raw["counts"].items()}
        shards = int(raw.get("shards", 1))
        return MasterStatus(int(raw["pid"]), int(raw["generation"]), counts, children, shards)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # JSON and Unicode errors included
        raise ValueError(f"not a master status file: {exc}") from None


class StatusReader:
    """The router's reader: re-parses the file only when its modification time changed."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stamp: int | None = None
        self.status: MasterStatus | None = None

    def read(self) -> MasterStatus | None:
        if self.path is None:
            return None
        try:
            stamp = os.stat(self.path).st_mtime_ns
            if stamp != self._stamp:
                with open(self.path, "rb") as f:
                    self.status = parse(f.read())
                self._stamp = stamp
        except (OSError, ValueError):
            self.status = None
            self._stamp = None
        return self.status
