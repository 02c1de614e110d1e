"""Router shards: two routers of one host, each with its own users' sessions, answering for the host.

The shards' calls go through :class:`DirectPeers` (answered at once, in one loop); the
link itself (:class:`~mpim.router.shardlink.ShardPeers`) is tested over real sockets in
test_shardlink.py, and whole masters with several shards in tests/integration.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mpim.inbox import InboxLimits, MemoryInbox
from mpim.records import (
    Alive,
    BusSeen,
    Chat,
    ChatAck,
    Confirmed,
    Disconnect,
    Presence,
    PushKeys,
    PushMids,
    RoomCounts,
    ShardAnswer,
    ShardCall,
    Sync,
)
from mpim.router.console import Console
from mpim.router.errors import Refused
from mpim.router.metrics import Sources
from mpim.router.shardfabric import ShardFabric
from mpim.router.totals import WorkerTotals
from mpim.slots import owner_of_mid
from tests.router.fakes import FakeLink, Harness

# users owned by shard 0 and by shard 1 (of 2)
OWN = {k: [m for m in range(1, 200) if owner_of_mid(m, 2) == k][:3] for k in (0, 1)}
A, B = OWN[0][0], OWN[1][0]


class DirectPeers:
    """What ShardPeers does over its links, answered at once: calls go to the other fabric's serve."""

    def __init__(self, shard: int, fabrics: dict[int, ShardFabric], loop: asyncio.AbstractEventLoop) -> None:
        self.shard = shard
        self.fabrics = fabrics
        self.loop = loop
        self.down: set[int] = set()
        self.calls: list[tuple[int, ShardCall]] = []
        self._req = 0

    def others(self) -> list[int]:
        return [k for k in self.fabrics if k != self.shard]

    def up(self, shard: int) -> bool:
        return shard not in self.down

    def call(self, shard: int, make: Callable[[int], ShardCall]) -> asyncio.Future[ShardAnswer]:
        future: asyncio.Future[ShardAnswer] = self.loop.create_future()
        if shard in self.down:
            future.set_exception(Refused(-503, f"router shard {shard} is unreachable"))
            return future
        self._req += 1
        call = make(self._req)
        self.calls.append((shard, call))
        try:
            answer = self.fabrics[shard].serve(call)
        except Refused as exc:
            future.set_exception(exc)
            return future
        if isinstance(answer, ShardAnswer):
            future.set_result(answer)
        else:  # (a store write: answered once done)
            answer.add_done_callback(functools.partial(_copy, future))
        return future


def _copy(into: asyncio.Future[ShardAnswer], done: asyncio.Future[ShardAnswer]) -> None:
    exc = done.exception()
    if exc is not None:
        into.set_exception(exc)
    else:
        into.set_result(done.result())


class Pair:
    def __init__(self, expect1: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.inbox = MemoryInbox(InboxLimits())  # (the one file every shard writes)
        self.h = [
            Harness(loop=self.loop, inbox=self.inbox),
            Harness(loop=self.loop, inbox=self.inbox, expect=expect1),
        ]
        fabrics = {k: ShardFabric(h.router, k, 2) for k, h in enumerate(self.h)}
        self.peers = {k: DirectPeers(k, fabrics, self.loop) for k in fabrics}
        for k, h in enumerate(self.h):
            h.router.fabric = fabrics[k]
            fabrics[k].peers = self.peers[k]  # type: ignore[assignment]
        self.fabrics = fabrics

    def worker(self, name: str) -> list[FakeLink]:
        """One worker: its link to each shard."""
        return [h.worker(name) for h in self.h]

    def connect(self, shard: int, link: FakeLink, key: str, mid: int, room: str = "", ip: str = "ip") -> int:
        """A connect reported to ``shard``, its key filed with its keeper (maybe the other shard)."""
        req = self.h[shard].connect(link, key, mid, room, ip)
        self.settle()
        return req

    def run(self, aw: Any) -> Any:
        return self.loop.run_until_complete(aw)

    def settle(self) -> None:
        for _ in range(20):  # (the loop's clock is the test's: let the tasks run their turns)
            self.run(asyncio.sleep(0))

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def test_a_push_naming_users_of_both_shards_is_stored_once_and_reaches_each_owner(pair: Pair) -> None:
    w0, w1 = pair.worker("w1")
    pair.connect(0, w0, "ka", A)
    pair.connect(1, w1, "kb", B)
    w0.take(), w1.take()
    pair.peers[0].calls.clear()
    connections, seqs = pair.run(pair.h[0].router.push.mids(1000, [A, B, A], b"x"))
    assert (connections, seqs) == (2, {A: 1, B: 1})
    assert w0.take() == [PushMids(1000, ["ka"], [1], b"x")]
    assert w1.take() == [PushMids(1000, ["kb"], [1], b"x")]  # handed out by its owner, shard 1
    assert [type(c).__name__ for _, c in pair.peers[0].calls] == ["ShardPush"]  # (B's owner stores it)
    assert pair.run(pair.inbox.top(A)).seq == pair.run(pair.inbox.top(B)).seq == 1


def test_a_push_by_key_asks_every_other_shard_in_one_hop(pair: Pair) -> None:
    w0, w1 = pair.worker("w1")
    pair.connect(1, w1, "kb", B)
    w1.take()
    got = pair.h[0].router.push.keys(1000, ["kb", "nobody"], b"k")
    assert pair.run(got) == 1
    assert w1.take() == [PushKeys(1000, ["kb"], b"k")] and w0.take() == []


def test_private_chat_to_a_user_of_another_shard_is_stored_by_the_sender_and_handed_out_by_the_owner(
    pair: Pair,
) -> None:
    w0, w1 = pair.worker("w1")
    pair.connect(0, w0, "ka", A)
    pair.connect(1, w1, "kb", B)
    w0.take(), w1.take()
    peer = pair.h[0].router.workers.by_id[w0.id]
    pair.h[0].router.requests.chat(peer, Chat(7, "ka", A, 4, b'{"t":1}', "m1", B, True))
    pair.settle()
    sent = w0.take()
    assert [type(r) for r in sent] == [PushMids, ChatAck]  # the sender's own copy, then the answer
    assert sent[1] == ChatAck(7, 0, "", 1)
    (copy,) = w1.take()
    assert isinstance(copy, PushMids) and copy.keys == ["kb"] and copy.seqs == [1]
    assert json.loads(copy.body) == {"id": "m1", "from": A, "to": B, "body": {"t": 1}}
    pair.h[0].router.requests.chat(peer, Chat(8, "ka", A, 4, b'{"t":1}', "m1", B, True))  # a retry
    pair.settle()
    assert w0.take() == [ChatAck(8, 0, "", 1)] and w1.take() == []  # stored once
    assert pair.run(pair.inbox.top(B)).seq == 1


def test_presence_and_the_hosts_numbers_are_summed_over_the_shards(pair: Pair) -> None:
    w0, w1 = pair.worker("w1")
    pair.connect(0, w0, "ka", A, "live://1", "1.1.1.1")
    pair.connect(1, w1, "kb", B, "live://1", "2.2.2.2")
    pair.connect(1, w1, "kc", OWN[1][1], "live://2", "2.2.2.2")
    w0.take(), w1.take()
    peer = pair.h[0].router.workers.by_id[w0.id]
    pair.h[0].router.requests.presence(peer, Presence(3, "ka", A, [B, OWN[1][2], A]))
    pair.settle()
    (answer,) = w0.take()
    assert isinstance(answer, ChatAck) and json.loads(answer.body) == [B, A]
    fabric = pair.fabrics[0]
    assert pair.run(fabric.online_rooms(["live://1", "live://2", "none"])) == {
        "live://1": 2,
        "live://2": 1,
        "none": 0,
    }
    assert pair.run(fabric.top_rooms("live://", 1)) == [("live://1", 2)]
    totals = pair.run(fabric.totals())
    assert (totals.conn_count, totals.ip_count) == (3, 2)
    assert pair.run(fabric.worker_conns()) == {w0.id: 3}
    # what each worker is told of a room is its shard's own count (the worker sums them)
    assert fabric.room_online("live://1") == 1


def test_a_room_push_waits_for_every_worker_whatever_shard_holds_the_members(pair: Pair) -> None:
    w0, w1 = pair.worker("w1")
    _, v1 = pair.worker("w2")
    pair.connect(0, w0, "ka", A, "live://1")  # a member on shard 0 only
    h1 = pair.h[1]
    done = h1.router.push.room(1000, "live://1", b"r")
    mark = h1.bus.end_turn()
    pair.settle()
    assert not done.done()  # shard 1 has no member in its tables, yet it waits for both workers
    h1.send(w1, BusSeen(mark))
    pair.settle()
    assert not done.done()
    h1.send(v1, BusSeen(mark))
    pair.settle()
    assert done.done() and done.exception() is None


def test_a_push_whose_owner_is_unreachable_is_refused_before_anything_is_stored(pair: Pair) -> None:
    w0, _ = pair.worker("w1")
    pair.connect(0, w0, "ka", A)
    pair.peers[0].down.add(1)
    with pytest.raises(Refused) as info:
        pair.h[0].router.push.mids(1000, [A, B], b"x")
    assert info.value.code == -503 and "router shard 1" in info.value.message
    assert pair.run(pair.inbox.top(A)).seq == 0
    assert pair.run(pair.h[0].router.push.mids(1000, [A], b"x"))[0] == 1  # its own users: served


def test_an_owner_rebuilding_its_tables_makes_the_answer_say_what_was_delivered() -> None:
    pair = Pair(expect1=1)  # shard 1 waits for one worker's sessions before it serves
    try:
        w0 = pair.h[0].worker("w1")
        pair.connect(0, w0, "ka", A)
        future = pair.h[0].router.push.mids(1000, [A, B], b"x")
        with pytest.raises(Refused) as info:
            pair.run(future)
        assert info.value.code == -504  # (done for A: "maybe", not "nothing was done")
        assert "stored for 1 users, delivered to 1 connections" in info.value.message
        assert "rebuilding its tables" in info.value.message
        assert pair.run(pair.inbox.top(A)).seq == 1
        assert pair.run(pair.inbox.top(B)).seq == 0  # refused by its owner before it was stored
    finally:
        pair.close()


def test_where_a_key_or_a_user_is_connected_is_answered_for_the_host(pair: Pair) -> None:
    w0, w1 = pair.worker("w1")
    pair.connect(1, w1, "kb", B, "live://1", "2.2.2.2")
    pair.connect(0, w0, "ka", A)
    fabric = pair.fabrics[0]
    (row,) = pair.run(fabric.sessions("kb", 0))
    assert (row.key, row.mid, row.worker, row.room, row.ip) == ("kb", B, w1.id, "live://1", "2.2.2.2")
    assert [r.key for r in pair.run(fabric.sessions("", B))] == ["kb"]
    assert [r.key for r in pair.run(fabric.sessions("", A))] == ["ka"]
    assert pair.run(fabric.sessions("nobody", 0)) == []


def test_a_key_held_by_a_user_of_one_shard_is_denied_to_a_user_of_another_until_it_is_free(
    pair: Pair,
) -> None:
    w0, w1 = pair.worker("w1")
    c = OWN[1][1]
    for key in (f"key-{i}" for i in range(6)):  # keys kept by either shard
        pair.connect(0, w0, key, A)
        pair.settle()
        w0.take()
        req = pair.connect(1, w1, key, c)
        pair.settle()
        sent = w1.take()
        assert [type(r).__name__ for r in sent] == ["Denied"] and sent[0].reqs == [req], key
        assert pair.h[1].table.conn_of(key) is None  # forgotten where it was denied
        pair.h[0].send(w0, Disconnect(key))
        pair.settle()
        req = pair.connect(1, w1, key, c)
        pair.settle()
        assert w1.take() == [Confirmed([req])], key


def test_a_restarted_shards_claims_are_dropped_and_filed_again(pair: Pair) -> None:
    w0, _ = pair.worker("w1")
    keys = [f"r-{i}" for i in range(8)]
    for key in keys:
        pair.connect(0, w0, key, A)
    pair.settle()
    keeper1 = [k for k in keys if pair.fabrics[0].site.keeper(k) == 1]
    assert keeper1 and set(pair.fabrics[1].keys.claims.holders) == set(keeper1)
    pair.fabrics[1].shard_gone(0)  # shard 0's link closed (it restarts)
    assert len(pair.fabrics[1].keys.claims) == 0
    pair.fabrics[0].refile(1)  # linked again: everything it holds is filed again
    pair.settle()
    assert pair.fabrics[1].keys.claims.holders == dict.fromkeys(keeper1, (A, 0))
    pair.h[0].send(w0, Sync([]))  # its worker reported no session any more: a bulk change
    for h in pair.h:  # (the refile is due a moment later: one for a burst of changes)
        h.clock += 1.0
    pair.settle()
    assert len(pair.fabrics[1].keys.claims) == len(pair.fabrics[0].keys.claims) == 0


def test_each_shard_tells_a_worker_its_count_of_every_room_the_worker_has_members_in(pair: Pair) -> None:
    """Found by the worker side's review: a worker whose members of a room all belong to shard 0
    was never told shard 1's members of it (on other workers), so its clients saw too few."""
    w0, w1 = pair.worker("w1")
    _, v1 = pair.worker("w2")
    pair.connect(0, w0, "ka", A, "live://r")  # w1's member: shard 0's user
    pair.connect(1, v1, "kb", B, "live://r")  # w2's member: shard 1's user
    pair.connect(1, v1, "kc", OWN[1][1], "live://r")
    w1.take()
    # w1's report to shard 1: none of its members of live://r are shard 1's
    pair.h[1].send(w1, Alive(0, [], {"live://r": 0}, None))
    pair.h[1].router.send_room_counts()
    assert w1.take() == [RoomCounts({"live://r": 2})]  # (w1 adds shard 0's 1 itself)
    assert w1.take() == []
    pair.h[1].send(w1, Alive(0, [], {"live://r": 0}, None))  # (zeros are not drift)
    assert w1.take() == []


def test_the_consoles_pushes_per_second_are_the_hosts(pair: Pair) -> None:
    """Each shard's console counts the pushes every shard took in (a hop, summed at each tick)."""
    w0, _ = pair.worker("w1")
    pair.connect(0, w0, "ka", A)
    consoles = [
        Console(Sources(h.router, WorkerTotals(h.router)), pair.fabrics[k].views.host_pushes)
        for k, h in enumerate(pair.h)
    ]
    for c in consoles:
        c.tick()
    pair.settle()
    for k in (0, 1, 1, 1):  # (pushes taken in by both shards: 1 by shard 0, 3 by shard 1)
        pair.h[k].router.push.keys(1000, ["ka"], b"x")
    pair.settle()
    for _ in range(2):  # (the sum asked at one tick is seen at the next)
        pair.h[1].clock += 1.0  # (the loop's clock)
        for c in consoles:
            c.tick()
        pair.settle()
    for c in consoles:
        assert c.rates["pushes"] == 4.0 and c._host_seen == 4
