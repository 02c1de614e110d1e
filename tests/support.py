"""Helpers for integration tests: free ports, config files, real server processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bench.servers import free_port  # (the tests import it from here)
from mpim.config import to_toml

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def run(test: Coroutine[Any, Any, T] | Callable[[], Awaitable[T]], timeout: float = 90.0) -> T:
    """Run a coroutine (or a function making one) on uvloop, failing it after ``timeout`` seconds."""
    import uvloop

    async def main() -> T:
        coro = test if asyncio.iscoroutine(test) else test()
        return await asyncio.wait_for(coro, timeout)

    return uvloop.run(main())


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    path.write_text(to_toml(sections))
    return path


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on TCP ``port`` (``ss`` shows it as Send-Q; run-tests.sh
    installs iproute2 when it is missing)."""
    if shutil.which("ss") is None:
        raise AssertionError("iproute2's ss is not installed (run-tests.sh installs it)")
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(out) >= 3 and out[0] == "LISTEN", f"no listener on port {port}: {out}"
    return int(out[2])  # State Recv-Q Send-Q Local Peer


class ServerProcess:
    """``mpim <command> -c <config>`` in a subprocess, with its log captured to a file."""

    def __init__(self, tmp: Path, command: str, sections: dict[str, dict[str, Any]]) -> None:
        self.tmp = tmp
        self.command = command
        self.tcp_port = free_port()
        self.ws_port = free_port()
        self.http_port = free_port()
        self.ingress = f"tcp://127.0.0.1:{free_port()}"
        base: dict[str, dict[str, Any]] = {
            "tcp": {"bind": [f"127.0.0.1:{self.tcp_port}"]},
            "websocket": {"bind": [f"127.0.0.1:{self.ws_port}"]},
            "http": {"bind": f"127.0.0.1:{self.http_port}"},
            "ingress": {"zmq_bind": self.ingress},
            "log": {"level": "debug"},
            "inbox": {"path": str(tmp / f"{command}-inbox.sqlite3")},
        }
        for name, table in sections.items():
            base.setdefault(name, {}).update(table)
        self.sections = base
        self.config = write_config(tmp / f"{command}.toml", base)
        self.log_path = tmp / f"{command}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/sub"

    def start(self, wait: bool = True) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mpim", self.command, "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        if wait:
            wait_port(self.tcp_port, proc=self.proc)
            wait_port(self.ws_port, proc=self.proc)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        """Wait until ``text`` is in the log ``count`` times; returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not {count} times in log:\n{self.log()[-3000:]}")

    def children(self) -> dict[int, str]:
        """pid -> process title of each child (``mpim: worker 1``, ``mpim: bus`` under the master)."""
        import psutil

        assert self.proc is not None
        titles: dict[int, str] = {}
        for child in psutil.Process(self.proc.pid).children():
            try:
                titles[child.pid] = " ".join(child.cmdline()).strip()
            except psutil.NoSuchProcess:
                continue
        return titles

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def local_config(**sections: dict[str, Any]) -> Any:
    """A validated Config listening on fresh loopback ports, with overrides."""
    from mpim import config

    base: dict[str, dict[str, Any]] = {
        "tcp": {"bind": [f"127.0.0.1:{free_port()}"]},
        "websocket": {"bind": [f"127.0.0.1:{free_port()}"]},
        "http": {"bind": f"127.0.0.1:{free_port()}"},
    }
    for name, table in sections.items():
        base.setdefault(name, {}).update(table)
    return config.replace(config.Config(), **base)


async def http_json(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
    """One HTTP/1.1 request to 127.0.0.1 (connection closed after); returns (status, JSON body)."""
    import json

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = await reader.read()
    finally:
        writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), json.loads(payload) if payload else None
