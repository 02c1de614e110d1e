"""Safe by default, end to end with a real master: the push API key, TLS with certificate rotation by
SIGHUP, the client IP from a PROXY header in the router's tables, a key held by another user."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import ssl
from pathlib import Path
from typing import Any

import pytest

from mpim.client import connect_tcp, connect_ws
from mpim.proto import Op
from mpim.proxyproto import header_v2
from mpim.push import Pusher, PushError
from tests.certs import issue
from tests.integration.cluster import Cluster, pushes, start_master, until
from tests.support import free_port, run

KEY = "integration-api-key-0123456789"


async def http(port: int, target: str, headers: str = "", body: bytes = b"") -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    method = "POST" if body else "GET"
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = await reader.read()
    writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), json.loads(payload)


def test_push_api_off_loopback_refuses_without_the_key_and_accepts_with_it(tmp_path: Path) -> None:
    http_port, zmq_port = free_port(), free_port()
    srv = start_master(
        tmp_path,
        1,
        http={"bind": f"0.0.0.0:{http_port}", "api_key": KEY},
        ingress={"zmq_bind": f"tcp://0.0.0.0:{zmq_port}", "insecure_open": True},
    )
    srv.http_port = http_port

    async def main() -> None:
        client = await connect_tcp("127.0.0.1", srv.tcp_port)
        await client.auth({"mid": 1, "key": "k1", "room_id": "live://1", "accepts": [1000]})
        room = "/goim/push/room?operation=1000&type=live&room=1"
        status, answer = await http(http_port, room, body=b"no key")
        assert status == 401 and answer["code"] == -401
        status, answer = await http(http_port, "/goim/online/total")  # queries too
        assert status == 401
        status, answer = await http(http_port, room, f"Authorization: Bearer {KEY}\r\n", b"with key")
        assert status == 200 and answer["code"] == 0
        status, answer = await http(http_port, "/goim/online/total", f"X-API-Key: {KEY}\r\n")
        assert answer["data"]["conn_count"] == 1
        [frame] = await pushes(client, 1)
        assert frame.body == b"with key"
        # the ZeroMQ ingress was opened on purpose without a key: it pushes, and the log says so
        with Pusher(f"tcp://127.0.0.1:{zmq_port}") as pusher:
            assert pusher.keys(1000, ["k1"], b"zmq") == {"connections": 1}
        assert (await client.recv_push()).body == b"zmq"
        await client.close()

    try:
        run(main())
        srv.wait_log("INSECURE: the ZeroMQ ingress on tcp://0.0.0.0:")
        assert "INSECURE: the push API" not in srv.log()
    finally:
        srv.stop()


def test_zmq_ingress_key(tmp_path: Path) -> None:
    zmq_port = free_port()
    srv = start_master(tmp_path, 1, ingress={"zmq_bind": f"tcp://0.0.0.0:{zmq_port}", "api_key": KEY})

    async def main() -> None:
        await Cluster(srv).wait_workers(1)

    try:
        run(main())
        endpoint = f"tcp://127.0.0.1:{zmq_port}"
        with Pusher(endpoint) as pusher, pytest.raises(PushError) as refused:
            pusher.mids(1000, [1], b"x")
        assert (refused.value.code, refused.value.message) == (-401, "api_key: missing")
        with Pusher(endpoint, api_key=KEY) as pusher:
            assert pusher.mids(1000, [1], b"x") == {"connections": 0, "seqs": {"1": 1}}
    finally:
        srv.stop()


def test_tls_clients_and_certificate_rotation_by_sighup(tmp_path: Path) -> None:
    """WSS and TLS-TCP clients auth, heart-beat and get room pushes; a SIGHUP after the files were
    replaced serves the new certificate to new clients while the old ones stay connected; a bad
    file refuses the reload and the new certificate stays."""
    live = tmp_path / "live"
    first = issue(tmp_path / "first")
    live.mkdir()
    cert_file, key_file = live / "server.crt", live / "server.key"
    shutil.copy(first.cert_file, cert_file)
    shutil.copy(first.key_file, key_file)
    tls_port, wss_port = free_port(), free_port()
    srv = start_master(
        tmp_path,
        2,
        tls={"cert_file": str(cert_file), "key_file": str(key_file)},
        tcp={"tls_bind": [f"127.0.0.1:{tls_port}"]},
        websocket={"tls_bind": [f"127.0.0.1:{wss_port}"]},
    )
    wss_url = f"wss://localhost:{wss_port}/sub"
    room = "/goim/push/room?operation=1000&type=live&room=9"

    async def main() -> None:
        c = Cluster(srv)
        await c.wait_workers(2)
        nodes = await c.get("/goim/nodes/weighted")
        assert nodes["wss_port"] == wss_port
        old_ctx = first.client_context()
        tcp = await connect_tcp("localhost", tls_port, ssl=old_ctx)
        wss = await connect_ws(wss_url, ssl=old_ctx)
        for i, client in enumerate((tcp, wss)):
            await client.auth({"mid": i + 1, "key": f"old{i}", "room_id": "live://9"})
            assert await client.heartbeat() >= 1
        await c.post(room, b"one")
        for client in (tcp, wss):
            assert (await client.recv_push()).body == b"one"

        second = issue(tmp_path / "second")  # another CA: old clients' trust does not cover it
        shutil.copy(second.cert_file, cert_file)
        shutil.copy(second.key_file, key_file)
        srv.signal(signal.SIGHUP)
        await asyncio.to_thread(srv.wait_log, "reload done", 30)
        new = await connect_tcp("localhost", tls_port, ssl=second.client_context())
        await new.auth({"mid": 3, "key": "new", "room_id": "live://9"})
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect_ws(wss_url, ssl=old_ctx)  # the new generation presents the new certificate
        for client in (tcp, wss):  # still connected through the old certificate
            assert await client.heartbeat() >= 1
        await c.post(room, b"two")
        for client in (tcp, wss, new):
            assert (await client.recv_push()).body == b"two"

        cert_file.write_text("not a certificate\n")
        srv.signal(signal.SIGHUP)
        log = await asyncio.to_thread(srv.wait_log, "reload refused, keeping the running config", 30)
        assert "[tls] cert_file:" in log and "holds no PEM certificate" in log
        again = await connect_ws(wss_url, ssl=second.client_context())
        await again.auth({"mid": 4, "key": "again"})
        for client in (tcp, wss, new, again):
            await client.close()

    try:
        run(main(), timeout=120)
    finally:
        srv.stop()


def test_the_router_files_the_client_ip_from_the_proxy_header(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 1, tcp={"proxy_protocol": True})

    async def main() -> None:
        c = Cluster(srv)
        await c.wait_workers(1)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.tcp_port)
        writer.write(header_v2(("198.51.100.77", 40000)))
        from mpim.client import TcpClient

        client = TcpClient(reader, writer)
        await client.auth({"mid": 5, "key": "behind-lb"})
        [session] = await c.get("/mpim/session?key=behind-lb")
        assert session["ip"] == "198.51.100.77"
        total = await c.get("/goim/online/total")
        assert total == {"ip_count": 1, "conn_count": 1}
        plain = await connect_tcp("127.0.0.1", srv.tcp_port)  # no header: closed
        await plain.send(Op.AUTH, b'{"mid":6}')
        assert await plain.expect_closed() == []
        await client.close()

    try:
        run(main())
        srv.wait_log("refusing 127.0.0.1: on a PROXY listener: no PROXY header")
    finally:
        srv.stop()


def test_a_key_held_by_another_user_is_denied_across_workers(tmp_path: Path) -> None:
    srv = start_master(tmp_path, 2)

    async def main() -> None:
        c = Cluster(srv)
        await c.wait_workers(2)
        holder, worker = await c.join("shared", 1)
        for _ in range(40):  # until a claim lands on the other worker as well as on the same one
            thief = await connect_tcp("127.0.0.1", srv.tcp_port)
            await thief.send(Op.AUTH, json.dumps({"mid": 2, "key": "shared"}).encode())
            assert await thief.expect_closed() == []  # denied: no Auth reply
            if srv.log().count("auth denied for") >= 2 and _denied_on_both(srv.log()):
                break
        [session] = await c.get("/mpim/session?key=shared")
        assert session["mid"] == 1 and session["worker"] == worker
        assert await c.post("/goim/push/keys?operation=1000&keys=shared", b"still mine") == {"connections": 1}
        assert (await holder.recv_push()).body == b"still mine"
        stats = await until(lambda: _stats(c), what="worker counters")
        assert sum(s.get("auth_denied", 0) for s in stats) >= 1
        await c.close()

    try:
        run(main())
        srv.wait_log("key 'shared' is held by another user (mid 1)")
    finally:
        srv.stop()


def _denied_on_both(log: str) -> bool:
    return len(set(re.findall(r"\[(\d+)\] mpim\.worker: auth denied for", log))) >= 2


async def _stats(c: Cluster) -> list[dict[str, int]] | None:
    rows = await c.get("/mpim/workers")
    stats = [r["stats"] for r in rows]
    return stats if all(stats) and any(s.get("auth_denied") for s in stats) else None
