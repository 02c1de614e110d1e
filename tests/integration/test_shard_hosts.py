"""Router shards on a cluster of hosts: two masters on one redis-server, each with
``[router] shards = 2``. Users owned by every shard of each host get every kind of push sent
through either host (each request lands on either shard); the directory keeps one index per
shard in goim v2's layout; counts and presence are cluster-wide; a key moving to the other host
kicks its older connection, another user's claim is denied; a private message crosses hosts and
shards; one shard killed with kill -9 leaves the other shard's users reachable from the other host."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from mpim.client import connect_tcp
from mpim.proto import Op
from mpim.sdk import Session
from mpim.slots import owner_of_mid
from tests.integration.cluster import Cluster, cluster_host, pushes, serving, until
from tests.integration.test_chat import Box
from tests.integration.test_shard_pushes import linked
from tests.redis_support import RedisServer
from tests.support import ServerProcess, run

FAST = {"heartbeat": 2.0, "heartbeat_max": 2}
OWN = {k: [m for m in range(1, 400) if owner_of_mid(m, 2) == k][:8] for k in (0, 1)}


def host(tmp: Path, name: str, redis: RedisServer) -> ServerProcess:
    return cluster_host(
        tmp,
        name,
        redis.url,
        2,
        protocol=FAST,
        router={"online_interval": 0.5, "shards": 2},
        upstream={"ack": "only"},
    )


@pytest.fixture
def hosts(
    tmp_path: Path, redis_private: RedisServer
) -> Iterator[tuple[ServerProcess, ServerProcess, RedisServer]]:
    pair = host(tmp_path, "sha", redis_private), host(tmp_path, "shb", redis_private)
    with serving(pair, linked) as (a, b):
        yield a, b, redis_private


def test_every_push_through_either_host_reaches_the_users_of_every_shard(
    hosts: tuple[ServerProcess, ServerProcess, RedisServer],
) -> None:
    a, b, redis = hosts

    async def main() -> None:
        ca, cb = Cluster(a), Cluster(b)
        users = [OWN[0][0], OWN[1][0], OWN[0][1], OWN[1][1]]  # (a0, a1 on host a; b0, b1 on host b)
        clients = []
        for i, mid in enumerate(users):
            c = ca if i < 2 else cb
            client, _ = await c.join(f"k{mid}", mid, "live://shx", ws=bool(i % 2))
            clients.append(client)
        extra, _ = await ca.join("extra", OWN[1][4], "")  # (a third on host a: counts are not IPs)
        mids = "&".join(f"mids={m}" for m in users)
        keys = "&".join(f"keys=k{m}" for m in users)
        for i in range(4):  # (several requests: each host's kernel spreads them over its shards)
            via = (ca, cb)[i % 2]
            answer = await via.post(f"/goim/push/mids?operation=1000&{mids}", b"m%d" % i)
            assert answer["connections"] == 4, answer
            assert sorted(answer["seqs"].values()) == [i + 1] * 4
            assert (await via.post(f"/goim/push/keys?operation=1000&{keys}", b"k%d" % i))["connections"] == 4
            await via.post("/goim/push/room?operation=1000&type=live&room=shx", b"r%d" % i)
            for client in clients:
                got = [f.body for f in await pushes(client, 3)]
                assert sorted(got) == sorted([b"m%d" % i, b"k%d" % i, b"r%d" % i]), got
        await ca.post("/goim/push/all?operation=1000", b"everyone")
        for client in clients:
            assert [f.body for f in await pushes(client, 1)] == [b"everyone"]

        async def counted() -> bool:
            total = await cb.get("/goim/online/total")
            rooms = await ca.get("/goim/online/room?type=live&rooms=shx")
            return bool(total["conn_count"] == 5 and total["ip_count"] == 4 and rooms == {"shx": 4})

        await until(counted, what="cluster-wide counts over both hosts and all four shards")
        nodes = await ca.get("/goim/nodes/weighted?platform=web")
        assert sorted(h["name"] for h in nodes["hosts"]) == ["sha", "shb"]
        # goim v2's layout, one index per shard
        r = Redis.from_url(redis.url)
        assert r.get(f"key_k{users[0]}") == b"sha" and r.get(f"key_k{users[3]}") == b"shb"
        assert r.hget(f"mid_{users[1]}", f"k{users[1]}") == b"sha"
        assert r.hexists("conns_sha.0", f"k{users[0]}") and r.hexists("conns_sha.1", f"k{users[1]}")
        assert not r.exists("conns_sha") and r.hget("srv_sha", "shards") == b"2"
        r.close()
        # a key moving to the other host kicks the older connection; another user is denied it
        again, _ = await cb.join(f"k{users[1]}", users[1], "live://shx")
        frames = await clients[1].expect_closed()
        assert [f.op for f in frames][-1:] == [Op.DISCONNECT_REPLY]
        thief = await connect_tcp("127.0.0.1", a.tcp_port)
        await thief.send(Op.AUTH, json.dumps({"mid": OWN[0][5], "key": f"k{users[1]}"}).encode())
        assert await thief.expect_closed() == []
        answer = await ca.post(f"/goim/push/keys?operation=1000&keys=k{users[1]}", b"moved")
        assert answer["connections"] == 1
        assert [f.body for f in await pushes(again, 1)] == [b"moved"]
        for client in (clients[0], clients[2], clients[3], again, extra):
            await client.close()

    run(main())


def test_a_private_message_crosses_hosts_and_shards_once(
    hosts: tuple[ServerProcess, ServerProcess, RedisServer],
) -> None:
    a, b, _ = hosts

    async def main() -> None:
        x, y = OWN[0][2], OWN[1][2]  # (owned by shard 0 and shard 1, on two hosts)
        boxes = Box(), Box()
        sx = Session(f"127.0.0.1:{a.tcp_port}", {"mid": x, "key": "chat-x", "accepts": [1000]}, boxes[0])
        sy = Session(f"127.0.0.1:{b.tcp_port}", {"mid": y, "key": "chat-y", "accepts": [1000]}, boxes[1])
        tasks = [asyncio.get_running_loop().create_task(s.run()) for s in (sx, sy)]
        try:
            for s in (sx, sy):
                await asyncio.wait_for(s.connected.wait(), 10)
            for i in range(5):
                assert (await sx.send(y, body={"n": i}, id=f"x{i}")).seq > 0
                await sy.send(x, body={"n": i}, id=f"y{i}")
            first = await sx.send(y, body={"n": 0}, id="x0")  # a retry: stored once
            assert first.seq == 1
            await boxes[0].wait(10)
            await boxes[1].wait(10)
            assert [m["body"]["n"] for m in boxes[1].chats() if m["from"] == x] == list(range(5))
            assert [m["body"]["n"] for m in boxes[0].chats() if m["from"] == y] == list(range(5))
        finally:
            for s in (sx, sy):
                await s.close()
            for t in tasks:
                await asyncio.wait_for(t, 10)

    run(main())


def test_one_shard_killed_leaves_the_other_shards_users_reachable_across_hosts(
    hosts: tuple[ServerProcess, ServerProcess, RedisServer],
) -> None:
    a, b, _ = hosts
    routers = {t: pid for pid, t in a.children().items() if "mpim: router" in t}
    assert sorted(routers) == ["mpim: router 0", "mpim: router 1"]

    async def main() -> None:
        cb = Cluster(b)
        one = OWN[1][3]
        client, _ = await Cluster(a).join(f"x{one}", one, "live://kill")
        os.kill(routers["mpim: router 0"], signal.SIGKILL)
        for i in range(3):
            answer = await cb.post(f"/goim/push/mids?operation=1000&mids={one}", b"%d" % i)
            assert answer["connections"] == 1, answer
        assert [f.body for f in await pushes(client, 3)] == [b"0", b"1", b"2"]
        await until(lambda: _routers_back(a), what="the killed shard restarted")
        await linked(a)

        async def relayed() -> bool:  # (shard 0 listens on the host's rooms again)
            await cb.post("/goim/push/room?operation=1000&type=live&room=kill", b"room")
            try:
                return (await client.recv_push(0.5)).body == b"room"
            except TimeoutError:
                return False

        await until(relayed, what="a room push from the other host relayed by the restarted shard 0")
        await client.close()

    run(main())


async def _routers_back(srv: ServerProcess) -> bool:
    return len([t for t in srv.children().values() if "mpim: router" in t]) == 2


def test_a_clean_stop_of_a_sharded_host_takes_its_entries_and_name_out_of_redis(
    hosts: tuple[ServerProcess, ServerProcess, RedisServer],
) -> None:
    a, b, redis = hosts

    async def main() -> None:
        ca = Cluster(a)
        for k in (0, 1):
            await ca.join(f"gone{k}", OWN[k][6], "live://gone")
        r = Redis.from_url(redis.url, decode_responses=True)
        try:
            assert r.exists("conns_sha.0") and r.exists("conns_sha.1")
            assert a.stop() == 0
            assert not r.exists("conns_sha.0", "conns_sha.1", "key_gone0", "key_gone1", "ol_sha")
            assert r.hget(f"mid_{OWN[1][6]}", "gone1") is None

            async def released() -> bool:  # (another shard's last renewal may outlive shard 0's release)
                return not r.exists("srv_sha")

            await until(released, what="host a's lease gone")
            hosts = await Cluster(b).get("/goim/nodes/weighted?platform=web")
            assert [h["name"] for h in hosts["hosts"]] == ["shb"]
        finally:
            r.close()

    run(main())
