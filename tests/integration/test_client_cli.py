"""`mpim client` as a user runs it: ordinary failures are one line on stderr and exit code 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import ROOT, ServerProcess, free_port

SECRET = "client-cli-" + "z" * 32


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("client-cli")
    server = ServerProcess(tmp, "worker", {"auth": {"mode": "jwt", "secret": SECRET}}).start()
    yield server
    server.stop()


def client(*argv: str) -> str:
    """Run `mpim client`; assert a one-line failure with exit code 1; return that line."""
    done = subprocess.run(
        [sys.executable, "-m", "mpim", "client", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    return done.stderr.rstrip("\n")


def test_closed_port() -> None:
    port = free_port()
    assert (
        client(f"127.0.0.1:{port}") == f"mpim client: cannot connect to 127.0.0.1:{port}: connection refused"
    )
    line = client(f"ws://127.0.0.1:{port}/sub")
    assert line == f"mpim client: cannot connect to 127.0.0.1:{port}: connection refused"


def test_bad_address() -> None:
    line = client("localhost")
    assert line == "mpim client: bad address 'localhost': expected host:port or ws://host:port/sub"


@pytest.mark.parametrize("ws", [False, True], ids=["tcp", "ws"])
def test_refused_token(worker: ServerProcess, ws: bool) -> None:
    address = worker.ws_url if ws else f"127.0.0.1:{worker.tcp_port}"
    line = client(address, "--token", "not-a-jwt")
    assert (
        line == "mpim client: the server closed the connection after Auth: token refused (see the server log)"
    )
    worker.wait_log("auth refused from 127.0.0.1")


def test_websocket_url_on_the_tcp_port(worker: ServerProcess) -> None:
    where = f"127.0.0.1:{worker.tcp_port}"
    line = client(f"ws://{where}/sub")
    assert line == (
        f"mpim client: no WebSocket upgrade from {where} (did not receive a valid HTTP response)"
        f" — is that the TCP port? use {where} without ws://"
    )


def test_tcp_address_on_the_websocket_port(worker: ServerProcess) -> None:
    where = f"127.0.0.1:{worker.ws_port}"
    line = client(where)  # the worker answers 400 at once (its handshake timeout is 8 s)
    assert line == (
        f"mpim client: {where} answered in HTTP (HTTP/1.1 400 Bad Request), not goim"
        f" — is that the WebSocket port? use ws://{where}/sub"
    )


def test_wrong_websocket_path(worker: ServerProcess) -> None:
    where = f"127.0.0.1:{worker.ws_port}"
    line = client(f"ws://{where}/nope")
    assert line == f"mpim client: {where} refused the WebSocket upgrade of ws://{where}/nope: HTTP 404"


def test_silent_server_times_out() -> None:
    """A server that accepts and never answers (an older WebSocket port, say): --auth-timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the connect; nobody ever reads
        where = f"127.0.0.1:{silent.getsockname()[1]}"
        line = client(where, "--auth-timeout", "0.3")
    assert line == (
        f"mpim client: no Auth reply within 0.3s from {where} — is that the WebSocket port? use ws://{where}/sub"
    )
