"""A worker linked to several router shards: each record reaches the right shard(s), with that
shard's own contents; marks, drains, fences and room counts per shard; one shard down."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mpim import bus, config, records, stream
from mpim.records import (
    Acked,
    AckEntry,
    Alive,
    BusSeen,
    Bye,
    Chat,
    ChatAck,
    Confirmed,
    Connect,
    Disconnect,
    Drained,
    Draining,
    Entry,
    Hello,
    Mark,
    Presence,
    Resume,
    Resync,
    RoomChange,
    RoomCounts,
    Sync,
    Upstream,
)
from mpim.runtime import Endpoints
from mpim.slots import owner
from mpim.worker.zlink import HostLink
from tests.worker.test_zlink import FakeConn, FakeTargets, Open, bus_message


def mids_of(shard: int, shards: int, n: int = 3) -> list[int]:
    """The first ``n`` mids that shard ``shard`` of ``shards`` owns."""
    return [m for m in range(1, 1000) if owner(m, "", shards) == shard][:n]


def user(shard: int, shards: int, key: str, nth: int = 0) -> Open:
    """A connection whose user shard ``shard`` owns."""
    return Open(key, mids_of(shard, shards)[nth])


class BufferedConn(FakeConn):
    """A fake router end whose transport holds ``pending`` bytes."""

    def __init__(self, pending: int = 0) -> None:
        super().__init__()
        self.transport = self
        self.pending = pending

    def get_write_buffer_size(self) -> int:
        return self.pending


Scenario = Callable[[HostLink, FakeTargets, list[BufferedConn]], Awaitable[None]]


def with_shards(tmp_path: Path, shards: int, scenario: Scenario, **cfg: Any) -> None:
    async def main() -> None:
        conf = config.replace(config.Config(), router={"shards": shards}, **cfg)
        link = HostLink(conf, Endpoints.in_dir(str(tmp_path)), "3")
        targets = FakeTargets()
        link.attach(targets, targets, targets)  # type: ignore[arg-type]
        conns = [BufferedConn(pending=10 * (k + 1)) for k in range(shards)]
        try:
            for k, conn in enumerate(conns):
                link.links[k].conn = conn  # type: ignore[assignment]
            await scenario(link, targets, conns)
        finally:
            await link.close()

    asyncio.run(main())


def alive(link: HostLink, shard: int) -> None:
    """Shard ``shard``'s report now, as its timer would run it."""
    reports = link.links[shard].reports
    assert reports._alive_handle is not None
    reports._alive_handle.cancel()
    reports._alive()


@pytest.mark.parametrize("shards", [2, 3])
def test_links_go_to_every_shard_at_its_endpoint(tmp_path: Path, shards: int) -> None:
    link = HostLink(
        config.replace(config.Config(), router={"shards": shards}), Endpoints.in_dir(str(tmp_path)), "3"
    )
    try:
        endpoints = [r.endpoint for r in link.links]
        assert endpoints == [Endpoints.in_dir(str(tmp_path)).router_of(k) for k in range(shards)]
        assert len(set(endpoints)) == shards and link.router is link.links[0]
    finally:
        link.bus.close()


@pytest.mark.parametrize("shards", [2, 3])
def test_each_request_goes_to_the_shard_that_owns_its_user(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        for k in range(shards):
            ch = user(k, shards, f"k{k}")
            link.register(ch, "", "ip")  # type: ignore[arg-type]
            link.change_room(ch, "live://1")  # type: ignore[arg-type]
            link.upstream(ch, 1000, b"up")  # type: ignore[arg-type]
            link.resume(ch, "e", 4, True, lambda rec: None)  # type: ignore[arg-type]
            link.chat(ch, 1000, b"hi", "m1", 7, lambda ack: None)  # type: ignore[arg-type]
            link.online(ch, [1, 2], lambda ack: None)  # type: ignore[arg-type]
            link.disconnected(ch)  # type: ignore[arg-type]
        for k, conn in enumerate(conns):
            mid = mids_of(k, shards)[0]
            assert conn.take() == [
                Connect(1, f"k{k}", mid, "", "ip"),
                RoomChange(2, f"k{k}", "live://1"),
                Upstream(f"k{k}", mid, 1000, b"up"),
                Resume(3, f"k{k}", mid, "e", 4, True),
                Chat(4, f"k{k}", mid, 1000, b"hi", "m1", 7, True),
                Presence(5, f"k{k}", mid, [1, 2]),
                Disconnect(f"k{k}"),
            ]

    with_shards(tmp_path, shards, scenario)


def test_a_connection_without_a_user_is_placed_by_its_key(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        keys = [f"anon{i}" for i in range(12)]
        for key in keys:
            link.register(Open(key, 0), "", "ip")  # type: ignore[arg-type]
        for k, conn in enumerate(conns):
            assert [r.key for r in conn.take()] == [key for key in keys if owner(0, key, 3) == k]

    with_shards(tmp_path, 3, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_hello_and_sync_reach_every_shard_with_the_sessions_it_owns(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        t.sessions = [Entry(f"s{k}", mids_of(k, shards)[0], f"r{k}", "ip") for k in range(shards)]
        t.sessions.append(Entry("s0b", mids_of(0, shards)[1], "", "ip"))
        for k in range(shards):
            fresh = BufferedConn()
            link.links[k].conn = fresh  # type: ignore[assignment]
            link.links[k]._greet(fresh)  # type: ignore[arg-type]
            own = [e for e in t.sessions if owner(e.mid, e.key, shards) == k]
            assert fresh.take() == [Hello(link.host, "3", os.getpid()), Sync(own)]

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_alive_counts_each_shards_own_sessions_and_every_one_carries_the_stats(
    tmp_path: Path, shards: int
) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        chans = {k: [user(k, shards, f"k{k}-{i}", i) for i in range(k + 1)] for k in range(shards)}
        for mine in chans.values():
            for ch in mine:
                link.register(ch, "live://a", "ip")  # type: ignore[arg-type]
                link.heartbeat(ch)  # type: ignore[arg-type]
        link.change_room(chans[0][0], "live://b")  # type: ignore[arg-type]
        for k in range(shards):
            conns[k].take()
            alive(link, k)
        reports: list[Alive] = [conn.take()[0] for conn in conns]
        assert [r.conns for r in reports] == [k + 1 for k in range(shards)]
        assert [sorted(r.beats) for r in reports] == [
            sorted(ch.key for ch in chans[k]) for k in range(shards)
        ]
        assert reports[0].rooms == {"live://b": 1}
        assert [r.rooms for r in reports[1:]] == [{"live://a": k + 1} for k in range(1, shards)]
        assert all(r.stats is not None for r in reports)  # (the console of any shard shows them)
        assert reports[0].stats is not None and reports[0].stats["link_buffer"] == sum(
            10 * (k + 1) for k in range(shards)
        )
        # a session leaves its shard's counts
        link.disconnected(chans[1][0])  # type: ignore[arg-type]
        alive(link, 1)
        last = conns[1].take()[-1]
        assert (last.conns, last.beats, last.rooms) == (1, [], None)

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_acks_are_split_by_owner(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        chans = [user(k, shards, f"k{k}") for k in range(shards)]
        for k, ch in enumerate(chans):
            link.ack(ch, 10 + k)  # type: ignore[arg-type]
            link.ack(ch, 5)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        for k, conn in enumerate(conns):
            assert conn.take() == [Acked([AckEntry(chans[k].mid, f"k{k}", 10 + k)])]

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_each_mark_is_reported_to_the_shard_that_published_it(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        link.bus.on_message(bus_message(bus.BROADCAST, *(Mark(k + 1, k) for k in range(shards))))
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(9, shards - 1), Mark(2, 0)))
        await asyncio.sleep(0)
        expected = [[BusSeen(k + 1)] for k in range(shards)]
        expected[0], expected[-1] = [BusSeen(2)], [BusSeen(9)]
        assert [conn.take() for conn in conns] == expected
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(1, 0)))  # older than shard 0's highest
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(50, shards)))  # no such shard: ignored
        await asyncio.sleep(0)
        assert [conn.take() for conn in conns] == [[] for _ in range(shards)]
        assert link.stats["bad_messages"] == 1

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_a_drain_waits_for_the_mark_of_every_shard(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        drain = asyncio.create_task(link.drain_barrier(60.0))
        for _ in range(3):  # (the drain, then each shard's call)
            await asyncio.sleep(0)
        assert [conn.take() for conn in conns] == [[Draining(1)] for _ in range(shards)]
        for k in range(shards):
            link.links[k].on_record(Drained(1, 3))
        for k in range(shards - 1):  # every shard's mark but the last one's
            link.bus.on_message(bus_message(bus.BROADCAST, Mark(3, k)))
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(7, 0)))  # another shard's higher mark
        await asyncio.sleep(0.05)
        assert not drain.done()
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(3, shards - 1)))
        await asyncio.wait_for(drain, 10)

    with_shards(tmp_path, shards, scenario)


def test_a_drain_does_not_wait_for_a_shard_that_is_down(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        link.links[1].conn = None
        drain = asyncio.create_task(link.drain_barrier(60.0))
        for _ in range(3):  # (the drain, then each shard's call)
            await asyncio.sleep(0)
        assert [conn.take() for conn in conns] == [[Draining(1)], []]
        link.links[0].on_record(Drained(1, 2))
        link.bus.on_message(bus_message(bus.BROADCAST, Mark(2, 0)))
        await asyncio.wait_for(drain, 10)

    with_shards(tmp_path, 2, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_room_counts_from_the_shards_are_summed_per_room(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        link.links[0].on_record(RoomCounts({"r": 3}))
        link.links[1].on_record(RoomCounts({"r": 4, "q": 1}))
        link.links[0].on_record(RoomCounts({"r": 2}))  # shard 0's newer count replaces its older
        link.links[shards - 1].on_record(RoomCounts({"q": 5}))  # (with 2 shards: shard 1's newer count)
        assert [c for c in t.calls if c[0] == "online"] == [
            ("online", {"r": 3}),
            ("online", {"r": 7, "q": 1}),
            ("online", {"r": 6}),
            ("online", {"q": 5 if shards == 2 else 6}),
        ]
        t.calls.clear()
        link.room_opened("r")
        link.room_closed("r")  # no local members: the shards' old counts go
        link.links[1].on_record(RoomCounts({"r": 1}))
        assert t.calls == [("online", {"r": 1})]

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_one_shard_down_leaves_the_other_shards_users_served(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        down = shards - 1
        link.links[down].conn = None
        answers: list[tuple[int, int]] = []
        for k in range(shards):
            ch = user(k, shards, f"k{k}")
            link.chat(ch, 1000, b"{}", f"m{k}", 5, lambda a, k=k: answers.append((k, a.code)))  # type: ignore[arg-type,misc]
            link.resume(ch, "", 0, True, lambda rec: None)  # type: ignore[arg-type]
        assert answers == [(down, -503)]
        assert [(c[0], c[1].key) for c in t.calls] == [("lost", f"k{down}")]  # its resume: op 6, at once
        for k in range(down):
            sent = conns[k].take()
            assert [type(r) for r in sent] == [Chat, Resume]
            link.links[k].on_record(ChatAck(1, 0, "", 3))
        assert sorted(answers) == sorted([(down, -503), *((k, 0) for k in range(down))])

    with_shards(tmp_path, shards, scenario)


def test_a_shard_dropping_fails_only_the_calls_it_owed(tmp_path: Path) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        answers: list[tuple[int, int]] = []
        for k in range(2):
            ch = user(k, 2, f"k{k}")
            link.chat(ch, 1000, b"{}", f"m{k}", 5, lambda a, k=k: answers.append((k, a.code)))  # type: ignore[arg-type,misc]
        link.links[1].calls.link_dropped()  # (what its stream does when shard 1 goes away)
        assert answers == [(1, -503)]
        link.links[0].on_record(ChatAck(1, 0, "", 3))
        assert answers == [(1, -503), (0, 0)]

    with_shards(tmp_path, 2, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_a_resync_from_one_shard_resyncs_only_that_link(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        t.sessions = [Entry(f"s{k}", mids_of(k, shards)[0], "live://x", "ip") for k in range(shards)]
        link.links[1].on_record(Resync())
        own = [e for e in t.sessions if owner(e.mid, e.key, shards) == 1]
        assert [conn.take() for conn in conns] == [[Sync(own)] if k == 1 else [] for k in range(shards)]
        alive(link, 1)  # its counts are now those it was sent
        (report,) = conns[1].take()
        assert (report.conns, report.beats, report.rooms) == (1, [], {"live://x": 1})

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_a_rooms_fence_is_skipped_only_by_a_shard_that_has_seen_it(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        link.room_opened("live://new")
        a, b = user(0, shards, "a"), user(1, shards, "b")
        link.register(a, "live://new", "ip")  # type: ignore[arg-type]
        link.register(b, "live://new", "ip")  # type: ignore[arg-type]
        assert conns[0].take() == [Connect(1, "a", a.mid, "live://new", "ip", 1)]
        assert conns[1].take() == [Connect(1, "b", b.mid, "live://new", "ip", 1)]
        link.links[0].on_record(Confirmed([1]))  # shard 0 has seen fence 1; shard 1 has not said so
        c, d = user(0, shards, "c", 1), user(1, shards, "d", 1)
        link.change_room(c, "live://new")  # type: ignore[arg-type]
        link.change_room(d, "live://new")  # type: ignore[arg-type]
        assert conns[0].take() == [RoomChange(2, "c", "live://new", 0)]
        assert conns[1].take() == [RoomChange(2, "d", "live://new", 1)]
        link.links[1].on_record(Confirmed([1]))
        link.change_room(d, "live://new")  # type: ignore[arg-type]
        assert conns[1].take() == [RoomChange(3, "d", "live://new", 0)]
        if shards == 3:  # shard 2 confirmed nothing: it still waits for the fence
            e = user(2, shards, "e")
            link.register(e, "live://new", "ip")  # type: ignore[arg-type]
            assert conns[2].take() == [Connect(1, "e", e.mid, "live://new", "ip", 1)]

    with_shards(tmp_path, shards, scenario)


@pytest.mark.parametrize("shards", [2, 3])
def test_close_says_goodbye_to_every_shard(tmp_path: Path, shards: int) -> None:
    async def scenario(link: HostLink, t: FakeTargets, conns: list[BufferedConn]) -> None:
        await link.close()
        sent = [conn.take() for conn in conns]
        assert [[type(r) for r in s] for s in sent] == [[Alive, Bye] for _ in range(shards)]
        assert all(s[0].stats is not None for s in sent)
        assert all(conn.closed for conn in conns)

    with_shards(tmp_path, shards, scenario)


# -- over real streams: two fake router shards listening where the worker links ---------------------

_decode_up = records.Decoder(list[records.WorkerRecord])


class RouterEnd(stream.FrameProtocol):
    """A fake router shard's end of one worker's stream: keeps what comes up."""

    def __init__(self, got: list[Any], ends: list[RouterEnd]) -> None:
        super().__init__(asyncio.get_running_loop())
        self.got = got
        ends.append(self)

    def on_frame(self, payload: bytes) -> None:
        self.got.extend(_decode_up(payload))


async def until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never came true")


def test_a_shard_that_goes_away_and_comes_back_is_synced_alone(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        endpoints = Endpoints.in_dir(str(tmp_path))
        got: list[list[Any]] = [[], []]
        ends: list[list[RouterEnd]] = [[], []]

        async def serve(k: int) -> asyncio.AbstractServer:
            return await stream.serve(loop, endpoints.router_of(k), lambda: RouterEnd(got[k], ends[k]))

        servers = [await serve(0), await serve(1)]
        link = HostLink(config.replace(config.Config(), router={"shards": 2}), endpoints, "3")
        t = FakeTargets()
        t.sessions = [Entry(f"s{k}", mids_of(k, 2)[0], "", "ip") for k in range(2)]
        link.attach(t, t, t)  # type: ignore[arg-type]
        try:
            hello = Hello(link.host, "3", os.getpid())
            for k in range(2):
                await until(lambda k=k: len(got[k]) >= 2)  # type: ignore[misc]
                assert got[k][:2] == [hello, Sync([t.sessions[k]])]
            servers[1].close()
            ends[1][0].abort()  # shard 1 goes away
            await until(lambda: not link.links[1].up())
            answers: list[tuple[int, int]] = []
            for k in range(2):
                ch = user(k, 2, f"k{k}")
                link.chat(ch, 1000, b"{}", f"m{k}", 5, lambda a, k=k: answers.append((k, a.code)))  # type: ignore[arg-type,misc]
            assert answers == [(1, -503)]
            await until(lambda: isinstance(got[0][-1], Chat))
            ends[0][0].send(records.encode(ChatAck(got[0][-1].req, 0, "", 1)))
            await until(lambda: len(answers) == 2)
            assert answers[1] == (0, 0)
            before = len(got[0])
            servers[1] = await serve(1)  # shard 1 is back: only its link greets and syncs again
            await until(lambda: len(got[1]) >= 4)
            assert got[1][2:4] == [hello, Sync([t.sessions[1]])]
            assert not any(isinstance(r, Hello | Sync) for r in got[0][before:])
        finally:
            await link.close()
            for server in servers:
                server.close()

    asyncio.run(main())


def test_a_shards_room_counts_name_every_local_room_with_0_for_the_other_shards_members() -> None:
    """So that each shard answers with its count of every room this worker has members in
    (the worker sums them); a shard told only of its own members' rooms left others out."""
    from mpim.worker.shards import ShardTally

    class Rooms:
        def local_counts(self) -> dict[str, int]:
            return {"live://a": 3, "live://b": 1}

    tally = ShardTally(Rooms())  # type: ignore[arg-type]
    tally.filed("k1", "live://a")
    assert tally.local_counts() == {"live://a": 1, "live://b": 0}
    assert tally.online == 1
