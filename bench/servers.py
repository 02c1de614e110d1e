"""The servers under test, started by the runner on loopback ports: mpim master and nginx + Nchan.

Nothing is installed here: if nginx or the Nchan module is missing,
:class:`Missing` says what and how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import ProcessGroup
from mpim.config import to_toml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
PER_WORKER = 18_000  # sockets one server process may hold here (the open-file limit is 20,000)


class Missing(RuntimeError):
    """A tool the scenario needs is not installed."""


_GIVEN: set[int] = set()  # ports handed out by this process


def free_port() -> int:
    """A free port below the ephemeral range (32768+, where a client socket could take it before
    the server binds it), never the same one twice in this process."""
    for _ in range(1000):
        port = random.randrange(20_000, 32_000)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


async def wait_port(port: int, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


class Server:
    """A server process tree with a temp directory; subclasses say how to start it."""

    name = "server"

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.group: ProcessGroup | None = None
        self.log_path = self.tmp / "server.log"

    async def start(self) -> None:
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class MpimServer(Server):
    name = "mpim"

    def __init__(
        self, workers: int, overrides: dict[str, dict[str, Any]] | None = None, root: Path = ROOT
    ) -> None:
        super().__init__()
        self.workers = workers
        self.root = root
        self.tcp_port = free_port()
        self.ws_port = free_port()
        self.http_port = free_port()
        sections: dict[str, dict[str, Any]] = {
            "server": {"workers": workers},
            "tcp": {"bind": [f"127.0.0.1:{self.tcp_port}"]},
            "websocket": {"bind": [f"127.0.0.1:{self.ws_port}"]},
            "http": {"bind": f"127.0.0.1:{self.http_port}"},
            "ingress": {"zmq_bind": ""},
            "log": {"level": "warning", "file": str(self.log_path)},
        }
        if (root / "mpim" / "inbox").is_dir():  # (older checkouts have no inbox section)
            sections["inbox"] = {"path": str(self.tmp / "inbox.sqlite3")}
        for name, table in (overrides or {}).items():
            sections.setdefault(name, {}).update(table)
        self.sections = sections
        self.config = self.tmp / "bench.toml"
        self.config.write_text(to_toml(sections))

    async def start(self) -> None:
        env = dict(os.environ, PYTHONHASHSEED="0")
        if self.root != ROOT:  # another checkout's mpim package, for A/B runs
            env["PYTHONPATH"] = str(self.root)
        with open(self.tmp / "stdout.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mpim", "master", "-c", str(self.config),
                stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=self.root, env=env,
            )  # fmt: skip
        for port in (self.tcp_port, self.ws_port, self.http_port):
            await wait_port(port, self.proc)
        await asyncio.sleep(1.5)  # workers link to the router and the bus
        self.group = ProcessGroup(self.proc.pid)

    def worker_pids(self) -> list[int]:
        assert self.group is not None
        return self.group.pids("worker")

    def log_tail(self, chars: int = 2000) -> str:
        text = super().log_tail(chars)
        with contextlib.suppress(OSError):
            text += (self.tmp / "stdout.log").read_text(errors="replace")[-chars:]
        return text


def nchan_missing() -> str | None:
    """What is missing to run Nchan, with the command that installs it; None if all is there."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx and NCHAN_MODULE.exists():
        return None
    need = [p for p, ok in (("nginx-light", nginx), ("libnginx-mod-nchan", NCHAN_MODULE.exists())) if not ok]
    return (
        f"missing: {', '.join(need)} (nginx {'found' if nginx else 'not found'}, "
        f"{NCHAN_MODULE} {'found' if NCHAN_MODULE.exists() else 'not found'}). Install with:\n"
        "    sudo apt-get update && sudo apt-get install -y nginx-light libnginx-mod-nchan"
    )


class NchanServer(Server):
    name = "nchan"

    def __init__(self, workers: int) -> None:
        problem = nchan_missing()
        if problem:
            raise Missing(problem)
        super().__init__()
        self.workers = workers
        self.port = free_port()
        self.log_path = self.tmp / "error.log"
        conf = (BENCH / "nchan.conf").read_text()
        self.config = self.tmp / "nchan.conf"
        self.config.write_text(
            conf.format(module=NCHAN_MODULE, prefix=self.tmp, workers=workers, port=self.port)
        )

    async def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        with open(self.tmp / "stdout.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                nginx,
                "-p",
                str(self.tmp),
                "-c",
                str(self.config),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        await wait_port(self.port, self.proc)
        await asyncio.sleep(0.5)
        self.group = ProcessGroup(self.proc.pid)

    def worker_pids(self) -> list[int]:
        assert self.group is not None
        return [pid for pid, name in self.group.names.items() if "worker" in name]
