"""`mpim worker` as a process: start-up, SIGTERM drain, boot errors, bad config."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

from mpim.client import connect_tcp, connect_ws
from mpim.proto import Op
from tests.support import ROOT, ServerProcess, run, write_config


def test_sigterm_tells_every_client_op6_then_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "worker", {"room": {"batch_delay": 5.0}}).start()
    try:

        async def scenario() -> None:
            tcp = await connect_tcp("127.0.0.1", server.tcp_port)
            await tcp.auth({"mid": 1, "room_id": "live://d"})
            ws = await connect_ws(server.ws_url)
            await ws.auth({"mid": 2, "room_id": "live://d"})
            server.signal(signal.SIGTERM)
            for client in (tcp, ws):
                frames = await client.expect_closed(timeout=10)
                assert [f.op for f in frames] == [Op.DISCONNECT_REPLY]

        run(scenario())
        assert server.wait(15) == 0
        log = server.log()
        assert "draining: told 2 clients to disconnect" in log
        assert "worker stopped" in log
    finally:
        server.stop()


def test_port_owned_by_another_program_is_a_boot_error(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = ServerProcess(tmp_path, "worker", {"tcp": {"bind": [f"127.0.0.1:{port}"]}})
        server.start(wait=False)
        assert server.wait(15) == 3
        assert f"port {port} on 127.0.0.1 is already in use" in server.log()
    finally:
        holder.close()


def test_bad_config_is_refused_with_file_key_and_reason(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.toml", {"protocol": {"heartbeat": 0}})
    proc = subprocess.run(
        [sys.executable, "-m", "mpim", "worker", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{path}: [protocol] heartbeat: 0.0 is below the minimum 0.1" in proc.stderr


def test_check_and_token_commands(tmp_path: Path) -> None:
    secret = "s" * 40
    path = write_config(tmp_path / "jwt.toml", {"auth": {"mode": "jwt", "secret": secret}})
    check = subprocess.run(
        [sys.executable, "-m", "mpim", "check", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and "ok" in check.stdout
    token = subprocess.run(
        [sys.executable, "-m", "mpim", "token", "-c", str(path), "--mid", "123", "--room", "live://1000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    from mpim.auth import Authenticator

    ident = Authenticator("jwt", secret).verify(token.encode())
    assert (ident.mid, ident.room) == (123, "live://1000")


def test_jwt_worker_end_to_end(tmp_path: Path) -> None:
    secret = "e2e-" + "q" * 40
    server = ServerProcess(tmp_path, "worker", {"auth": {"mode": "jwt", "secret": secret}}).start()
    try:
        token = subprocess.run(
            [sys.executable, "-m", "mpim", "token", "--secret", secret, "--mid", "5", "--room", "live://j"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()

        async def scenario() -> None:
            client = await connect_tcp("127.0.0.1", server.tcp_port)
            await client.auth(token)
            assert await client.heartbeat() == 1
            await client.close()

        run(scenario())
        assert "clients are trusted" not in server.log()
    finally:
        server.stop()


def test_sighup_reloads_live_settings_and_keeps_clients(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "worker", {}).start()
    try:

        async def scenario() -> None:
            client = await connect_tcp("127.0.0.1", server.tcp_port)
            await client.auth({"mid": 1})
            sections = dict(server.sections)
            sections["log"] = {"level": "warning"}
            sections["room"] = {"batch": 5}
            write_config(server.config, sections)
            server.signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await client.heartbeat() == 0
            Path(server.config).write_text("[protocol]\nheartbeat = 'x'\n")
            server.signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await client.heartbeat() == 0

        run(scenario())
        log = server.wait_log("reload refused, keeping the running config")
        assert "reloaded live settings" in log
    finally:
        server.stop()
