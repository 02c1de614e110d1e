"""A registration the router denies (a key held by another user): the client is closed, counted, logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mpim.client import connect_tcp
from mpim.config import parse_address
from mpim.proto import Op
from mpim.worker.channel import Channel
from mpim.worker.link import StandaloneLink
from mpim.worker.server import Worker
from tests.support import local_config, run


class DenyingLink(StandaloneLink):
    """Denies key "taken" the way HostLink does when the router says so; confirms the rest."""

    def register(self, channel: Channel, room: str, ip: str) -> None:
        assert self.sessions is not None
        if channel.key == "taken":
            self.sessions.denied(channel, "key 'taken' is held by another user (mid 1)")
        else:
            self.sessions.confirmed(channel)


def test_a_denied_client_is_closed_and_the_others_served(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        cfg = local_config(limits={"exempt": [], "auth_failures": 1})
        worker = Worker(cfg, asyncio.get_running_loop(), link=DenyingLink())
        await worker.start()
        try:
            host, port = parse_address(cfg.tcp.bind[0])
            ok = await connect_tcp(host, port)
            await ok.auth({"mid": 2, "key": "mine", "room_id": "live://1"})
            denied = await connect_tcp(host, port)
            await denied.send(Op.AUTH, b'{"mid":2,"key":"taken","room_id":"live://1"}')
            assert await denied.expect_closed() == []  # no Auth reply
            hub = worker.hub
            assert hub.online == 1 and hub.stats["auth_denied"] == 1
            assert [r.id for r in hub.rooms] == ["live://1"] and len(next(iter(hub.rooms)).members) == 1
            assert await ok.heartbeat() == 1
            # a denial counts towards a ban like a bad token (here after one)
            assert hub.stats["bans"] == 1
            after = await connect_tcp(host, port)
            assert await after.expect_closed() == []
            await ok.close()
        finally:
            worker.stop(graceful=False)
            await worker.wait_stopped()

    caplog.set_level(logging.WARNING, "mpim.worker")
    run(scenario)
    assert "auth denied for 127.0.0.1:" in caplog.text
    assert "key=taken mid=2: key 'taken' is held by another user (mid 1)" in caplog.text


class HoldingLink(StandaloneLink):
    """Keeps registrations waiting (the router has not filed them yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Channel] = []

    def register(self, channel: Channel, room: str, ip: str) -> None:
        self.waiting.append(channel)


def test_a_kick_that_overtakes_the_registration_closes_it() -> None:
    """The same key connected on another host a moment later and that host's kick arrives
    before our router filed our connection: ours closes (op 6), it never goes live."""

    async def scenario() -> None:
        cfg = local_config()
        link = HoldingLink()
        worker = Worker(cfg, asyncio.get_running_loop(), link=link)
        await worker.start()
        try:
            host, port = parse_address(cfg.tcp.bind[0])
            client = await connect_tcp(host, port)
            await client.send(Op.AUTH, b'{"mid":2,"key":"raced"}')
            while not link.waiting:
                await asyncio.sleep(0.01)
            worker.hub.sessions.kick(["raced"])
            assert [f.op for f in await client.expect_closed()] == [Op.DISCONNECT_REPLY]
            assert not worker.hub.sessions.registering
            worker.hub.sessions.confirmed(link.waiting[0])  # a late confirmation changes nothing
            assert worker.hub.online == 0 and worker.hub.stats["kicked"] == 1
        finally:
            worker.stop(graceful=False)
            await worker.wait_stopped()

    run(scenario)
