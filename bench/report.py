"""Tables on the terminal and sections appended to bench/RESULTS.md."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.servers import ROOT

RESULTS = ROOT / "bench" / "RESULTS.md"
Row = Sequence[object]


def fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: Row, rows: Sequence[Row]) -> str:
    """A Markdown table (readable on the terminal as it is)."""
    cells = [[fmt(c) for c in header], *[[fmt(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def commit() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=all", "--", "mpim")
    return f"{head}+uncommitted mpim/ changes" if dirty else head


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB, Linux {platform.release()}, "
        f"CPython {platform.python_version()}"
    )


def command_line() -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


LOAD_AT_START = os.getloadavg()


def append(title: str, body: str, path: Path = RESULTS) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.2f}" for x in LOAD_AT_START)
    text = (
        f"\n### {title}\n\n"
        f"{now} · commit {commit()} · {machine()} · load average (1/5/15 min) at start {load}\n\n"
        f"Command: `{command_line()}`\n\n{body.rstrip()}\n"
    )
    with open(path, "a", encoding="utf-8") as out:
        out.write(text)


def append_record(heading: str, module: str, note: str, body: str, stamp: str = "") -> None:
    """Append a stand-alone program's run (``python -m <module>``) under ``heading`` (a ``##``
    section, written once): the stamp line (time, commit, machine, load; ``stamp`` added), the
    command and ``note``, then ``body``."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.2f}" for x in LOAD_AT_START)
    command = f"python -m {module} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = "" if heading in RESULTS.read_text(encoding="utf-8") else f"\n{heading}\n"
    text += (
        f"\n{now} · commit {commit()} · {machine()}{stamp} · load average (1/5/15 min) at start {load}\n\n"
        f"Command (repository root, venv active): `{command}`. {note}\n\n{body}\n"
    )
    with open(RESULTS, "a", encoding="utf-8") as out:
        out.write(text)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
