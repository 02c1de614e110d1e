"""Router set-up: its config keys, endpoints, the receive hook, and boot errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mpim import config
from mpim.config import ConfigError
from mpim.router.hook import HookError, Receiver, load_hook, log_message
from mpim.runtime import Endpoints
from tests.support import ROOT, free_port, listen_backlog, wait_port, write_config


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"bus": {"in_endpoint": "http://x"}}, "[bus] in_endpoint: 'http://x' is not a tcp://"),
        ({"router": {"endpoint": "10.0.0.1:5000"}}, "[router] endpoint"),
        ({"ingress": {"zmq_bind": "udp://1"}}, "[ingress] zmq_bind"),
        ({"router": {"receive_hook": "nocolon"}}, "[router] receive_hook: 'nocolon' is not module:function"),
        ({"router": {"receive_hook": "mod:1bad"}}, "is not module:function"),
        ({"router": {"receive_hook": "nope_x:f"}}, "[router] receive_hook: module 'nope_x' cannot be found"),
        ({"router": {"online_interval": 11}}, "[router] online_interval: 11.0 is above the maximum 10.0"),
        ({"http": {"max_header": 10}}, "[http] max_header: 10 is below the minimum 256"),
    ],
)
def test_bad_router_settings_are_refused(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.replace(config.Config(), **sections)
    assert message in str(info.value)


def test_configured_endpoints_override_the_run_dir() -> None:
    base = Endpoints.in_dir("/tmp/x")
    assert base.configured(config.Config()) is base
    cfg = config.replace(
        config.Config(),
        bus={"in_endpoint": "tcp://10.0.0.1:3120", "out_endpoint": "tcp://10.0.0.1:3121"},
        router={"endpoint": "tcp://10.0.0.1:3122"},
    )
    moved = base.configured(cfg)
    assert (moved.bus_in, moved.bus_out, moved.router) == (
        "tcp://10.0.0.1:3120",
        "tcp://10.0.0.1:3121",
        "tcp://10.0.0.1:3122",
    )
    assert moved.run_dir == base.run_dir


def test_load_hook() -> None:
    assert load_hook("") is log_message
    assert load_hook("tests.integration.hook_sink:record").__name__ == "record"
    with pytest.raises(HookError, match="cannot import no_such_module"):
        load_hook("no_such_module:f")
    with pytest.raises(HookError, match="has no callable missing"):
        load_hook("tests.integration.hook_sink:missing")


def test_receiver_survives_failing_and_async_hooks() -> None:
    seen: list[tuple[int, str, int, bytes]] = []

    def failing(mid: int, key: str, op: int, body: bytes) -> None:
        raise RuntimeError("boom")

    async def coro(mid: int, key: str, op: int, body: bytes) -> None:
        seen.append((mid, key, op, body))
        if body == b"bad":
            raise RuntimeError("async boom")

    async def main() -> tuple[int, int]:
        bad = Receiver(failing)
        bad(1, "k", 4, b"x")
        good = Receiver(coro)
        good(1, "k", 4, b"ok")
        good(2, "k", 4, b"bad")
        await good.close()
        return bad.failed, good.failed

    assert asyncio.run(main()) == (1, 1)
    assert seen == [(1, "k", 4, b"ok"), (2, "k", 4, b"bad")]


ROUTER_ALONE = (
    "import sys; from mpim import config, log; from mpim.router.main import run_router; "
    "from mpim.runtime import Endpoints; log.setup('info', '', 'router'); "
    "sys.exit(run_router(config.load(sys.argv[1]), Endpoints.in_dir(sys.argv[2])))"
)


def run_router(tmp: Path, **sections: dict[str, Any]) -> tuple[int, str]:
    """Run the router process entry alone (no master); returns its exit code and log."""
    run_dir = tmp / "run"
    run_dir.mkdir(exist_ok=True)
    base: dict[str, dict[str, Any]] = {
        "http": {"bind": f"127.0.0.1:{free_port()}"},
        "ingress": {"zmq_bind": f"tcp://127.0.0.1:{free_port()}"},
    }
    for name, table in sections.items():
        base.setdefault(name, {}).update(table)
    cfg = write_config(tmp / "router.toml", base)
    done = subprocess.run(
        [sys.executable, "-c", ROUTER_ALONE, str(cfg), str(run_dir)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    return done.returncode, done.stderr.decode()


@pytest.mark.parametrize(
    ("section", "key", "address", "message"),
    [
        (
            "ingress",
            "zmq_bind",
            "tcp://127.0.0.1:{port}",
            "router cannot start: cannot bind a ZeroMQ endpoint",
        ),
        (
            "http",
            "bind",
            "127.0.0.1:{port}",
            "router cannot start: port {port} on 127.0.0.1 is already in use",
        ),
    ],
    ids=["zmq_ingress", "http"],
)
def test_router_boot_error_when_its_port_is_taken(
    tmp_path: Path, section: str, key: str, address: str, message: str
) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        code, log = run_router(tmp_path, **{section: {key: address.format(port=port)}})
    assert code == 3
    assert message.format(port=port) in log


def test_router_boot_error_when_the_receive_hook_cannot_load(tmp_path: Path) -> None:
    code, log = run_router(tmp_path, router={"receive_hook": "json:no_such_hook"})
    assert code == 3
    assert "receive_hook 'json:no_such_hook': json has no callable no_such_hook" in log


def test_http_listener_keeps_its_backlog(tmp_path: Path) -> None:
    """create_server listens again; the router must not drop to asyncio's default of 100."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = free_port()
    cfg = write_config(
        tmp_path / "router.toml",
        {"http": {"bind": f"127.0.0.1:{port}"}, "ingress": {"zmq_bind": f"tcp://127.0.0.1:{free_port()}"}},
    )
    proc = subprocess.Popen([sys.executable, "-c", ROUTER_ALONE, str(cfg), str(run_dir)], cwd=ROOT)
    try:
        wait_port(port, proc=proc)
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert listen_backlog(port) == min(4096, somaxconn)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
