"""CPU time, resident memory and start time of a process, from Linux's ``/proc/<pid>/stat``.

The router reads them for every process of its host (the master tells it their
pids, see :mod:`mpim.master.statusfile`), so one scrape shows each role's cost.
"""

from __future__ import annotations

import os
from typing import NamedTuple

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcStat(NamedTuple):
    cpu_seconds: float  # user + system
    rss_bytes: int
    start_time: float  # seconds since the epoch


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


BOOT_TIME = _boot_time()


def parse_stat(text: bytes) -> ProcStat:
    """One ``/proc/<pid>/stat`` line -> :class:`ProcStat` (``ValueError`` if it is not one)."""
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'.
    end = text.rfind(b")")
    if end < 0:
        raise ValueError("not a /proc stat line")
    fields = text[end + 2 :].split()
    if len(fields) < 22:
        raise ValueError("short /proc stat line")
    # fields[0] is field 3 (state): utime, stime = fields 14, 15; starttime = 22; rss = 24
    utime, stime = int(fields[11]), int(fields[12])
    start = int(fields[19])
    rss = int(fields[21])
    return ProcStat((utime + stime) / _TICKS, rss * _PAGE, BOOT_TIME + start / _TICKS)


def read(pid: int) -> ProcStat | None:
    """The process's figures, or None if it is gone (or this is not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except (OSError, ValueError):
        return None
