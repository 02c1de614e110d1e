"""How long processes waited for a CPU: the run-queue delay from ``/proc/<pid>/schedstat``.

``/proc/<pid>/schedstat`` holds three numbers for the process's main thread: time
on a CPU (ns), time runnable but waiting on a run queue (ns), and time slices.
On a shared machine the second one says how much of a latency figure is the
scheduler's: a server process that waited seconds for a CPU during a phase
delivered late because others were running, not because it was slow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path


def run_delay(pid: int) -> float:
    """Seconds ``pid``'s main thread has waited on a run queue since it started."""
    fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(fields[1]) / 1e9


def sample(pids: Iterable[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[pid] = run_delay(pid)
    return out


def waited(before: dict[int, float], after: dict[int, float]) -> float:
    """Run-queue seconds between two samples, summed over the processes in both."""
    return sum(after[pid] - before[pid] for pid in after if pid in before)
