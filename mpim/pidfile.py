"""Finding the master for ``mpim reload`` / ``mpim stop``: its pid file or its process title.

``[server] pid_file`` (off by default): ``mpim master`` writes its pid there at
start and removes it at exit. Without a pid file the master is found by its
process title, ``mpim: master -c /absolute/path/to/config.toml`` (set in
:mod:`mpim.master.run`), read from ``/proc/<pid>/cmdline``: exactly one process
must carry it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

TITLE = "mpim: master"


class MasterNotFound(Exception):
    """No single running master matches; the message says what was looked for."""


class PidFileError(Exception):
    """The pid file cannot be written; the message names it."""


def master_title(config_path: str | None) -> str:
    """The title the master started with ``-c config_path`` carries (keep in step with master/run.py)."""
    return f"{TITLE} -c {os.path.abspath(config_path)}" if config_path else TITLE


@contextlib.contextmanager
def held(path: str) -> Iterator[None]:
    """Write this process's pid to ``path`` ("" = do nothing) while the block runs; remove it after.

    Raises :class:`PidFileError` if it cannot be written. Only the writer removes it
    (not a forked child), and only while it still names the writer.
    """
    if not path:
        yield
        return
    pid = os.getpid()
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PidFileError(f"cannot write the pid file {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        if os.getpid() == pid and read_pid(path) == pid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def read_pid(path: str) -> int | None:
    """The pid in ``path``; None if the file is missing or does not hold one."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(32).strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def title_of(pid: int, proc: str = "/proc") -> str | None:
    """The command line of ``pid`` as one string (a process title), or None if it is gone."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def with_title(title: str, proc: str = "/proc") -> list[int]:
    """Every pid whose process title is exactly ``title``."""
    want = title.encode()
    pids = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/cmdline", "rb") as f:
                if f.read().rstrip(b"\0") == want:
                    pids.append(int(entry))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return sorted(pids)


def check_master(pid: int, proc: str = "/proc", source: str = "") -> int:
    """``pid`` if it is a running mpim master; ``source`` says where the pid came from."""
    origin = f"{source} names pid {pid}" if source else f"pid {pid}"
    title = title_of(pid, proc)
    if title is None:
        raise MasterNotFound(f"{origin}, which is not running" + (" (a stale pid file)" if source else ""))
    if not title.startswith(TITLE):
        raise MasterNotFound(f"{origin}, which is not an mpim master: {title[:80]!r}")
    return pid


def find_master(config_path: str | None, pid_file: str, proc: str = "/proc") -> int:
    """The pid of the master that runs with ``config_path``: from ``pid_file`` if set, else by title."""
    if pid_file:
        pid = read_pid(pid_file)
        if pid is None:
            raise MasterNotFound(
                f"no pid in the pid file {pid_file} ([server] pid_file): is the master running?"
            )
        return check_master(pid, proc, source=f"the pid file {pid_file}")
    title = master_title(config_path)
    pids = with_title(title, proc)
    if not pids:
        raise MasterNotFound(f"no process has the title {title!r}: is the master running with this config?")
    if len(pids) > 1:
        listed = ", ".join(map(str, pids))
        raise MasterNotFound(f"{len(pids)} processes have the title {title!r} (pids {listed}): pass --pid")
    return pids[0]
