"""The real ``mpim master`` as a subprocess, with real TCP and WebSocket goim clients."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.exceptions import ConnectionClosed

from mpim.auth import mint
from mpim.client import Client, ConnectionClosedError, connect_tcp, connect_ws
from mpim.listen import listen_socket
from mpim.proto import Op
from tests.support import ServerProcess, free_port, run, wait_port, write_config

Start = Callable[..., ServerProcess]
SECRET = "integration-secret-" + "x" * 16


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Start]:
    started: list[ServerProcess] = []

    def start(**sections: dict[str, Any]) -> ServerProcess:
        server: dict[str, Any] = {"workers": 2, "graceful_timeout": 15.0, "worker_timeout": 10.0}
        server.update(sections.pop("server", {}))
        srv = ServerProcess(tmp_path, "master", {"server": server, **sections})
        started.append(srv)
        srv.start(wait=False)
        srv.wait_log("bound:", timeout=30)
        wait_port(srv.http_port, timeout=30, proc=srv.proc)
        return srv

    yield start
    for srv in started:
        srv.stop()


# -- helpers -----------------------------------------------------------------------------


def workers(srv: ServerProcess) -> dict[int, str]:
    """pid -> title of the workers that serve new connections (not retiring ones)."""
    return {
        pid: title
        for pid, title in srv.children().items()
        if title.startswith("mpim: worker") and "retiring" not in title
    }


def listening(pid: int, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def client_ports_by_worker(srv: ServerProcess, pids: list[int]) -> dict[int, set[int]]:
    """Worker pid -> the client-side ports of the connections it holds."""
    owners: dict[int, set[int]] = {}
    for pid in pids:
        conns = psutil.Process(pid).net_connections(kind="tcp")
        owners[pid] = {
            c.raddr.port
            for c in conns
            if c.raddr and c.status == psutil.CONN_ESTABLISHED and c.laddr.port in (srv.tcp_port, srv.ws_port)
        }
    return owners


def local_port(client: Client) -> int:
    if client.is_ws:
        return int(client.conn.local_address[1])  # type: ignore[attr-defined]
    return int(client._writer.get_extra_info("sockname")[1])  # type: ignore[attr-defined]


async def connect(srv: ServerProcess, n: int, ws: bool = False, token: Any = None) -> list[Client]:
    async def one(i: int) -> Client:
        client = await (connect_ws(srv.ws_url) if ws else connect_tcp("127.0.0.1", srv.tcp_port))
        await client.auth(token if token is not None else {"mid": i + 1, "room_id": "live://1"}, timeout=15)
        return client

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def still_fine(clients: list[Client]) -> None:
    """Every client gets its heartbeat answered."""
    await asyncio.gather(*(c.heartbeat(timeout=15) for c in clients))


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def logged_at(log: str, needle: str) -> float:
    """The timestamp (seconds) of the first log line holding ``needle``."""
    line = next(line for line in log.splitlines() if needle in line)
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def push_room(srv: ServerProcess, body: bytes) -> None:
    """goim's HTTP push API: op 1000 to room live://1."""
    url = f"http://127.0.0.1:{srv.http_port}/goim/push/room?operation=1000&type=live&room=1"
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=15) as reply:
        assert json.load(reply)["code"] == 0


def rewrite(srv: ServerProcess, **changes: dict[str, Any]) -> None:
    sections = {name: dict(table) for name, table in srv.sections.items()}
    for name, table in changes.items():
        sections.setdefault(name, {}).update(table)
    write_config(srv.config, sections)


# -- tests -------------------------------------------------------------------------------


def test_connections_spread_over_all_workers(master: Start) -> None:
    srv = master()
    pids = list(workers(srv))
    assert len(pids) == 2
    assert srv.proc is not None and psutil.Process(srv.proc.pid).num_threads() == 1  # no loop, no zmq

    async def scenario() -> dict[int, set[int]]:
        clients = await connect(srv, 200)
        try:
            return client_ports_by_worker(srv, pids)
        finally:
            await close_all(clients)

    owners = run(scenario())
    assert all(owners[pid] for pid in pids), {pid: len(ports) for pid, ports in owners.items()}
    assert sum(len(ports) for ports in owners.values()) == 200


def test_killed_worker_is_back_within_2s_and_others_never_notice(master: Start) -> None:
    srv = master()
    before = workers(srv)

    async def scenario() -> int:
        clients = await connect(srv, 30) + await connect(srv, 10, ws=True)
        owners = client_ports_by_worker(srv, list(before))
        victim = max(before)
        survivor = next(pid for pid in before if pid != victim)
        on_survivor = [c for c in clients if local_port(c) in owners[survivor]]
        on_victim = [c for c in clients if local_port(c) in owners[victim]]
        assert on_survivor and on_victim
        title = before[victim]

        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        replacement = 0
        while not replacement and time.monotonic() - killed_at < 20:
            replacement = next(
                (
                    pid
                    for pid, t in workers(srv).items()
                    if t == title and pid != victim and listening(pid, srv.tcp_port)
                ),
                0,
            )
            await asyncio.sleep(0.02)
        assert replacement, "no replacement worker"
        # Measured by the master's own log (death reaped -> replacement bound), so the
        # test's psutil polling on a loaded machine does not count against the server.
        log = srv.wait_log(f"(pid {replacement}) up")
        back_after = logged_at(log, f"(pid {victim}) killed by signal 9") - logged_at(
            log, f"(pid {replacement}) up"
        )
        assert -back_after <= 2.0, f"replacement listening after {-back_after:.2f}s"

        await still_fine(on_survivor)
        for client in on_victim:
            with pytest.raises((ConnectionClosedError, ConnectionError, ConnectionClosed)):
                await client.heartbeat(timeout=15)
        fresh = await connect(srv, 4)
        await still_fine(fresh)
        await close_all(clients + fresh)
        return victim

    victim = run(scenario())
    log = srv.wait_log("restarting")
    assert f"(pid {victim}) killed by signal 9 (SIGKILL); restarting now" in log
    assert f"(pid {victim})" not in log.split("restarting now")[1]  # no second death


def test_hung_worker_is_killed_and_replaced(master: Start) -> None:
    srv = master(server={"worker_timeout": 2.0})
    before = workers(srv)
    victim = min(before)
    os.kill(victim, signal.SIGSTOP)  # its loop stops beating
    srv.wait_log(f"(pid {victim}) is hung", timeout=20)
    wait_for(lambda: len(workers(srv)) == 2 and victim not in workers(srv), 20, "a replacement")
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE


def test_reload_new_connections_get_new_settings_old_ones_stay(master: Start) -> None:
    srv = master()
    old_pids = set(workers(srv))

    async def before() -> list[Client]:
        return await connect(srv, 6) + await connect(srv, 6, ws=True)

    async def after(old: list[Client]) -> None:
        await still_fine(old)  # through the reload
        await asyncio.to_thread(push_room, srv, b"after the reload")  # retired workers still deliver
        for client in old:
            frame = await client.recv_push(timeout=15)
            assert (frame.op, frame.body) == (1000, b"after the reload")
        refused = await connect_tcp("127.0.0.1", srv.tcp_port)
        await refused.send(Op.AUTH, b'{"mid": 1}')  # a json token: new workers want jwt
        assert await refused.expect_closed(timeout=15) == []
        token = mint(SECRET, 7, "live://1", "", "web", (), 60)
        fresh = await connect(srv, 3, token=token) + await connect(srv, 3, ws=True, token=token)
        new_pids = set(workers(srv))
        assert not new_pids & old_pids
        owners = client_ports_by_worker(srv, list(new_pids))
        assert {local_port(c) for c in fresh} <= set().union(*owners.values())
        await still_fine(fresh + old)
        await close_all(fresh)

    loop = asyncio.new_event_loop()
    try:
        old = loop.run_until_complete(before())
        rewrite(srv, auth={"mode": "jwt", "secret": SECRET})
        srv.signal(signal.SIGHUP)
        srv.wait_log("reload done", timeout=30)
        srv.wait_log("retiring: not accepting", timeout=15, count=2)
        assert all(psutil.pid_exists(pid) for pid in old_pids)
        loop.run_until_complete(after(old))
        loop.run_until_complete(close_all(old))
    finally:
        loop.close()
    # the old workers leave once their last client did
    srv.wait_log("of generation 1 retired: exited with code 0", timeout=30, count=2)
    assert "changed: [auth]" in srv.log()


@pytest.mark.parametrize(
    "broken",
    ["[server\nworkers = 2\n", "[server]\nworkers = -1\n", "[tcp]\nno_such_key = 1\n"],
    ids=["not-toml", "out-of-range", "unknown-key"],
)
def test_reload_with_a_broken_config_keeps_serving(master: Start, broken: str) -> None:
    srv = master()
    pids = set(workers(srv))
    srv.config.write_text(broken)
    srv.signal(signal.SIGHUP)
    log = srv.wait_log("reload refused, keeping the running config")
    assert str(srv.config) in log.split("reload refused")[1]

    async def scenario() -> None:
        clients = await connect(srv, 4) + await connect(srv, 2, ws=True)
        await still_fine(clients)
        await close_all(clients)

    run(scenario())
    assert set(workers(srv)) == pids
    assert "reload begin" not in srv.log()


def test_reload_onto_a_taken_port_is_abandoned_and_the_old_generation_serves(master: Start) -> None:
    srv = master()
    pids = set(workers(srv))
    other = free_port()
    blocker = listen_socket(f"127.0.0.1:{other}", reuse_port=False)
    try:
        rewrite(srv, tcp={"bind": [f"127.0.0.1:{srv.tcp_port}", f"127.0.0.1:{other}"]})
        srv.signal(signal.SIGHUP)
        log = srv.wait_log("reload abandoned", timeout=30)
        assert f"port {other}" in log
        assert "generation 1 keeps serving" in log
    finally:
        blocker.close()

    async def scenario() -> None:
        clients = await connect(srv, 4) + await connect(srv, 2, ws=True)
        await still_fine(clients)
        await close_all(clients)

    run(scenario())
    wait_for(lambda: set(workers(srv)) == pids, 20, "the new generation to leave")


def test_sigterm_tells_every_client_op6_then_exits_0(master: Start) -> None:
    graceful = 10.0
    srv = master(server={"graceful_timeout": graceful})
    sent = 0.0

    async def scenario() -> list[list[int]]:
        nonlocal sent
        clients = await connect(srv, 20) + await connect(srv, 20, ws=True)
        srv.signal(signal.SIGTERM)
        sent = time.monotonic()
        got = await asyncio.gather(*(c.expect_closed(timeout=15) for c in clients))
        return [[frame.op for frame in frames] for frames in got]

    ops = run(scenario())
    assert all(seen and seen[-1] == Op.DISCONNECT_REPLY for seen in ops), ops
    assert srv.wait(timeout=graceful) == 0
    assert time.monotonic() - sent < graceful  # an upper bound of when the master exited
    log = srv.log()
    assert "drain done: told 40 clients to disconnect (op 6); exit 0" in log
    drain = log.index("drain begin")
    assert log.index("router (pid", drain) < log.index("bus (pid", drain)  # router and bus last


def test_sigint_stops_at_once(master: Start) -> None:
    srv = master()
    children = srv.children()

    async def scenario() -> None:
        clients = await connect(srv, 5)
        srv.signal(signal.SIGINT)
        await asyncio.gather(*(c.expect_closed(timeout=15) for c in clients))

    run(scenario())
    assert srv.wait(timeout=15) == 0
    assert len(children) == 4
    assert not [pid for pid in children if psutil.pid_exists(pid)]


@pytest.mark.parametrize(
    ("reuse_port", "where"),
    [(False, "tcp"), (True, "tcp"), (False, "ingress")],
    ids=["plain", "so_reuseport", "zmq_ingress"],
)
def test_taken_port_exits_at_once_naming_it(tmp_path: Path, reuse_port: bool, where: str) -> None:
    taken = free_port()
    blocker = listen_socket(f"127.0.0.1:{taken}", reuse_port=reuse_port)
    section = (
        {"tcp": {"bind": [f"127.0.0.1:{taken}"]}}
        if where == "tcp"
        else {"ingress": {"zmq_bind": f"tcp://127.0.0.1:{taken}"}}
    )
    srv = ServerProcess(tmp_path, "master", section)
    try:
        srv.start(wait=False)
        code = srv.wait(timeout=20)
    finally:
        blocker.close()
        srv.stop()
    log = srv.log()
    assert code == 3, log
    assert f"port {taken}" in log
    assert "started" not in log and "up (generation" not in log  # nothing was forked


def test_ttin_adds_a_worker_and_ttou_removes_one(master: Start) -> None:
    srv = master()
    srv.signal(signal.SIGTTIN)
    srv.wait_log(") up (generation 1)", timeout=20, count=3)
    assert sorted(workers(srv).values()) == ["mpim: worker 1", "mpim: worker 2", "mpim: worker 3"]
    srv.signal(signal.SIGTTOU)
    srv.wait_log("retired: exited with code 0", timeout=20)
    wait_for(lambda: sorted(workers(srv).values()) == ["mpim: worker 1", "mpim: worker 2"], 20, "two")


def test_usr1_reopens_log_files_in_master_and_children(tmp_path: Path) -> None:
    path = tmp_path / "mpim.log"
    srv = ServerProcess(tmp_path, "master", {"server": {"workers": 2}, "log": {"file": str(path)}})
    try:
        srv.start()
        wait_for(lambda: path.exists() and "bound:" in path.read_text(), 30, "the log file")
        children = srv.children()
        rotated = tmp_path / "mpim.log.1"
        path.rename(rotated)
        srv.signal(signal.SIGUSR1)
        wait_for(lambda: path.exists() and "reopening log files" in path.read_text(), 10, "a new log file")

        async def bad_auth() -> None:
            for _ in range(4):  # reaches both workers with high probability; one is enough
                client = await connect_tcp("127.0.0.1", srv.tcp_port)
                await client.send(Op.AUTH, b"not json")
                await client.expect_closed(timeout=15)

        time.sleep(0.5)  # the children handle SIGUSR1 asynchronously
        run(bad_auth())
        wait_for(lambda: "auth refused" in path.read_text(), 10, "a worker's line in the new file")
        assert "auth refused" not in rotated.read_text()
        assert srv.children() == children  # nobody died of SIGUSR1 (router and bus included)
    finally:
        assert srv.stop() == 0
