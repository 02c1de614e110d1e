"""CPU time and RSS of a server's processes, read from /proc.

CPU is ``utime + stime`` from ``/proc/<pid>/stat`` (clock ticks), RSS is
``VmRSS`` from ``/proc/<pid>/status``. A server is a root pid and every process
below it; each gets a name from its title (``mpim: worker 1`` -> ``worker 1``,
``mpim: master -c /etc/mpim.toml`` -> ``master``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds: utime and stime, fields 14 and 15 of /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    user, system = cpu_times(pid)
    return user + system


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def title(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    text = raw.decode(errors="replace")
    return text.removeprefix("mpim: ").partition(" -c ")[0]  # "master -c /path/config.toml" -> "master"


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out = [root]
    for pid in out:
        out.extend(sorted(children.get(pid, ())))
    return out


@dataclass
class Sample:
    cpu: dict[int, float] = field(default_factory=dict)
    sys: dict[int, float] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)


class ProcessGroup:
    """The processes of one server, named, sampled together."""

    def __init__(self, root: int, names: dict[int, str] | None = None) -> None:
        self.root = root
        self.names: dict[int, str] = names or {}
        self.refresh()

    def refresh(self) -> None:
        for pid in descendants(self.root):
            if pid not in self.names:
                try:
                    self.names[pid] = title(pid)
                except OSError:
                    continue

    def pids(self, prefix: str = "") -> list[int]:
        return [pid for pid, name in self.names.items() if name.startswith(prefix)]

    def sample(self) -> Sample:
        out = Sample()
        for pid in list(self.names):
            try:
                user, system = cpu_times(pid)
                out.cpu[pid] = user + system
                out.sys[pid] = system
                out.rss[pid] = rss_bytes(pid)
            except (OSError, ValueError, IndexError):
                continue
        return out


def cpu_delta(before: Sample, after: Sample, pids: list[int] | None = None) -> float:
    chosen = pids if pids is not None else list(after.cpu)
    return sum(after.cpu.get(p, 0.0) - before.cpu.get(p, 0.0) for p in chosen if p in after.cpu)


def per_process(group: ProcessGroup, before: Sample, after: Sample) -> list[tuple[str, float, float, int]]:
    """(name, CPU seconds in between, of which system, RSS after) per process."""
    rows = []
    for pid, name in group.names.items():
        if pid in after.cpu:
            cpu = after.cpu[pid] - before.cpu.get(pid, 0.0)
            system = after.sys.get(pid, 0.0) - before.sys.get(pid, 0.0)
            rows.append((name, cpu, system, after.rss.get(pid, 0)))
    return rows
