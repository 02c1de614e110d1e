"""``mpim master`` with ``[router] shards = 2``: the process plumbing of router shards.

Two router processes with their titles, the push API and the ZeroMQ ingress served by
both on the same ports, a killed shard restarted alone, SIGHUP reaching both, a reload
that changes the number of shards refused. (Push delivery across shards is the router's
business and is tested there.)
"""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq

from tests.support import ServerProcess, wait_port, write_config

CONNECTIONS = 32  # per port: SO_REUSEPORT spreads them by hash; both shards get some (1 - 2**-31)


@pytest.fixture
def sharded(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path,
        "master",
        {"server": {"workers": 1, "graceful_timeout": 5.0}, "router": {"shards": 2}},
    )
    srv.start(wait=False)
    try:
        srv.wait_log("bound:", timeout=30)
        srv.wait_log("router 0 up:", timeout=30)
        srv.wait_log("router 1 up:", timeout=30)
        wait_port(srv.http_port, timeout=30, proc=srv.proc)
        yield srv
    finally:
        srv.stop()


def routers(srv: ServerProcess) -> dict[str, int]:
    """Title -> pid of the router children."""
    return {title: pid for pid, title in srv.children().items() if title.startswith("mpim: router")}


def serving(pids: list[int], port: int) -> set[int]:
    """The pids among `pids` that hold an established connection on local `port`."""
    out = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED:
                out.add(pid)
    return out


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_two_shards_each_serve_the_push_api_and_the_zeromq_ingress(sharded: ServerProcess) -> None:
    srv = sharded
    titles = routers(srv)
    assert sorted(titles) == ["mpim: router 0", "mpim: router 1"]
    pids = sorted(titles.values())
    assert "router-1\n" in srv.log()  # "router 1 up: ... workers link at ipc://<run dir>/router-1"
    # the push API: keep-alive connections, each answered, spread over both processes
    conns = [http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10) for _ in range(CONNECTIONS)]
    try:
        for conn in conns:
            conn.request("GET", "/metrics")
            answer = conn.getresponse()
            body = answer.read().decode()
            assert answer.status == 200
        assert serving(pids, srv.http_port) == set(pids)
        assert 'role="router",slot="0"' in body and 'role="router",slot="1"' in body
    finally:
        for conn in conns:
            conn.close()
    # the ZeroMQ ingress: one port, both shards accept on it and each answers its peers
    ctx = zmq.Context()
    port = int(srv.ingress.rsplit(":", 1)[1])
    try:
        dealers = []
        for _ in range(CONNECTIONS):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(srv.ingress)
            dealers.append(sock)
        for sock in dealers:
            sock.send(b"\xc1 not msgpack")
        for sock in dealers:
            assert sock.poll(10_000), "a ZeroMQ push client got no answer"
            assert msgpack.unpackb(sock.recv())["code"] == -400
        assert serving(pids, port) == set(pids)
    finally:
        ctx.destroy(linger=0)


def test_a_killed_shard_is_restarted_alone_and_sighup_reaches_both(sharded: ServerProcess) -> None:
    srv = sharded
    before = routers(srv)
    first, second = before["mpim: router 0"], before["mpim: router 1"]
    psutil.Process(second).kill()
    wait_for(lambda: routers(srv).get("mpim: router 1") not in (None, second))
    srv.wait_log("router 1 up:", count=2, timeout=30)
    after = routers(srv)
    assert after["mpim: router 0"] == first
    assert f"router 1 (pid {second}) killed by signal 9 (SIGKILL); restarting" in srv.log()
    assert srv.log().count(f"(pid {first})") == 1  # shard 0: its "started" line, no exit
    # a reload that changes a router section: both shards apply it in place
    sections = dict(srv.sections)
    sections["http"] = {**sections["http"], "max_body": 12345}
    write_config(srv.config, sections)
    srv.signal(signal.SIGHUP)
    srv.wait_log("reload done", timeout=30)
    srv.wait_log("router 0 reloaded", timeout=30)
    srv.wait_log("router 1 reloaded", timeout=30)
    # a reload that changes the number of shards is refused whole
    sections["router"] = {**sections["router"], "shards": 3}
    write_config(srv.config, sections)
    srv.signal(signal.SIGHUP)
    srv.wait_log("[router] shards 2 -> 3 needs a restart", timeout=30)
    assert routers(srv) == after
    assert srv.stop() == 0
    assert "router 0 stopped" in srv.log() and "router 1 stopped" in srv.log()
