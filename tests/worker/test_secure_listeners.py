"""TLS and PROXY listeners and the per-IP limits on a real in-process worker, with real clients.

WSS and TLS-TCP clients (a throwaway CA from trustme) authenticate, heart-beat and
receive pushes; a PROXY v1/v2 header gives the address the worker logs, reports
and limits by; a connection without a valid header, or a failed TLS handshake,
is closed while everyone else is served; per-IP limits cut the excess only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

from mpim.client import Client, ConnectionClosedError, TcpClient, WsClient, connect_tcp, connect_ws
from mpim.config import parse_address
from mpim.proto import Op
from mpim.proxyproto import header_v1, header_v2
from tests.certs import Certs, issue
from tests.support import free_port, local_config
from tests.worker.harness import Running, run, serving

ROOM = "live://secure"


def tls_sections(certs: Certs, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "tls": certs.tls(),
        "tcp": {"tls_bind": [f"127.0.0.1:{free_port()}"]},
        "websocket": {"tls_bind": [f"127.0.0.1:{free_port()}"]},
    }
    for name, table in extra.items():
        sections.setdefault(name, {}).update(table)
    return sections


def ports(srv: Running) -> tuple[int, int]:
    cfg = srv.worker.cfg
    return parse_address(cfg.tcp.tls_bind[0])[1], parse_address(cfg.websocket.tls_bind[0])[1]


async def proxied_tcp(port: int, header: bytes, tls: ssl.SSLContext | None = None) -> TcpClient:
    """A client behind a balancer: the PROXY header first, then (optionally) TLS, then goim."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(header)
    await writer.drain()
    if tls is not None:
        await writer.start_tls(tls, server_hostname="localhost")
    return TcpClient(reader, writer)


async def proxied_ws(port: int, header: bytes, tls: ssl.SSLContext | None) -> WsClient:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(header)
    sock.setblocking(False)
    scheme = "wss" if tls is not None else "ws"
    kw: dict[str, Any] = {"ssl": tls, "server_hostname": "localhost"} if tls is not None else {}
    conn = await ws_connect(
        f"{scheme}://localhost:{port}/sub", sock=sock, max_size=None, compression=None, **kw
    )
    return WsClient(conn)


async def closed(client: Client) -> bool:
    with contextlib.suppress(OSError, ssl.SSLError):  # (a reset is a close too)
        await client.expect_closed(5.0)
    return True


def channel_of(srv: Running, key: str) -> Any:
    channel = srv.hub.buckets.get(key)
    assert channel is not None, key
    return channel


# -- TLS --------------------------------------------------------------------------------------------


def test_wss_and_tls_tcp_clients_auth_heartbeat_and_receive_pushes(tmp_path: Path) -> None:
    certs = issue(tmp_path)

    async def scenario() -> None:
        async with serving(local_config(**tls_sections(certs))) as srv:
            tls_port, wss_port = ports(srv)
            ctx = certs.client_context()
            tcp = await connect_tcp("localhost", tls_port, ssl=ctx)
            wss = await connect_ws(f"wss://localhost:{wss_port}/sub", ssl=ctx)
            plain = await srv.tcp_client()  # the plain listeners still serve
            srv.clients += [tcp, wss]
            for i, client in enumerate((tcp, wss, plain)):
                await client.auth({"mid": i + 1, "key": f"k{i}", "room_id": ROOM, "accepts": [1000]})
                assert await client.heartbeat() == i + 1  # the room's online count
            assert srv.hub.push_room(1000, ROOM, b"to the room")
            srv.hub.push_keys(1000, ["k0", "k1"], b"to a key")
            for client in (tcp, wss):  # (the room push is batched: it may come second)
                got = {(f.op, f.body) for f in [await client.recv_push(), await client.recv_push()]}
                assert got == {(1000, b"to the room"), (1000, b"to a key")}
            assert (await plain.recv_push()).body == b"to the room"
            assert channel_of(srv, "k0").transport.get_extra_info("ssl_object").version() == "TLSv1.3"

    run(scenario)


def test_tls_needs_a_trusted_certificate_and_tls_12(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    stranger = issue(tmp_path / "other")  # another CA

    async def scenario() -> None:
        async with serving(local_config(**tls_sections(certs, tls={"min_version": "1.3"}))) as srv:
            tls_port, _ = ports(srv)
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect_tcp("localhost", tls_port, ssl=stranger.client_context())
            old = certs.client_context()
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises((ssl.SSLError, ConnectionResetError)):  # the server's alert, or a reset
                await connect_tcp("localhost", tls_port, ssl=old)
            client = await connect_tcp("localhost", tls_port, ssl=certs.client_context())
            srv.clients.append(client)
            await client.auth({"mid": 1})
            await srv.settle(lambda: srv.hub.stats["tls_failed"] == 2)
            assert srv.hub.connections == 1

    run(scenario)


def test_bytes_that_are_not_tls_and_a_silent_client_are_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A goim TCP client on the TLS port, and a connection that never starts TLS: both closed
    (the second at the TLS handshake timeout, not the goim one)."""
    certs = issue(tmp_path)
    sections = tls_sections(certs, tls={"handshake_timeout": 0.3}, protocol={"handshake_timeout": 3600})

    async def scenario() -> None:
        async with serving(local_config(**sections)) as srv:
            tls_port, wss_port = ports(srv)
            goim = await connect_tcp("127.0.0.1", tls_port)
            await goim.send(Op.AUTH, b'{"mid":1}')
            assert await closed(goim)
            silent = await connect_tcp("127.0.0.1", wss_port)
            assert await closed(silent)
            await srv.settle(lambda: srv.hub.stats["tls_failed"] == 2)
            ok = await connect_ws(f"wss://localhost:{wss_port}/sub", ssl=certs.client_context())
            srv.clients.append(ok)
            await ok.auth({"mid": 2})
            assert srv.hub.online == 1

    caplog.set_level(logging.WARNING, "mpim.worker")
    run(scenario)
    assert "closing 127.0.0.1: TLS handshake failed" in caplog.text


# -- PROXY protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_a_proxy_header_gives_the_logged_and_reported_address(
    version: int, caplog: pytest.LogCaptureFixture
) -> None:
    header = (header_v1 if version == 1 else header_v2)(("203.0.113.7", 51234), ("10.0.0.1", 3101))

    async def scenario() -> None:
        async with serving(tcp={"proxy_protocol": True}, websocket={"proxy_protocol": True}) as srv:
            tcp = await proxied_tcp(srv.tcp[1], header)
            ws = await proxied_ws(int(srv.ws_url.split(":")[2].split("/")[0]), header, None)
            srv.clients += [tcp, ws]
            await tcp.auth({"mid": 1, "key": "t", "room_id": ROOM})
            await ws.auth({"mid": 2, "key": "w", "room_id": ROOM})
            for key in ("t", "w"):
                channel = channel_of(srv, key)
                assert channel.peer() == "203.0.113.7:51234" and channel.peer_ip() == "203.0.113.7"
            assert {e.ip for e in srv.hub.sessions.entries()} == {"203.0.113.7"}  # what the router files
            assert srv.hub.registry.limits.open_count("203.0.113.7") == 2
            srv.hub.push_room(1000, ROOM, b"x")
            assert (await tcp.recv_push()).body == b"x" and (await ws.recv_push()).body == b"x"
            await tcp.send(Op.CHANGE_ROOM, b"bad\x00room")  # bad input: the close is logged by address
            assert await closed(tcp)

    caplog.set_level(logging.INFO, "mpim.worker")
    run(scenario)
    assert "closing 203.0.113.7:51234: bad room id" in caplog.text


def test_a_header_in_pieces_with_the_first_frame_behind_it() -> None:
    header = header_v2(("198.51.100.20", 4000))

    async def scenario() -> None:
        async with serving(tcp={"proxy_protocol": True}) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp)
            head = header[:-1]
            for i in range(0, len(head), 5):
                writer.write(head[i : i + 5])
                await writer.drain()
                await asyncio.sleep(0.01)
            client = TcpClient(reader, writer)
            srv.clients.append(client)
            # the last header byte and the Auth frame in one write
            from mpim.proto import encode

            writer.write(header[-1:] + encode(Op.AUTH, b'{"mid":5,"key":"p"}', 1, 1))
            reply = await client.recv()
            assert reply.op == Op.AUTH_REPLY
            assert channel_of(srv, "p").peer_ip() == "198.51.100.20"

    run(scenario)


def test_local_and_unknown_headers_stand_for_the_balancer_itself() -> None:
    async def scenario() -> None:
        async with serving(tcp={"proxy_protocol": True}) as srv:
            for i, header in enumerate((header_v2(None), header_v1(None))):
                client = await proxied_tcp(srv.tcp[1], header)
                srv.clients.append(client)
                await client.auth({"mid": 1, "key": f"lb{i}"})
                assert channel_of(srv, f"lb{i}").peer_ip() == "127.0.0.1"

    run(scenario)


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (
            b"\x00\x00\x00\x1a\x00\x10\x00\x01\x00\x00\x00\x07",
            "no PROXY header: the connection starts with byte 0x00",
        ),
        (b"GET /sub HTTP/1.1\r\n", "no PROXY header: the connection starts with byte 0x47"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "PROXY v1 port 99999 is out of range"),
    ],
)
def test_a_connection_without_a_valid_header_is_closed(
    first: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serving(tcp={"proxy_protocol": True}) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp)
            writer.write(first)
            assert await closed(TcpClient(reader, writer))  # (a reset: the bytes were left unread)
            writer.close()
            ok = await proxied_tcp(srv.tcp[1], header_v1(("192.0.2.1", 1)))
            srv.clients.append(ok)
            await ok.auth({"mid": 1})
            assert srv.hub.stats["proxy_refused"] == 1 and srv.hub.online == 1

    caplog.set_level(logging.WARNING, "mpim.worker")
    run(scenario)
    assert f"refusing 127.0.0.1: on a PROXY listener: {why}" in caplog.text


def test_no_header_within_the_timeout_and_untrusted_sources_are_closed() -> None:
    async def scenario() -> None:
        async with serving(tcp={"proxy_protocol": True}, proxy={"timeout": 0.2}) as srv:
            silent = await connect_tcp(*srv.tcp)
            assert await closed(silent)
            assert srv.hub.stats["proxy_refused"] == 1
        async with serving(tcp={"proxy_protocol": True}, proxy={"trusted": ["10.0.0.0/8"]}) as srv:
            stranger = await proxied_tcp(srv.tcp[1], header_v1(("192.0.2.1", 1)))
            assert await closed(stranger)
            assert srv.hub.stats["proxy_refused"] == 1
        async with serving(tcp={"proxy_protocol": True}, proxy={"trusted": ["127.0.0.0/8"]}) as srv:
            ok = await proxied_tcp(srv.tcp[1], header_v1(("192.0.2.1", 1)))
            srv.clients.append(ok)
            await ok.auth({"mid": 1})

    run(scenario)


def test_proxy_then_tls_on_the_tls_listeners(tmp_path: Path) -> None:
    """The balancer passes TLS through: its header comes first, the TLS handshake after it."""
    certs = issue(tmp_path)
    sections = tls_sections(certs, tcp={"tls_proxy_protocol": True}, websocket={"tls_proxy_protocol": True})

    async def scenario() -> None:
        async with serving(local_config(**sections)) as srv:
            tls_port, wss_port = ports(srv)
            ctx = certs.client_context()
            tcp = await proxied_tcp(tls_port, header_v2(("2001:db8::7", 443)), ctx)
            wss = await proxied_ws(wss_port, header_v1(("203.0.113.9", 50000)), ctx)
            srv.clients += [tcp, wss]
            await tcp.auth({"mid": 1, "key": "t6", "room_id": ROOM})
            await wss.auth({"mid": 2, "key": "w4", "room_id": ROOM})
            assert channel_of(srv, "t6").peer() == "2001:db8::7:443"
            assert channel_of(srv, "w4").peer_ip() == "203.0.113.9"
            assert srv.hub.registry.limits.open_count("2001:db8::99") == 1  # the same /64
            srv.hub.push_room(1000, ROOM, b"both")
            assert (await tcp.recv_push()).body == b"both" and (await wss.recv_push()).body == b"both"
            with pytest.raises((ConnectionResetError, ssl.SSLError)):  # TLS without the header
                await connect_tcp("localhost", tls_port, ssl=ctx)
            assert srv.hub.stats["proxy_refused"] == 1

    run(scenario)


# -- per-IP limits ----------------------------------------------------------------------------------


def test_per_ip_connections_cut_the_excess_and_serve_the_rest() -> None:
    async def scenario() -> None:
        async with serving(tcp={"proxy_protocol": True}, limits={"conns_per_ip": 2}) as srv:
            one = [await proxied_tcp(srv.tcp[1], header_v1(("203.0.113.1", p))) for p in (1, 2)]
            srv.clients += one
            third = await proxied_tcp(srv.tcp[1], header_v1(("203.0.113.1", 3)))
            assert await closed(third)
            other = await proxied_tcp(srv.tcp[1], header_v1(("203.0.113.2", 1)))
            srv.clients.append(other)
            for i, client in enumerate([*one, other]):
                await client.auth({"mid": i + 1})
                await client.heartbeat()
            assert srv.hub.stats["limit_conns"] == 1
            await one[0].close()
            srv.clients.remove(one[0])
            await srv.settle(lambda: srv.hub.registry.limits.open_count("203.0.113.1") == 1)
            again = await proxied_tcp(srv.tcp[1], header_v1(("203.0.113.1", 4)))
            srv.clients.append(again)
            await again.auth({"mid": 9})

    run(scenario)


def test_limits_on_a_plain_listener_and_the_loopback_exemption() -> None:
    async def scenario() -> None:
        limited = {"conns_per_ip": 0, "rate_per_ip": 1.0, "burst_per_ip": 2, "exempt": []}
        async with serving(limits=limited) as srv:
            first = [await srv.tcp_client() for _ in range(2)]
            extra = await connect_tcp(*srv.tcp)
            assert await closed(extra)  # the bucket of 2 is empty
            for client in first:
                await client.auth({"mid": 1})
            assert srv.hub.counters()["limit_rate"] == 1
        async with serving(limits={"conns_per_ip": 1, "rate_per_ip": 0}) as srv:  # loopback is exempt
            clients = [await srv.tcp_client() for _ in range(5)]
            for client in clients:
                await client.auth({"mid": 1})
            assert srv.hub.counters()["limit_conns"] == 0

    run(scenario)


def test_failed_auths_ban_the_address(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        limits = {"auth_failures": 2, "ban_time": 3600, "exempt": []}
        async with serving(auth={"mode": "jwt", "secret": "s" * 32}, limits=limits) as srv:
            for _ in range(2):
                client = await connect_tcp(*srv.tcp)
                await client.send(Op.AUTH, b"not a token")
                assert await closed(client)
            banned = await connect_tcp(*srv.tcp)
            assert await closed(banned)
            assert srv.hub.stats["bans"] == 1 and srv.hub.stats["limit_banned"] == 1

    caplog.set_level(logging.WARNING, "mpim.worker")
    run(scenario)
    assert "banning 127.0.0.1 for 3600s: 2 failed Auths within 60s" in caplog.text
    assert "refusing 127.0.0.1: banned for" in caplog.text


def test_a_closed_connection_gives_its_place_back(tmp_path: Path) -> None:
    """Counted at accept on a TLS listener, released whatever way the connection ends."""
    certs = issue(tmp_path)
    sections = tls_sections(certs, limits={"conns_per_ip": 1, "exempt": []})

    async def scenario() -> None:
        async with serving(local_config(**sections)) as srv:
            tls_port, _ = ports(srv)
            limits = srv.hub.registry.limits
            bad = await connect_tcp("127.0.0.1", tls_port)  # not TLS: the handshake fails
            await bad.send_raw(b"\x00" * 64)
            assert await closed(bad)
            await srv.settle(lambda: limits.open_count("127.0.0.1") == 0)
            client = await connect_tcp("localhost", tls_port, ssl=certs.client_context())
            await client.auth({"mid": 1})
            with pytest.raises((ConnectionClosedError, ConnectionResetError, ssl.SSLError, OSError)):
                second = await connect_tcp("localhost", tls_port, ssl=certs.client_context())
                await second.auth({"mid": 2})
            await client.close()
            await srv.settle(lambda: limits.open_count("127.0.0.1") == 0)
            third = await connect_tcp("localhost", tls_port, ssl=certs.client_context())
            srv.clients.append(third)
            await third.auth({"mid": 3})

    run(scenario)


def test_mpim_client_over_tls_and_wss(tmp_path: Path) -> None:
    """`mpim client tls://...` / `wss://...` with --cafile; a CA it does not trust is one clear line."""
    import io

    from mpim.client import WatchError, watch

    certs = issue(tmp_path)
    ca = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca))
    stranger = issue(tmp_path / "other")
    other_ca = tmp_path / "other-ca.pem"
    stranger.ca.cert_pem.write_to_path(str(other_ca))

    async def scenario() -> None:
        async with serving(local_config(**tls_sections(certs))) as srv:
            tls_port, wss_port = ports(srv)
            for address in (f"tls://localhost:{tls_port}", f"wss://localhost:{wss_port}/sub"):
                out = io.StringIO()
                token = '{"mid":1,"key":"cli","accepts":[1000]}'
                task = asyncio.create_task(watch(address, token, count=1, out=out, cafile=str(ca)))
                await srv.settle(lambda: srv.hub.online == 1)
                srv.hub.push_keys(1000, ["cli"], b"over tls")
                assert await task == 0
                assert "push op=1000 body=over tls" in out.getvalue()
                await srv.settle(lambda: srv.hub.online == 0)
                with pytest.raises(
                    WatchError, match=r"TLS with localhost:\d+ failed: CERTIFICATE_VERIFY_FAILED"
                ):
                    await watch(address, token, count=1, out=io.StringIO(), cafile=str(other_ca))

    run(scenario)
