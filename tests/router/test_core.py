from __future__ import annotations

from typing import Any

from mpim import bus, config
from mpim.router.core import Router


class Harness:
    def __init__(self, alive: bool = True, **router: Any) -> None:
        self.cfg = config.replace(
            config.Config(),
            protocol={"heartbeat": 10, "heartbeat_max": 2},
            router={"report_interval": 1.0, "worker_expiry": 5.0, **router},
        )
        self.sent: list[tuple[bytes, Any]] = []
        self.received: list[tuple[int, str, int, bytes]] = []
        self.router = Router(
            self.cfg,
            lambda topic, env: self.sent.append((topic, bus.unpack(env))),
            lambda *args: self.received.append(args),
            0.0,
            host="h",
            epoch=77,
            is_alive=lambda pid: alive,
        )

    def report(self, name: str, pid: int, *events: list[Any], now: float = 0.0) -> None:
        self.router.on_report(bus.pack(["h", name, pid, list(events)]), now)

    def take(self) -> list[tuple[bytes, Any]]:
        sent, self.sent = self.sent, []
        return sent


def wid(name: str, pid: int) -> str:
    return f"h/{name}/{pid}"


def test_connect_then_push_keys_and_mids_goes_to_the_right_worker_topics() -> None:
    h = Harness()
    h.report("w1", 1, [bus.EV_CONNECT, "a", 7, "live://1", "1.2.3.4"])
    h.report("w2", 2, [bus.EV_CONNECT, "b", 7, "", "1.2.3.4"], [bus.EV_CONNECT, "c", 8, "", "1.2.3.5"])
    assert h.router.push_keys(1000, ["a", "c", "c", "nobody"], b"hi") == 2
    assert sorted(h.take()) == sorted(
        [
            (bus.worker_topic(wid("w1", 1)), [bus.PUSH_KEYS, 1000, ["a"], b"hi"]),
            (bus.worker_topic(wid("w2", 2)), [bus.PUSH_KEYS, 1000, ["c"], b"hi"]),
        ]
    )
    assert h.router.push_mids(1001, [7], b"x") == 2
    assert sorted(h.take()) == sorted(
        [
            (bus.worker_topic(wid("w1", 1)), [bus.PUSH_KEYS, 1001, ["a"], b"x"]),
            (bus.worker_topic(wid("w2", 2)), [bus.PUSH_KEYS, 1001, ["b"], b"x"]),
        ]
    )
    assert h.router.push_mids(1001, [99], b"x") == 0 and h.take() == []


def test_room_and_all_topics_and_speed_share() -> None:
    h = Harness()
    h.router.push_room(5, "live://1", b"r")
    h.router.push_all(6, 100, b"a")
    h.report("w1", 1)
    h.report("w2", 2)
    h.router.push_all(6, 101, b"a")
    h.router.push_all(6, 0, b"a")
    assert h.take() == [
        (bus.room_topic("live://1"), [bus.PUSH_ROOM, 5, b"r"]),
        (bus.BROADCAST, [bus.PUSH_ALL, 6, 100, b"a"]),
        (bus.BROADCAST, [bus.PUSH_ALL, 6, 51, b"a"]),
        (bus.BROADCAST, [bus.PUSH_ALL, 6, 0, b"a"]),
    ]


def test_disconnect_and_room_change() -> None:
    h = Harness()
    h.report("w1", 1, [bus.EV_CONNECT, "a", 7, "live://1", "ip"], [bus.EV_ROOM, "a", "live://2"])
    assert h.router.table.room_count == {"live://2": 1}
    h.report("w1", 1, [bus.EV_DISCONNECT, "a"])
    assert len(h.router.table) == 0 and h.router.table.room_count == {}


def test_upstream_reaches_the_hook() -> None:
    h = Harness()
    h.report("w1", 1, [bus.EV_UPSTREAM, "a", 7, 4, b"hello"])
    assert h.received == [(7, "a", 4, b"hello")]


def test_same_key_on_another_worker_kicks_the_old_one() -> None:
    h = Harness()
    h.report("w1", 1, [bus.EV_CONNECT, "k", 7, "", "ip"])
    h.report("w2", 2, [bus.EV_CONNECT, "k", 7, "", "ip"])
    assert h.take() == [(bus.worker_topic(wid("w1", 1)), [bus.KICK, ["k"]])]
    h.report("w1", 1, [bus.EV_DISCONNECT, "k"])
    assert h.router.table.by_key["k"].worker.name == "w2"


def test_status_carries_epoch_and_room_counts() -> None:
    h = Harness()
    h.report("w1", 1, [bus.EV_CONNECT, "a", 7, "live://1", "ip"])
    h.router.publish_status(False)
    h.router.publish_status(True)
    assert h.take() == [
        (bus.CONTROL, [bus.STATUS, 77, None]),
        (bus.CONTROL, [bus.STATUS, 77, {"live://1": 1}]),
    ]


def test_sync_after_restart_and_drift_triggers_resync() -> None:
    h = Harness()
    w = bus.worker_topic(wid("w1", 1))
    # a worker that already synced with this epoch but is unknown (we restarted): ask it
    h.report("w1", 1, [bus.EV_ALIVE, 3, 77, [], None])
    assert h.take() == [(w, [bus.RESYNC])]
    h.report("w1", 1, [bus.EV_ALIVE, 3, 77, [], None], now=0.5)
    assert h.take() == []  # rate-limited
    h.report("w1", 1, [bus.EV_SYNC, 77, [["a", 1, "live://1", "ip"], ["b", 2, "", "ip"]]], now=1.0)
    assert len(h.router.table) == 2
    h.report("w1", 1, [bus.EV_ALIVE, 2, 77, [], {"live://1": 1}], now=2.0)
    assert h.take() == []
    # one mismatch may be a race; two in a row is drift
    h.report("w1", 1, [bus.EV_ALIVE, 3, 77, [], None], now=3.0)
    assert h.take() == []
    h.report("w1", 1, [bus.EV_ALIVE, 2, 77, [], {"live://9": 1}], now=4.0)
    assert h.take() == [(w, [bus.RESYNC])]
    # a worker that has not seen our epoch yet is left alone: it syncs on its own
    h.report("w2", 2, [bus.EV_ALIVE, 5, 12, [], None], now=4.0)
    assert h.take() == []


def test_silent_worker_is_dropped_by_the_sweep() -> None:
    h = Harness()
    h.report("w1", 1, [bus.EV_CONNECT, "a", 7, "live://1", "ip"], now=0.0)
    h.report("w2", 2, [bus.EV_CONNECT, "b", 8, "live://1", "ip"], now=0.0)
    for t in (2.0, 4.0, 6.0):
        h.report("w2", 2, [bus.EV_ALIVE, 1, 0, ["b"], None], now=t)
        h.router.sweep(t)
    assert set(h.router.table.by_key) == {"b"}
    assert list(h.router.table.workers) == [wid("w2", 2)]
    assert h.router.table.room_count == {"live://1": 1}


def test_sessions_expire_without_heartbeats() -> None:
    h = Harness(worker_expiry=1000.0)
    h.report("w1", 1, [bus.EV_CONNECT, "quiet", 7, "", "ip"], [bus.EV_CONNECT, "beats", 8, "", "ip"])
    ttl = h.router.session_ttl
    assert ttl == 20.0 + 2 * 1.0 + 1.0
    h.report("w1", 1, [bus.EV_ALIVE, 2, 0, ["beats"], None], now=ttl - 1)
    h.router.sweep(ttl + 2)
    assert set(h.router.table.by_key) == {"beats"}


def test_new_pid_in_the_same_slot_replaces_a_dead_predecessor() -> None:
    h = Harness(alive=False)
    h.report("w1", 1, [bus.EV_CONNECT, "a", 7, "", "ip"])
    h.report("w1", 2, [bus.EV_CONNECT, "b", 7, "", "ip"])
    assert set(h.router.table.by_key) == {"b"}
    assert list(h.router.table.workers) == [wid("w1", 2)]


def test_new_pid_in_the_same_slot_keeps_a_live_predecessor() -> None:
    h = Harness(alive=True)  # e.g. the old generation still draining after a reload
    h.report("w1", 1, [bus.EV_CONNECT, "a", 7, "", "ip"])
    h.report("w1", 2, [bus.EV_CONNECT, "b", 7, "", "ip"])
    assert set(h.router.table.by_key) == {"a", "b"}
    h.report("w1", 1, [bus.EV_BYE])
    assert set(h.router.table.by_key) == {"b"}


def test_malformed_reports_are_counted_and_ignored() -> None:
    h = Harness()
    h.router.on_report(b"\xc1 not msgpack", 0.0)
    h.router.on_report(bus.pack({"not": "a list"}), 0.0)
    h.router.on_report(bus.pack(["h", 5, 1, []]), 0.0)
    bad_events = [[99], [bus.EV_CONNECT, "a"], [bus.EV_CONNECT, 1, 2, 3, 4], [bus.EV_UPSTREAM, "k", 1, 4, 5]]
    h.report("w1", 1, *bad_events)
    h.report("w1", 1, [bus.EV_CONNECT, "ok", 1, "", "ip"])
    assert h.router.stats["bad_reports"] == 7
    assert set(h.router.table.by_key) == {"ok"}
    assert h.received == []
