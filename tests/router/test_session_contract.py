"""The contract of a session store (:class:`mpim.router.store.SessionStore`), for every store.

Each test speaks only the protocol, so it runs on the in-memory tables the router uses
(:class:`~mpim.router.tables.SessionTable`) and on the reference model written the obvious
way (:mod:`tests.router.session_model`); a hypothesis test then drives both with the same
random operations and compares every answer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mpim.router.store import SessionStore
from mpim.router.tables import SessionTable, WorkerInfo
from tests.router.session_model import ModelSessions

Factory = Callable[..., SessionStore]
FACTORIES: dict[str, Factory] = {"tables": SessionTable, "model": ModelSessions}


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[request.param]


def two(make: Factory, ttl: float = 10.0, tick: float = 1.0) -> tuple[SessionStore, WorkerInfo, WorkerInfo]:
    store = make(ttl, tick, now=0.0)
    a, _ = store.worker("h", "w1", 100)
    b, _ = store.worker("h", "w2", 200)
    return store, a, b


def keys(conns: list[object]) -> list[str]:
    return [c.key for c in conns]  # type: ignore[attr-defined]


def test_put_files_a_connection_under_its_key_user_room_and_ip(make: Factory) -> None:
    store, a, b = two(make)
    assert store.put(a, "k1", 7, "live://1", "1.1.1.1", 0.0) is None
    assert store.put(b, "k2", 7, "live://1", "1.1.1.2", 0.0) is None
    assert store.put(b, "k3", 8, "live://2", "1.1.1.2", 0.0) is None
    assert [(c.key, c.seq, c.worker) for c in store.conns_of(7)] == [("k1", 1, a), ("k2", 2, b)]
    assert store.room_counts() == {"live://1": 2, "live://2": 1}
    assert store.online("live://1") == 2 and store.online("live://9") == 0
    assert len(store) == 3 and store.ip_total == 2
    assert a.room_count == {"live://1": 1} and b.room_count == {"live://1": 1, "live://2": 1}
    assert set(b.conns) == {"k2", "k3"}


def test_an_anonymous_connection_has_no_user(make: Factory) -> None:
    store, a, _ = two(make)
    store.put(a, "k", 0, "", "ip", 0.0)
    assert len(store) == 1 and store.conns_of(0) == [] and store.conn_of("k") is not None


def test_only_the_holding_worker_removes_a_key_and_counts_vanish(make: Factory) -> None:
    store, a, b = two(make)
    store.put(a, "k1", 7, "live://1", "ip", 0.0)
    assert not store.remove(b, "k1")
    assert store.remove(a, "k1") and not store.remove(a, "k1")
    assert store.room_counts() == {} and store.ip_total == 0 and len(store) == 0
    assert a.room_count == {} and store.conns_of(7) == []


def test_a_key_again_on_its_worker_replaces_it_and_on_another_kicks_the_older(make: Factory) -> None:
    store, a, b = two(make)
    store.put(a, "k", 7, "live://1", "ip", 0.0)
    assert store.put(a, "k", 7, "live://2", "ip", 0.0) is None
    assert len(store) == 1 and store.room_counts() == {"live://2": 1}
    kick = store.put(b, "k", 7, "", "ip", 0.0)
    assert kick is not None and kick.worker is a and kick.key == "k"
    conn = store.conn_of("k")
    assert conn is not None and conn.worker is b and a.conns == {}
    assert not store.remove(a, "k")  # the kicked connection's disconnect changes nothing


def test_change_room_moves_the_counts(make: Factory) -> None:
    store, a, _ = two(make)
    store.put(a, "k", 7, "live://1", "ip", 0.0)
    assert store.change_room(a, "k", "live://2") and store.room_counts() == {"live://2": 1}
    assert store.change_room(a, "k", "") and store.room_counts() == {} and a.room_count == {}
    assert not store.change_room(a, "nope", "x")


def test_group_keys_by_the_worker_holding_them(make: Factory) -> None:
    store, a, b = two(make)
    store.put(a, "k1", 7, "", "ip", 0.0)
    store.put(b, "k2", 7, "", "ip", 0.0)
    store.put(b, "k3", 8, "", "ip", 0.0)
    assert store.group_keys(["k1", "k3", "zz"]) == {a: ["k1"], b: ["k3"]}


def test_a_connection_expires_ttl_after_its_last_heartbeat(make: Factory) -> None:
    store, a, _ = two(make, ttl=10.0, tick=1.0)
    store.put(a, "old", 1, "live://1", "ip", 0.0)
    store.put(a, "beating", 2, "live://1", "ip", 0.0)
    assert store.sweep(5.0) == []
    assert store.renew(a, ["beating", "unknown"], 8.0) == 1
    assert keys(store.sweep(11.5)) == ["old"]  # type: ignore[arg-type]
    assert store.room_counts() == {"live://1": 1}
    assert keys(store.sweep(19.5)) == ["beating"]  # type: ignore[arg-type]
    assert len(store) == 0


def test_dropping_a_worker_drops_its_sessions_only(make: Factory) -> None:
    store, a, b = two(make)
    store.put(a, "k1", 7, "live://1", "ip1", 0.0)
    store.put(a, "k2", 8, "live://1", "ip2", 0.0)
    store.put(b, "k3", 7, "live://1", "ip3", 0.0)
    assert store.drop_worker(a) == 2
    assert a.id not in store.workers
    assert store.room_counts() == {"live://1": 1} and store.ip_total == 1
    assert keys(store.conns_of(7)) == ["k3"] and store.conns_of(8) == []  # type: ignore[arg-type]
    assert keys(store.sweep(100.0)) == ["k3"]  # type: ignore[arg-type]


def test_workers_are_incarnations_and_predecessors_share_host_and_name(make: Factory) -> None:
    store = make(10.0, 1.0)
    old, new = store.worker("h", "w1", 1)
    assert new
    again, new = store.worker("h", "w1", 1)
    assert again is old and not new
    other, _ = store.worker("h", "w1", 2)
    store.worker("h2", "w1", 3)
    assert store.predecessors(other) == [old]


def test_sync_replaces_a_workers_sessions_and_keeps_the_same_connections(make: Factory) -> None:
    store, a, b = two(make)
    store.put(a, "keep", 7, "live://1", "ip", 0.0)
    store.put(a, "gone", 8, "live://1", "ip", 0.0)
    store.put(b, "theirs", 9, "", "ip", 0.0)
    kept = store.conn_of("keep")
    kicks = store.sync(
        a, [("keep", 7, "live://2", "ip"), ("new", 10, "", "ip"), ("theirs", 9, "", "ip")], 1.0
    )
    assert [(k.worker, k.key) for k in kicks] == [(a, "theirs")]
    assert set(a.conns) == {"keep", "new"}
    assert store.conn_of("keep") is kept  # the same connection, its sequence number kept
    theirs = store.conn_of("theirs")
    assert theirs is not None and theirs.worker is b
    assert store.room_counts() == {"live://2": 1}


def test_top_rooms_fullest_first_then_by_name(make: Factory) -> None:
    store, a, _ = two(make)
    for i, (room, n) in enumerate([("live://1", 3), ("live://2", 5), ("live://3", 3), ("chat://9", 9)]):
        for j in range(n):
            store.put(a, f"k{i}-{j}", 1, room, "ip", 0.0)
    assert store.top_rooms("live://", 2) == [("live://2", 5), ("live://1", 3)]
    assert store.top_rooms("live://", 10) == [("live://2", 5), ("live://1", 3), ("live://3", 3)]
    assert store.top_rooms("none://", 10) == []


# -- the tables against the model, by random operations ------------------------------------------

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
MIDS = st.sampled_from([0, 1, 2, 3])
ROOMS = st.sampled_from(["", "live://1", "live://2"])
IPS = st.sampled_from(["ip1", "ip2", "ip3"])
TICK = 1.0
TTL = 5.0


class TablesAgainstModel(RuleBasedStateMachine):
    """Every answer of SessionTable equals the model's; a sweep removes what expired (the
    tables may keep an expired connection until the end of its expiry slot: at most one tick)."""

    def __init__(self) -> None:
        super().__init__()
        self.real = SessionTable(TTL, TICK, now=0.0)
        self.model = ModelSessions(TTL, TICK, now=0.0)
        self.now = 0.0
        self.workers: list[tuple[WorkerInfo, WorkerInfo]] = []
        for name in ("w1", "w2"):
            self._add_worker(name, 1)

    def _add_worker(self, name: str, pid: int) -> None:
        self.workers.append((self.real.worker("h", name, pid)[0], self.model.worker("h", name, pid)[0]))

    @rule(w=st.integers(0, 3), key=KEYS, mid=MIDS, room=ROOMS, ip=IPS)
    def put(self, w: int, key: str, mid: int, room: str, ip: str) -> None:
        real, model = self.workers[w % len(self.workers)]
        kr = self.real.put(real, key, mid, room, ip, self.now)
        km = self.model.put(model, key, mid, room, ip, self.now)
        assert (kr is None) == (km is None)
        if kr is not None and km is not None:
            assert kr.key == km.key and kr.worker.id == km.worker.id

    @rule(w=st.integers(0, 3), key=KEYS)
    def remove(self, w: int, key: str) -> None:
        real, model = self.workers[w % len(self.workers)]
        assert self.real.remove(real, key) == self.model.remove(model, key)

    @rule(w=st.integers(0, 3), key=KEYS, room=ROOMS)
    def change_room(self, w: int, key: str, room: str) -> None:
        real, model = self.workers[w % len(self.workers)]
        assert self.real.change_room(real, key, room) == self.model.change_room(model, key, room)

    @rule(w=st.integers(0, 3), ks=st.lists(KEYS, max_size=4))
    def renew(self, w: int, ks: list[str]) -> None:
        real, model = self.workers[w % len(self.workers)]
        assert self.real.renew(real, ks, self.now) == self.model.renew(model, ks, self.now)

    @rule(
        w=st.integers(0, 3),
        entries=st.lists(st.tuples(KEYS, MIDS, ROOMS, IPS), max_size=4, unique_by=lambda e: e[0]),
    )
    def sync(self, w: int, entries: list[tuple[str, int, str, str]]) -> None:
        real, model = self.workers[w % len(self.workers)]
        kr = self.real.sync(real, entries, self.now)
        km = self.model.sync(model, entries, self.now)
        assert [(k.worker.id, k.key) for k in kr] == [(k.worker.id, k.key) for k in km]

    @precondition(lambda self: len(self.workers) > 1)
    @rule(w=st.integers(0, 3))
    def drop_worker(self, w: int) -> None:
        real, model = self.workers.pop(w % len(self.workers))
        assert self.real.drop_worker(real) == self.model.drop_worker(model)

    @precondition(lambda self: len(self.workers) < 4)
    @rule(name=st.sampled_from(["w1", "w2", "w3"]))
    def new_incarnation(self, name: str) -> None:
        self._add_worker(name, 2 + len(self.workers))

    @rule(dt=st.sampled_from([0.3, 1.0, 2.5, 6.0]))
    def sweep(self, dt: float) -> None:
        self.now += dt
        expired = {c.key for c in self.real.sweep(self.now)}
        due = {c.key for c in self.model.conns if c.expires <= self.now}
        overdue = {c.key for c in self.model.conns if c.expires <= self.now - TICK}
        assert overdue <= expired <= due, (overdue, expired, due)
        for conn in [c for c in self.model.conns if c.key in expired]:
            self.model._forget(conn)

    @invariant()
    def same_answers(self) -> None:
        real, model = self.real, self.model
        assert len(real) == len(model)
        assert real.ip_total == model.ip_total
        assert real.room_counts() == model.room_counts()
        assert real.top_rooms("live://", 5) == model.top_rooms("live://", 5)
        for key in [f"k{i}" for i in range(8)]:
            a, b = real.conn_of(key), model.conn_of(key)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert (a.mid, a.room, a.ip, a.seq, a.worker.id) == (b.mid, b.room, b.ip, b.seq, b.worker.id)
        for mid in (1, 2, 3):
            assert [(c.key, c.seq) for c in real.conns_of(mid)] == [
                (c.key, c.seq) for c in model.conns_of(mid)
            ]
        for r, m in self.workers:
            assert set(r.conns) == set(m.conns) and r.room_count == m.room_count
        groups = real.group_keys([f"k{i}" for i in range(8)])
        assert {w.id: ks for w, ks in groups.items()} == {
            w.id: ks for w, ks in model.group_keys([f"k{i}" for i in range(8)]).items()
        }


TablesAgainstModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_the_tables_answer_as_the_model_does = TablesAgainstModel.TestCase
