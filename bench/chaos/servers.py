"""The servers of a chaos run: ``mpim master`` hosts and a redis-server, on 127.0.0.1 only.

A :class:`Host` is one ``mpim master`` with its own ports, config file, log and (one host)
SQLite inbox in a private directory; it can be killed whole (every process of its tree
with SIGKILL, reaped), paused (SIGSTOP to the tree), signalled, and started again on the
same config and data. Its processes are found by their titles (``mpim: worker 1``,
``mpim: router``, ``mpim: bus``) below the master's pid. With ``--server-root`` the master
runs the ``mpim`` package of another checkout (``PYTHONPATH``); the config keeps only the
keys that checkout's ``config.toml`` lists, so an older server accepts it.

:class:`Redis` is a redis-server of the run's own with AOF (``appendfsync always``), so a
kill -9 and a restart on the same port keep every acknowledged write, as a production
Redis with persistence does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from bench.procs import descendants, title
from bench.servers import free_port, wait_port
from mpim.config import to_toml

log = logging.getLogger("bench.chaos")


class StartRefused(RuntimeError):
    """The master exited at start (exit 3: a port taken, a name held by a live host...)."""


def known_keys(root: Path) -> dict[str, set[str]]:
    """The sections and keys the checkout at ``root`` knows (its config.toml lists them all)."""
    data = tomllib.loads((root / "config.toml").read_text())
    return {name: set(table) for name, table in data.items() if isinstance(table, dict)}


def filtered(
    sections: dict[str, dict[str, Any]], known: dict[str, set[str]]
) -> tuple[dict[str, Any], list[str]]:
    """``sections`` without what the server does not know; and the names dropped."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, table in sections.items():
        for key, value in table.items():
            if key in known.get(name, set()):
                kept.setdefault(name, {})[key] = value
            else:
                dropped.append(f"[{name}] {key}")
    return kept, dropped


def _die_with_the_harness() -> None:
    """In the child before exec: SIGKILL when the harness dies, so no server outlives a killed
    run (prctl PR_SET_PDEATHSIG; mpim's children follow their master)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Host:
    def __init__(self, label: str, root: Path, tmp: Path, sections: dict[str, dict[str, Any]]) -> None:
        self.label = label
        self.root = root
        self.dir = tmp / f"host-{label}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tcp_port, self.ws_port = free_port(), free_port()
        self.http_port, self.zmq_port = free_port(), free_port()
        self.log_path = self.dir / "server.log"
        self.config_path = self.dir / "mpim.toml"
        self.known = known_keys(root)
        base: dict[str, dict[str, Any]] = {
            "tcp": {"bind": [f"127.0.0.1:{self.tcp_port}"]},
            "websocket": {"bind": [f"127.0.0.1:{self.ws_port}"]},
            "http": {"bind": f"127.0.0.1:{self.http_port}"},
            "ingress": {"zmq_bind": f"tcp://127.0.0.1:{self.zmq_port}"},
            "log": {"level": "info", "file": str(self.log_path)},
            "inbox": {"path": str(self.dir / "inbox.sqlite3")},
        }
        for name, table in sections.items():
            base.setdefault(name, {}).update(table)
        self.sections, self.dropped = filtered(base, self.known)
        self.workers = int(self.sections.get("server", {}).get("workers", 1))
        self.write_config(self.sections)
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    def write_config(self, sections: dict[str, Any], extra: str = "") -> None:
        self.config_path.write_text(to_toml(sections) + extra)

    def changed(self, section: str, key: str, value: Any) -> dict[str, Any]:
        """The running sections with one value changed (only if the server knows the key)."""
        sections = {name: dict(table) for name, table in self.sections.items()}
        if key in self.known.get(section, set()):
            sections.setdefault(section, {})[key] = value
        return sections

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else 0

    async def start(self, timeout: float = 30.0) -> None:
        """Start the master and wait until its router answers; :class:`StartRefused` if it exits
        first (the workers may bind before the router refuses to boot)."""
        env = dict(os.environ, PYTHONPATH=str(self.root), PYTHONHASHSEED="0")
        self.starts += 1
        out = open(self.dir / f"stdout-{self.starts}.log", "wb")  # noqa: SIM115  (the child's, closed below)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mpim", "master", "-c", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                cwd=self.dir, env=env, preexec_fn=_die_with_the_harness,
            )  # fmt: skip
        finally:
            out.close()
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            for port in (self.tcp_port, self.ws_port, self.http_port):
                await wait_port(port, self.proc, timeout)
            await self._answers(timeout)
        except (RuntimeError, TimeoutError) as exc:
            if self.proc.returncode is None:
                await self.kill()
            raise StartRefused(f"host {self.label}: {exc}: {self._said(logged)}") from None

    async def _answers(self, timeout: float) -> None:
        """Until ``GET /mpim/workers`` answers (the router booted), while the master lives."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        request = b"GET /mpim/workers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"the master exited with {self.proc.returncode}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
                writer.write(request)
                head = await asyncio.wait_for(reader.readline(), 2)
                writer.close()
                if b" 200 " in head:
                    return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError("the router did not answer")

    def _said(self, since: int) -> str:
        """The last error the server logged since byte ``since`` of its log (or of its stdout)."""
        lines: list[str] = []
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            f.seek(since)
            lines = [ln.strip() for ln in f if " ERROR " in ln]
        if not lines:
            said = (self.dir / f"stdout-{self.starts}.log").read_text(errors="replace")
            lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
        return lines[0] if lines else "(nothing logged)"

    def tree(self) -> dict[int, str]:
        """pid -> title of the master and every process below it."""
        if not self.pid:
            return {}
        found: dict[int, str] = {}
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError):
                found[pid] = title(pid)
        return found

    def children(self, prefix: str) -> list[int]:
        """Live processes of the tree whose title starts with ``prefix`` (``worker``, ``router``, ``bus``)."""
        return [pid for pid, name in self.tree().items() if name.startswith(prefix) and alive(pid)]

    async def kill(self) -> list[int]:
        """kill -9 of the whole tree at once; returns when every one of them is gone."""
        pids = list(self.tree())
        signal_all(pids, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                await self.proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return pids

    def pause(self) -> list[int]:
        pids = list(self.tree())
        signal_all(pids, signal.SIGSTOP)
        return pids

    def signal(self, sig: int) -> None:
        if self.pid:
            os.kill(self.pid, sig)

    async def wait_exit(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None

    async def stop(self) -> None:
        """SIGTERM (a drain), then kill -9 whatever is left."""
        if self.pid:
            pids = list(self.tree())
            signal_all(pids, signal.SIGCONT)
            self.signal(signal.SIGTERM)
            if await self.wait_exit(20) is None:
                log.warning("host %s did not stop within 20s; killing it", self.label)
            signal_all([p for p in pids if alive(p)], signal.SIGKILL)
            await self.kill()

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0


class Redis:
    """A redis-server of the run's own on 127.0.0.1 with AOF (see the module docstring)."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.dir = tmp / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else 0

    async def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no"]
        argv += ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]
        argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_the_harness,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if await self.ping():
                return
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    async def ping(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            return (await asyncio.wait_for(reader.readline(), 1)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def pause(self, on: bool) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGSTOP if on else signal.SIGCONT)

    async def stop(self) -> None:
        if self.pid:
            self.pause(False)
            assert self.proc is not None
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()
