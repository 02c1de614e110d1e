"""The link between the router shards of one host, over real unix sockets: calls answered in one
hop, both ways; a shard that is down refuses at once (-503), one that goes away or stays silent
fails what it had (-504), and a restarted shard is linked again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from mpim.records import ShardAnswer, ShardCall, ShardClaims, ShardKeys, ShardNumbers
from mpim.router.errors import Refused
from mpim.router.shardlink import ShardPeers
from mpim.runtime import Endpoints
from tests.support import run


def _serve(shard: int, log: list[ShardCall]) -> object:
    def serve(call: ShardCall) -> ShardAnswer:
        log.append(call)
        if isinstance(call, ShardKeys) and call.keys == ["refuse"]:
            raise Refused(-503, f"shard {shard} says no")
        if isinstance(call, ShardKeys) and call.keys == ["bug"]:
            raise RuntimeError("boom")
        return ShardAnswer(call.req, count=10 + shard)

    return serve


async def until_true(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


async def _linked(peers: list[ShardPeers]) -> None:
    for _ in range(500):
        if all(p.up(k) for p in peers for k in p.others()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the shards did not link")


def test_calls_go_both_ways_in_one_hop_and_failures_are_answers(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        endpoints = Endpoints.in_dir(str(tmp_path))
        logs: list[list[ShardCall]] = [[], []]
        linked: list[tuple[int, int]] = []
        gone: list[tuple[int, int]] = []
        peers = [
            ShardPeers(
                k,
                2,
                endpoints,
                loop,
                _serve(k, logs[k]),  # type: ignore[arg-type]
                5.0,
                linked=lambda other, k=k: linked.append((k, other)),
                gone=lambda other, k=k: gone.append((k, other)),
            )
            for k in (0, 1)
        ]
        for p in peers:
            await p.start()
        try:
            await _linked(peers)
            assert (await peers[0].call(1, lambda req: ShardKeys(req, 1, ["k"], b"x"))).count == 11
            assert (await peers[1].call(0, ShardNumbers)).count == 10
            assert logs[1] == [ShardKeys(1, 1, ["k"], b"x")] and logs[0] == [ShardNumbers(1)]
            for keys, code in ((["refuse"], -503), (["bug"], -500)):
                with pytest.raises(Refused) as info:
                    await peers[0].call(1, lambda req, keys=keys: ShardKeys(req, 1, keys, b""))
                assert info.value.code == code
            assert (await peers[0].call(1, ShardNumbers)).count == 11  # the link stayed
            assert sorted(linked) == [(0, 1), (1, 0)]
            await peers[0].call(1, lambda req: ShardClaims(req, 0, [], []))  # (says which shard it is)
            await peers[0].close()
            await until_true(lambda: gone == [(1, 0)])
        finally:
            for p in peers:
                await p.close()

    run(main())


def test_a_shard_down_refuses_at_once_a_lost_one_fails_its_calls_and_a_restarted_one_is_linked(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        endpoints = Endpoints.in_dir(str(tmp_path))
        zero = ShardPeers(0, 2, endpoints, loop, _serve(0, []), 5.0)  # type: ignore[arg-type]
        await zero.start()
        try:
            with pytest.raises(Refused) as info:
                await zero.call(1, ShardNumbers)
            assert info.value.code == -503 and "unreachable" in info.value.message
            one = ShardPeers(1, 2, endpoints, loop, _serve(1, []), 5.0)  # type: ignore[arg-type]
            await one.start()
            await _linked([zero])
            pending = zero.call(1, ShardNumbers)
            await one.close()  # the shard goes away with the call in flight (or answered)
            try:
                await pending
            except Refused as exc:
                assert exc.code == -504
            for _ in range(500):
                if not zero.up(1):
                    break
                await asyncio.sleep(0.01)
            assert not zero.up(1)
            again = ShardPeers(1, 2, endpoints, loop, _serve(1, []), 5.0)  # type: ignore[arg-type]
            await again.start()
            try:
                await _linked([zero])
                assert (await zero.call(1, ShardNumbers)).count == 11
                late = zero.call(1, ShardNumbers)
                zero.tick(loop.time() + 10.0)  # past its deadline before the answer was read
                with pytest.raises(Refused) as info:
                    await late
                assert info.value.code == -504
            finally:
                await again.close()
        finally:
            await zero.close()

    run(main())


def test_garbage_on_the_shard_link_closes_that_link_and_the_shard_serves_on(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        endpoints = Endpoints.in_dir(str(tmp_path))
        peers = [ShardPeers(k, 2, endpoints, loop, _serve(k, []), 5.0) for k in (0, 1)]  # type: ignore[arg-type]
        for p in peers:
            await p.start()
        try:
            await _linked(peers)
            path = endpoints.peer_of(1).removeprefix("ipc://")
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(len(b"\xc1garbage").to_bytes(4, "big") + b"\xc1garbage")  # (not msgpack)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # that link is closed
            writer.close()
            assert (await peers[0].call(1, ShardNumbers)).count == 11  # the others are served
        finally:
            for p in peers:
                await p.close()

    run(main())
