"""Sampling profiles of a server process during a measured phase (py-spy, from PyPI).

``--profile "worker 1"`` (or ``router``, ``bus``) runs ``py-spy record --format raw
--nonblocking`` (with ``--native``: C frames too) on that process for the measured seconds and prints the
functions where the samples were taken: *self* counts samples whose innermost
frame is the function, *total* those with the function anywhere on the stack.
Samples where the process was idle are not recorded (py-spy's default).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench.servers import Missing

_LOCATION = re.compile(r" \((.*?):\d+\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise Missing("py-spy is not installed; install it with: pip install py-spy")
    return found


def function(frame: str) -> str:
    """``Room.flush (mpim/worker/room.py:123)`` -> ``Room.flush (mpim/worker/room.py)``."""
    return _LOCATION.sub(lambda m: f" ({m.group(1)})", frame.strip())


def top_frames(raw: str, limit: int = 15) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, self %, total %)]) from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [function(f) for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    rows = [(name, 100 * n / samples, 100 * total[name] / samples) for name, n in own.most_common(limit)]
    return samples, rows


async def record(pid: int, seconds: float, out: Path, native: bool = False) -> str:
    """Record ``pid`` for ``seconds``; returns the raw collapsed stacks.

    ``native`` adds C frames (uvloop, libzmq, libc system calls); py-spy then has
    to pause the process for each sample, which slows it down a little.
    """
    mode = ["--native"] if native else ["--nonblocking"]
    proc = await asyncio.create_subprocess_exec(
        py_spy(), "record", "--format", "raw", *mode, "--duration", str(max(1, round(seconds))),
        "--pid", str(pid), "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return out.read_text()


def render(name: str, raw: str, limit: int = 15) -> str:
    samples, rows = top_frames(raw, limit)
    lines = [f"py-spy profile of `{name}` ({samples} samples while busy), top functions by self time:", ""]
    lines.append("| function | self % | total % |")
    lines.append("|---|---|---|")
    lines.extend(f"| `{fn}` | {own:.1f} | {tot:.1f} |" for fn, own, tot in rows)
    return "\n".join(lines)
