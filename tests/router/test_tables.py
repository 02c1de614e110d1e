from __future__ import annotations

from mpim.router.tables import SessionTable, WorkerInfo


def make(ttl: float = 10.0, tick: float = 1.0) -> tuple[SessionTable, WorkerInfo, WorkerInfo]:
    table = SessionTable(ttl, tick, now=0.0)
    a, _ = table.worker("h", "w1", 100)
    b, _ = table.worker("h", "w2", 200)
    return table, a, b


def test_put_counts_and_sessions_goim_v1() -> None:
    table, a, b = make()
    assert table.put(a, "k1", 7, "live://1", "1.1.1.1", 0.0) is None
    assert table.put(b, "k2", 7, "live://1", "1.1.1.2", 0.0) is None
    assert table.put(b, "k3", 8, "live://2", "1.1.1.2", 0.0) is None
    session = table.sessions[7]
    assert sorted(session.conns) == [1, 2]  # per-user sequence numbers
    assert {seq: c.worker.name for seq, c in session.conns.items()} == {1: "w1", 2: "w2"}
    assert {seq: c.room for seq, c in session.conns.items()} == {1: "live://1", 2: "live://1"}
    assert table.room_count == {"live://1": 2, "live://2": 1}
    assert a.room_count == {"live://1": 1} and b.room_count == {"live://1": 1, "live://2": 1}
    assert len(table) == 3 and table.ip_total == 2
    assert len(a.conns) == 1 and len(b.conns) == 2


def test_anonymous_users_have_no_session() -> None:
    table, a, _ = make()
    table.put(a, "k", 0, "", "ip", 0.0)
    assert table.sessions == {} and len(table) == 1
    assert table.conns_of(0) == []


def test_remove_and_empty_counters_vanish() -> None:
    table, a, b = make()
    table.put(a, "k1", 7, "live://1", "ip", 0.0)
    assert not table.remove(b, "k1")  # another worker cannot remove it
    assert table.remove(a, "k1")
    assert not table.remove(a, "k1")
    assert table.sessions == {} and table.room_count == {} and table.ip_count == {}
    assert a.room_count == {} and len(table) == 0


def test_same_key_on_same_worker_replaces_without_kick() -> None:
    table, a, _ = make()
    table.put(a, "k", 7, "live://1", "ip", 0.0)
    assert table.put(a, "k", 7, "live://2", "ip", 0.0) is None
    assert len(table) == 1 and table.room_count == {"live://2": 1}
    assert len(table.sessions[7].conns) == 1


def test_same_key_on_another_worker_kicks_the_older() -> None:
    table, a, b = make()
    table.put(a, "k", 7, "", "ip", 0.0)
    kick = table.put(b, "k", 7, "", "ip", 0.0)
    assert kick is not None and kick.worker is a and kick.key == "k"
    assert table.by_key["k"].worker is b and len(a.conns) == 0
    assert not table.remove(a, "k")  # the kicked connection's disconnect changes nothing
    assert table.by_key["k"].worker is b


def test_change_room() -> None:
    table, a, _ = make()
    table.put(a, "k", 7, "live://1", "ip", 0.0)
    assert table.change_room(a, "k", "live://2")
    assert table.room_count == {"live://2": 1}
    assert table.change_room(a, "k", "")
    assert table.room_count == {} and a.room_count == {}
    assert not table.change_room(a, "nope", "x")


def test_group_keys_and_conns_of() -> None:
    table, a, b = make()
    table.put(a, "k1", 7, "", "ip", 0.0)
    table.put(b, "k2", 7, "", "ip", 0.0)
    table.put(b, "k3", 8, "", "ip", 0.0)
    assert table.group_keys(["k1", "k3", "zz"]) == {a: ["k1"], b: ["k3"]}
    assert [(c.key, c.worker) for c in table.conns_of(7)] == [("k1", a), ("k2", b)]
    assert table.conns_of(9) == []


def test_heartbeat_expiry_sweep() -> None:
    table, a, _ = make(ttl=10.0, tick=1.0)
    table.put(a, "old", 1, "live://1", "ip", 0.0)
    table.put(a, "beating", 2, "live://1", "ip", 0.0)
    assert table.sweep(5.0) == []
    assert table.renew(a, ["beating", "unknown"], 8.0) == 1
    expired = table.sweep(11.5)
    assert [c.key for c in expired] == ["old"]
    assert table.room_count == {"live://1": 1}
    assert [c.key for c in table.sweep(19.5)] == ["beating"]
    assert len(table) == 0 and table.room_count == {}


def test_sweep_after_a_long_pause_and_renewed_twice() -> None:
    table, a, _ = make(ttl=2.0, tick=0.5)
    table.put(a, "k", 1, "", "ip", 0.0)
    table.renew(a, ["k"], 1.0)
    table.renew(a, ["k"], 1.0)
    assert table.sweep(2.9) == []
    assert [c.key for c in table.sweep(1000.0)] == ["k"]
    table.put(a, "k2", 1, "", "ip", 1000.0)
    assert table.sweep(1001.0) == []


def test_drop_worker_removes_everything() -> None:
    table, a, b = make()
    table.put(a, "k1", 7, "live://1", "ip1", 0.0)
    table.put(a, "k2", 8, "live://1", "ip2", 0.0)
    table.put(b, "k3", 7, "live://1", "ip3", 0.0)
    assert table.drop_worker(a) == 2
    assert a.id not in table.workers
    assert table.room_count == {"live://1": 1} and table.ip_total == 1
    assert list(table.sessions) == [7] and len(table) == 1
    assert table.sweep(100.0)[0].key == "k3"  # dropped ones left the expiry slots too
    assert len(table) == 0


def test_workers_and_predecessors() -> None:
    table = SessionTable(10.0, 1.0)
    old, new = table.worker("h", "w1", 1)
    assert new
    again, new = table.worker("h", "w1", 1)
    assert again is old and not new
    other, _ = table.worker("h", "w1", 2)
    table.worker("h2", "w1", 3)
    assert table.predecessors(other) == [old]


def test_sync_replaces_a_workers_sessions() -> None:
    table, a, b = make()
    table.put(a, "keep", 7, "live://1", "ip", 0.0)
    table.put(a, "gone", 8, "live://1", "ip", 0.0)
    table.put(b, "theirs", 9, "", "ip", 0.0)
    seq = table.by_key["keep"].seq
    kicks = table.sync(
        a,
        [("keep", 7, "live://2", "ip"), ("new", 10, "", "ip"), ("theirs", 9, "", "ip")],
        1.0,
    )
    assert [(k.worker, k.key) for k in kicks] == [(a, "theirs")]
    assert set(a.conns) == {"keep", "new"}
    assert table.by_key["keep"].seq == seq  # the same connection keeps its sequence number
    assert table.by_key["theirs"].worker is b
    assert table.room_count == {"live://2": 1}


def test_top_rooms() -> None:
    table, a, _ = make()
    for i, (room, n) in enumerate([("live://1", 3), ("live://2", 5), ("live://3", 3), ("chat://9", 9)]):
        for j in range(n):
            table.put(a, f"k{i}-{j}", 1, room, "ip", 0.0)
    assert table.top_rooms("live://", 2) == [("live://2", 5), ("live://1", 3)]
    assert table.top_rooms("live://", 10) == [("live://2", 5), ("live://1", 3), ("live://3", 3)]
    assert table.top_rooms("none://", 10) == []
