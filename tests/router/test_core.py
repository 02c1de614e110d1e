"""The router's logic without sockets: records in, link records and bus messages out, truthful answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpim import bus
from mpim.records import (
    Alive,
    BusSeen,
    Bye,
    Confirmed,
    Denied,
    Disconnect,
    Drained,
    Draining,
    Entry,
    FenceRequest,
    Kick,
    PushAll,
    PushKeys,
    PushMids,
    PushRoom,
    Resync,
    RoomChange,
    RoomCounts,
    Sync,
    Upstream,
)
from mpim.router.core import Refused
from tests.router.fakes import Harness


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def test_connect_is_confirmed_and_pushes_by_key_and_mid_go_to_the_right_links(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    req = h.connect(w1, "a", 7, "live://1", "1.2.3.4")
    assert w1.take() == [Confirmed([req])]
    h.connect(w2, "b", 7)
    h.connect(w2, "c", 8)
    w2.take()
    assert h.router.push.keys(1000, ["a", "c", "c", "nobody"], b"hi") == 2
    assert w1.take() == [PushKeys(1000, ["a"], b"hi")]
    assert w2.take() == [PushKeys(1000, ["c"], b"hi")]
    assert h.mids(1001, [7], b"x") == 2
    # stored first: both connections of user 7 get its stream seq 1
    assert w1.take() == [PushMids(1001, ["a"], [1], b"x")] and w2.take() == [PushMids(1001, ["b"], [1], b"x")]
    assert h.mids(1001, [99], b"x") == 0 and w1.take() == w2.take() == []


@settings(max_examples=80, deadline=None)
@given(
    placement=st.lists(st.tuples(st.integers(1, 6), st.integers(0, 2)), min_size=1, max_size=12),
    pushes=st.lists(st.lists(st.integers(1, 8), min_size=1, max_size=10), min_size=1, max_size=5),
)
def test_pushes_by_mid_reach_each_connection_once_in_seq_order(
    placement: list[tuple[int, int]], pushes: list[list[int]]
) -> None:
    """Users with connections spread over three workers (``placement``: one (mid, worker) per
    connection), pushes naming any users, some twice, some offline: each connection of a named user
    gets each push once, with its user's seq, in push order; one record per worker and push."""
    h = Harness()
    try:
        links = [h.worker(f"w{i}") for i in range(3)]
        owner = {}
        for n, (mid, w) in enumerate(placement):
            h.connect(links[w], f"k{n}", mid)
            owner[f"k{n}"] = (mid, links[w])
        for link in links:
            link.take()
        expected: dict[str, list[tuple[bytes, int]]] = {key: [] for key in owner}
        for i, mids in enumerate(pushes):
            body = b"%d" % i
            found, seqs = h.wait(h.router.push.mids(1000, mids, body))
            named = [key for key, (mid, _) in owner.items() if mid in mids]
            assert found == len(named) and sorted(seqs) == sorted(set(mids))
            for key in named:
                expected[key].append((body, seqs[owner[key][0]]))
            assert seqs == {mid: sum(mid in p for p in pushes[: i + 1]) for mid in set(mids)}
        got: dict[str, list[tuple[bytes, int]]] = {key: [] for key in owner}
        for link in links:
            bodies = []
            for record in link.take():
                assert isinstance(record, PushMids) and len(record.keys) == len(record.seqs)
                bodies.append(record.body)
                for key, seq in zip(record.keys, record.seqs, strict=True):
                    assert owner[key][1] is link
                    got[key].append((record.body, seq))
            assert len(bodies) == len(set(bodies))  # one record per push on each worker
        assert got == expected
    finally:
        h.close()


def test_room_and_all_wait_for_the_workers_marks(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "a", 1, "live://1")
    h.connect(w2, "b", 2, "")
    room = h.router.push.room(5, "live://1", b"r")
    everyone = h.router.push.all(6, 101, b"a")
    mark = h.bus.end_turn()
    assert h.bus.take() == [
        (bus.room_topic("live://1"), PushRoom(5, b"r")),
        (bus.BROADCAST, PushAll(6, 51, b"a")),
    ]
    assert not room.done() and not everyone.done()
    h.send(w1, BusSeen(mark))
    assert room.done() and room.result() is None  # only w1 has members in live://1
    assert not everyone.done()
    h.send(w2, BusSeen(mark))
    assert everyone.done() and everyone.result() is None


def test_a_room_with_no_members_anywhere_is_answered_at_once(h: Harness) -> None:
    h.worker("w1")
    future = h.router.push.room(5, "live://empty", b"r")
    assert future.done() and future.result() is None


def test_unconfirmed_room_push_times_out_with_504(h: Harness) -> None:
    w1 = h.worker("w1")
    h.connect(w1, "a", 1, "live://1")
    future = h.router.push.room(5, "live://1", b"r")
    h.bus.end_turn()
    h.clock += h.cfg.router.push_timeout + 0.1
    h.router.tick()
    assert isinstance(future.exception(), Refused)
    exc = future.exception()
    assert isinstance(exc, Refused) and exc.code == -504 and "h/w1/1" in exc.message


def test_registration_waits_for_the_workers_bus_fence(h: Harness) -> None:
    w1 = h.worker("w1")
    req = h.connect(w1, "a", 1, "live://new", fence=3)
    assert w1.take() == []  # not confirmed yet
    h.clock += 0.2
    h.router.tick()
    assert w1.take() == [FenceRequest()]  # and the router asks for the fence again
    assert h.router.push.keys(1000, ["a"], b"filed already") == 1
    w1.take()
    h.router.confirms.on_bus_fence(w1.id, 2)
    assert w1.take() == []
    h.router.confirms.on_bus_fence(w1.id, 3)
    assert w1.take() == [Confirmed([req])]


def test_disconnect_and_room_change(h: Harness) -> None:
    w1 = h.worker("w1")
    h.connect(w1, "a", 7, "live://1")
    req = w1.req()
    h.send(w1, RoomChange(req, "a", "live://2"))
    assert w1.take()[-1] == Confirmed([req])
    assert h.table.room_count == {"live://2": 1}
    h.send(w1, Disconnect("a"))
    assert len(h.table) == 0 and h.table.room_count == {}


def test_upstream_reaches_the_hook(h: Harness) -> None:
    w1 = h.worker("w1")
    h.send(w1, Upstream("a", 7, 4, b"hello"))
    assert h.received == [(7, "a", 4, b"hello")]


def test_same_key_on_another_worker_kicks_the_old_one(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "k", 7)
    h.connect(w2, "k", 7)
    assert w1.take() == [Confirmed([1]), Kick(["k"])]
    h.send(w1, Disconnect("k"))  # the kicked connection's goodbye changes nothing
    conn = h.table.conn_of("k")
    assert conn is not None and conn.worker.name == "w2"


def test_a_key_held_by_another_mid_is_denied_and_the_holder_keeps_it(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "k", 7, "live://1")
    w1.take()
    req = h.connect(w2, "k", 8, "live://2")  # another user claims the key (on another worker)
    [denied] = w2.take()
    assert denied == Denied([req], "key 'k' is held by another user (mid 7)")
    assert w1.take() == []  # no kick: the holder stays
    conn = h.table.conn_of("k")
    assert conn is not None and (conn.mid, conn.worker.name, conn.room) == (7, "w1", "live://1")
    assert h.router.push.keys(1000, ["k"], b"x") == 1 and w1.take() == [PushKeys(1000, ["k"], b"x")]
    assert h.mids(1000, [8], b"x") == 0
    same = h.connect(w1, "k", 8)  # on the holder's own worker too
    assert w1.take() == [Denied([same], "key 'k' is held by another user (mid 7)")]
    assert h.router.stats["denied"] == 2


def test_a_released_key_can_be_taken_by_another_mid(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "k", 0)  # mid 0 (anonymous) holds a key like anyone
    w1.take()
    h.connect(w2, "k", 5)
    assert [type(r) for r in w2.take()] == [Denied]
    h.send(w1, Disconnect("k"))
    req = h.connect(w2, "k", 5)
    assert w2.take() == [Confirmed([req])]
    conn = h.table.conn_of("k")
    assert conn is not None and conn.mid == 5


def test_room_counts_go_to_the_workers_with_members(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "a", 1, "live://1")
    h.connect(w2, "b", 2, "live://1")
    h.connect(w2, "c", 3, "live://2")
    w1.take(), w2.take()
    h.router.send_room_counts()
    assert w1.take() == [RoomCounts({"live://1": 2})]
    assert w2.take() == [RoomCounts({"live://1": 2, "live://2": 1})]


def test_sync_and_drift_triggers_resync(h: Harness) -> None:
    w1 = h.worker("w1", sync=False)
    h.send(w1, Sync([Entry("a", 1, "live://1", "ip"), Entry("b", 2, "", "ip")]))
    assert len(h.table) == 2
    h.send(w1, Alive(2, [], {"live://1": 1}))
    assert w1.take() == []
    # one mismatch may be a race; two in a row is drift
    h.clock = 3.0
    h.send(w1, Alive(3, [], None))
    assert w1.take() == []
    h.clock = 4.0
    h.send(w1, Alive(2, [], {"live://9": 1}))
    assert w1.take() == [Resync()]
    h.clock = 4.5
    h.send(w1, Alive(3, [], None), Alive(3, [], None))
    assert w1.take() == []  # rate-limited


def test_a_closed_link_drops_the_workers_sessions_at_once(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "a", 1, "live://1")
    h.connect(w2, "b", 1, "live://1")
    h.router.workers.detach(w1)
    assert {c.key for c in h.table.conns_of(1)} == {"b"} and h.table.room_count == {"live://1": 1}
    assert [w["name"] for w in h.router.workers.view()] == ["w2"]


def test_silent_worker_is_swept_and_resyncs_when_it_speaks_again(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "a", 7, "live://1")
    h.connect(w2, "b", 8, "live://1")
    for t in (2.0, 4.0, 6.0):
        h.clock = t
        h.send(w2, Alive(1, ["b"], None))
        h.router.sweep()
    assert {c.key for c in [h.table.conn_of("a"), h.table.conn_of("b")] if c} == {"b"}
    assert [w["name"] for w in h.router.workers.view()] == ["w2"]
    w1.take()
    h.send(w1, Alive(1, ["a"], None))
    assert w1.take() == [Resync()]
    h.send(w1, Sync([Entry("a", 7, "live://1", "ip")]))
    assert h.table.room_count == {"live://1": 2}


def test_sessions_expire_without_heartbeats() -> None:
    h = Harness(router={"worker_expiry": 1000.0})
    w1 = h.worker("w1")
    h.connect(w1, "quiet", 7)
    h.connect(w1, "beats", 8)
    ttl = h.router.session_ttl
    assert ttl == 20.0 + 2 * 1.0 + 1.0
    h.clock = ttl - 1
    h.send(w1, Alive(2, ["beats"], None))
    h.clock = ttl + 2
    h.router.sweep()
    assert h.table.conn_of("beats") is not None and h.table.conn_of("quiet") is None
    h.close()


def test_new_pid_in_the_same_slot_replaces_a_dead_predecessor() -> None:
    h = Harness(alive=False)
    old = h.worker("w1", 1)
    h.connect(old, "a", 7)
    new = h.worker("w1", 2)
    h.connect(new, "b", 7)
    assert [c.key for c in h.table.conns_of(7)] == ["b"]
    h.close()


def test_new_pid_in_the_same_slot_keeps_a_live_predecessor(h: Harness) -> None:
    old = h.worker("w1", 1)  # e.g. the old generation still draining after a reload
    h.connect(old, "a", 7)
    new = h.worker("w1", 2)
    h.connect(new, "b", 7)
    assert sorted(c.key for c in h.table.conns_of(7)) == ["a", "b"]
    h.send(old, Bye())
    assert [c.key for c in h.table.conns_of(7)] == ["b"]


def test_malformed_records_are_counted_and_ignored(h: Harness) -> None:
    from mpim.router.tables import Kick as TableKick

    w1 = h.worker("w1")
    stranger = h.worker("w9", sync=False)
    h.router.workers.detach(stranger)
    h.send(stranger, Alive(0, [], None))  # a link the router no longer knows: ignored
    anonymous = type(w1)("x", 1)
    h.router.workers.attach(anonymous)
    h.send(anonymous, Alive(0, [], None))  # before Hello
    assert h.router.stats["bad_records"] == 1
    h.connect(w1, "ok", 1)
    assert h.table.conn_of("ok") is not None
    assert TableKick  # the table's own kick type stays internal


def test_not_whole_after_a_restart_refuses_pushes_until_the_workers_synced() -> None:
    h = Harness(expect=2)
    h.worker("w1")
    with pytest.raises(Refused) as info:
        h.router.push.mids(1000, [1], b"x")
    assert info.value.code == -503 and "1 of 2 workers" in info.value.message
    h.worker("w2")
    assert h.mids(1000, [1], b"x") == 0
    h.close()


def test_not_whole_gives_up_waiting_after_worker_expiry() -> None:
    h = Harness(expect=3)
    h.worker("w1")
    h.clock = h.cfg.router.worker_expiry + 0.1
    h.router.tick()
    assert h.mids(1000, [1], b"x") == 0
    h.close()


def test_stopping_refuses_every_push(h: Harness) -> None:
    h.worker("w1")
    h.router.push.stop()
    for push in (
        lambda: h.router.push.keys(1, ["k"], b""),
        lambda: h.router.push.mids(1, [1], b""),
        lambda: h.router.push.room(1, "r://1", b""),
        lambda: h.router.push.all(1, 0, b""),
    ):
        with pytest.raises(Refused) as info:
            push()
        assert info.value.code == -503


def test_bus_down_refuses_room_pushes_and_fails_the_waiting_ones(h: Harness) -> None:
    w1 = h.worker("w1")
    h.connect(w1, "a", 1, "live://1")
    waiting = h.router.push.room(5, "live://1", b"r")
    h.bus.connected = False
    h.router.bus_changed(False)
    exc = waiting.exception()
    assert isinstance(exc, Refused) and exc.code == -503
    with pytest.raises(Refused):
        h.router.push.room(5, "live://1", b"r")
    assert h.router.push.keys(1000, ["a"], b"unicast does not need the bus") == 1
    h.bus.connected = True
    h.router.bus_changed(True)
    assert FenceRequest() in w1.take()
    with pytest.raises(Refused) as info:  # not back on the bus until its fence came through
        h.router.push.room(5, "live://1", b"r")
    assert "not on the bus yet" in info.value.message
    h.router.confirms.on_bus_fence(w1.id, 0)
    assert not h.router.push.room(5, "live://1", b"r").done()


def test_a_draining_worker_gets_no_more_pushes_and_its_answer_carries_the_mark(h: Harness) -> None:
    w1, w2 = h.worker("w1"), h.worker("w2")
    h.connect(w1, "a", 1, "live://1")
    h.connect(w2, "b", 1, "live://1")
    w1.take()
    h.send(w1, Draining(42))
    mark = h.bus.end_turn()
    assert w1.take() == [Drained(42, mark)]
    assert h.mids(1000, [1], b"x") == 1  # only w2's connection
    future = h.router.push.room(5, "live://1", b"r")
    h.send(w2, BusSeen(h.bus.end_turn()))
    assert future.done()  # w1 is not waited for


def test_push_futures_are_plain_asyncio_futures(h: Harness) -> None:
    h.worker("w1")
    future = h.router.push.all(1, 0, b"x")
    assert isinstance(future, asyncio.Future)


def test_pushes_relayed_from_other_hosts_wait_for_the_bus_and_keep_their_order(h: Harness) -> None:
    """A room push that came through Redis while the bus (or a worker's place on it) is not back
    is held, then published in order once every worker's fence came through."""
    from mpim import records

    w1 = h.worker("w1")

    def relay(body: bytes) -> None:
        h.router.relay.publish(b"r:1", records.encode(PushRoom(1000, body)))

    def bodies() -> list[bytes]:
        return [record.body for _, record in h.bus.take()]

    relay(b"at once")
    assert bodies() == [b"at once"]
    h.bus.connected = False
    h.router.bus_changed(False)
    relay(b"1")
    relay(b"2")
    assert h.bus.published == []
    h.bus.connected = True
    h.router.bus_changed(True)
    relay(b"3")  # (behind the held ones, even once the bus is whole)
    assert h.bus.published == []
    h.router.on_bus_fence(w1.id, 1)
    assert bodies() == [b"1", b"2", b"3"]


class _Filing:
    """Records what the router tells the fabric about this host's sessions."""

    def __init__(self, fabric: Any) -> None:
        self.fabric = fabric
        self.calls: list[tuple[str, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fabric, name)

    def unfile(self, key: str, mid: int) -> None:
        self.calls.append(("unfile", key))

    def sessions_changed(self) -> None:
        self.calls.append(("changed",))


def test_every_way_sessions_leave_the_tables_is_told_to_the_fabric() -> None:
    """A dead worker replaced by its next pid, a silent worker swept, a worker that said Bye and
    sessions that expired: each leaves the other hosts' view now, not at the entries' expiry
    (the other hosts would count them delivered meanwhile)."""
    h = Harness(alive=False)
    filing = _Filing(h.router.fabric)
    h.router.fabric = filing  # type: ignore[assignment]
    old = h.worker("w1", 1)
    h.connect(old, "a", 7)
    filing.calls.clear()
    h.worker("w1", 2, sync=False)  # its Hello: the dead pid's sessions go
    assert filing.calls == [("changed",)]
    filing.calls.clear()
    w2 = h.worker("w2", 3)
    h.connect(w2, "b", 8)
    filing.calls.clear()
    h.send(w2, Bye())
    assert filing.calls == [("changed",)]
    filing.calls.clear()
    w3 = h.worker("w3", 4)
    h.connect(w3, "c", 9)
    filing.calls.clear()
    h.clock = h.cfg.router.worker_expiry + 1
    h.router.sweep()  # silent past worker_expiry
    assert filing.calls == [("changed",)]
    filing.calls.clear()
    w4 = h.worker("w4", 5)
    h.connect(w4, "d", 10)
    h.clock += h.router.session_ttl + 1
    h.send(w4, Alive(0, [], None))
    h.router.sweep()  # no heartbeat for a whole ttl
    assert ("unfile", "d") in filing.calls
    h.close()
