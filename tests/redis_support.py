"""A real ``redis-server`` per test (or per session), started and stopped by the tests.

Nothing assumes a Redis already running: :class:`RedisServer` starts its own on a free
TCP port (or on a unix socket in a private directory), without persistence unless a
test asks for it (``persist=True``: AOF with ``appendfsync always``, so a kill -9 keeps
every acknowledged write), waits until it answers PING and stops it. Fault tests call
:meth:`RedisServer.kill` (kill -9) and :meth:`RedisServer.restart` on the same port,
with or without the data. A server that cannot start fails the test with the reason
(never a skip): ``./run-tests.sh`` installs Debian's ``redis-server`` when missing.

Fixtures (imported by tests/conftest.py): ``redis_server`` (one shared server for the
session), ``redis_url`` (that server, flushed before the test), and servers of the test's
own for tests that kill or restart them: ``redis_private`` (no persistence),
``redis_persistent`` (AOF) and ``redis_unix`` (a unix socket only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import free_port

START_TIMEOUT = 10.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "redis-server is not installed: ./run-tests.sh installs it "
            "(apt-get install redis-server), or put one on PATH",
            pytrace=False,
        )
    return found


class RedisServer:
    """One redis-server process of the tests (see the module docstring)."""

    def __init__(self, workdir: Path, *, unix: bool = False, persist: bool = False) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.persist = persist
        self.socket_path = str(workdir / "redis.sock") if unix else ""
        self.port = 0 if unix else free_port()
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server is not running"
        return self.proc.pid

    def argv(self) -> list[str]:
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.data), "--logfile", str(self.log), "--daemonize", "no"]
        argv += ["--save", "", "--protected-mode", "no"]
        if self.persist:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.socket_path:
            argv += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        return argv

    def client(self) -> redis.Redis:
        """A synchronous client for checks and setup (one try per command, 1 s timeouts)."""
        once = Retry(NoBackoff(), 0)
        if self.socket_path:
            return redis.Redis(unix_socket_path=self.socket_path, socket_timeout=1.0, retry=once)
        return redis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0, retry=once)

    def start(self) -> RedisServer:
        with open(self.workdir / "redis.out", "ab") as out:  # what it says before its log is open
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        reason = "no answer to PING"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                reason = f"redis-server exited with {self.proc.returncode}"
                break
            try:
                with self.client() as conn:
                    if conn.ping():
                        return self
            except redis.RedisError as exc:
                reason = f"no answer to PING: {exc}"
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not start ({reason}); log: {self.log_tail()}", pytrace=False)

    def log_tail(self) -> str:
        lines = []
        for path in (self.workdir / "redis.out", self.log):
            with contextlib.suppress(OSError):
                lines += path.read_text(errors="replace").splitlines()[-5:]
        return " | ".join(line for line in lines if line.strip()) or "(empty)"

    def kill(self) -> None:
        """kill -9, and reap it: the port is free again when this returns."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def restart(self, *, keep_data: bool) -> None:
        """kill -9 and start again on the same port; without ``keep_data`` it starts empty."""
        if keep_data and not self.persist:
            raise ValueError("keep_data needs a server started with persist=True")
        self.kill()
        if not keep_data:
            shutil.rmtree(self.data)
            self.data.mkdir()
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


@contextlib.contextmanager
def running(*, unix: bool = False, persist: bool = False) -> Iterator[RedisServer]:
    """A started server in a private temporary directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="mpim-redis-") as workdir:
        server = RedisServer(Path(workdir), unix=unix, persist=persist)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests must not kill it (use redis_private)."""
    with running() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, flushed so the test starts from an empty Redis."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        pytest.fail(f"the shared redis-server is gone; log: {redis_server.log_tail()}", pytrace=False)
    with redis_server.client() as conn:
        conn.flushall()
    return redis_server.url


@pytest.fixture
def redis_private() -> Iterator[RedisServer]:
    """A redis-server of this test's own, without persistence (kill, restart empty)."""
    with running() as server:
        yield server


@pytest.fixture
def redis_persistent() -> Iterator[RedisServer]:
    """A redis-server of this test's own with AOF (restart(keep_data=True) keeps every write)."""
    with running(persist=True) as server:
        yield server


@pytest.fixture
def redis_unix() -> Iterator[RedisServer]:
    """A redis-server listening only on a unix socket in a private directory."""
    with running(unix=True) as server:
        yield server
