"""The README's "Trying it" walk-through, against a real `mpim master`: `mpim client`
receives room, user and broadcast pushes sent with plain HTTP requests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.cluster import start_master
from tests.support import ROOT


def post(port: int, target: str, body: bytes | None) -> bytes:
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{target}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return bytes(answer.read())


def ready(port: int) -> bool:
    """Both clients counted and both workers on the bus (a push to everyone before a worker's
    bus fence is through is refused with -503)."""
    if b'"conn_count":2' not in post(port, "/goim/online/total", None):
        return False
    workers = json.loads(post(port, "/mpim/workers", None))
    return len(workers) == 2 and all(w["bus"] for w in workers)


def test_trying_it(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 2)
    clients = []
    try:
        for address, mid in ((f"127.0.0.1:{srv.tcp_port}", 123), (srv.ws_url, 124)):
            cmd = [sys.executable, "-m", "mpim", "client", address, "--mid", str(mid)]
            cmd += ["--room", "live://1000", "--accepts", "1000,1001", "--count", "3"]
            clients.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True))
        for client in clients:
            assert client.stdout is not None
            assert client.stdout.readline().startswith("connected to")
        deadline = time.monotonic() + 15
        while not ready(srv.http_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b'"code":0' in post(
            srv.http_port, "/goim/push/room?operation=1000&type=live&room=1000", b"hello room"
        )
        post(srv.http_port, "/goim/push/mids?operation=1000&mids=123&mids=124", b"hello user")
        post(srv.http_port, "/goim/push/all?operation=1001", b"hello all")
        for client in clients:
            out, _ = client.communicate(timeout=15)
            pushes = [line for line in out.splitlines() if line.startswith("push")]
            # room pushes wait up to [room] batch_delay; order is kept per room, not across kinds
            assert sorted(pushes) == [
                "push op=1000 body=hello room",
                "push op=1000 body=hello user",
                "push op=1001 body=hello all",
            ]
            assert client.returncode == 0
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        srv.stop()
