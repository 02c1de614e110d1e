"""The checker's rules for pushes without a stream seq (goim's at-most-once, what an ok answer
promises, room order) on hand-made histories."""

from __future__ import annotations

from tests.bench.chaos.builder import H, rules

ROOM = "live://1"


def goim(h: H, conn: str, t: float, host: str = "A", room: str = ROOM, mid: int = 200) -> str:
    return h.connect(conn, t, mid=mid, room=room, host=host, ack=False)


def test_room_pushes_reaching_every_member_in_order_are_valid() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    goim(h, "g2#1", 0.5)
    h.push(1.0, "P1", "room", room=ROOM)
    h.push(1.1, "P2", "room", room=ROOM)
    for c in ("g1#1", "g2#1"):
        h.recv(c, 1.2, "P1")
        h.recv(c, 1.3, "P2")
        h.close(c, 5.0)
    assert h.check().valid


def test_an_ok_room_push_missing_at_a_member_that_never_lost_its_connection() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    push = h.push(1.0, "P1", "room", room=ROOM)
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["live-delivery"]
    assert report.failing[0].ops[:2] == [push, h.ops[1]]  # the push and the connection


def test_a_member_whose_connection_broke_may_miss_it() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    h.push(1.0, "P1", "room", room=ROOM)
    h.close("g1#1", 1.001, "eof")
    goim(h, "g1#2", 2.0)
    h.close("g1#2", 5.0)
    assert h.check().valid


def test_with_two_hosts_only_pushes_outside_fault_windows_must_reach_the_other_host() -> None:
    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5, host="B")
    h.fault("partition-redis", 0.8, 3.0, host="B")
    h.push(1.0, "P1", "room", room=ROOM)  # during the partition: not promised
    h.close("g1#1", 5.0)
    assert h.check().valid
    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5, host="B")
    h.push(4.0, "P1", "room", room=ROOM)  # calm: promised
    h.close("g1#1", 5.0)
    assert rules(h.check()) == ["live-delivery"]


def test_a_push_delivered_twice_or_to_whom_it_did_not_name() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    push = h.push(1.0, "P1", "room", room=ROOM)
    h.recv("g1#1", 1.1, "P1")
    again = h.recv("g1#1", 1.2, "P1")
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["at-most-once"]
    assert push in report.failing[0].ops and again in report.failing[0].ops

    h = H(devices={})
    goim(h, "g1#1", 0.5, room="live://2")
    h.push(1.0, "P1", "room", room=ROOM)
    h.recv("g1#1", 1.1, "P1")
    h.recv("g1#1", 1.2, "Pnobody")
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["unexpected", "unexpected"]
    assert "did not name it" in report.failing[0].message
    assert "a body nobody sent" in report.failing[1].message


def test_at_most_once_across_connections_unless_they_were_open_together() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    h.push(1.0, "P1", "room", room=ROOM)
    h.recv("g1#1", 1.1, "P1")
    h.close("g1#1", 1.5, "eof")
    goim(h, "g1#2", 2.0)
    h.recv("g1#2", 2.1, "P1")  # sent again to the next connection
    h.close("g1#2", 5.0)
    assert rules(h.check()) == ["at-most-once"]

    h = H(devices={})
    goim(h, "g1#1", 0.5)
    goim(h, "g1#2", 0.6)  # a same-key race: both live for a moment
    h.push(0.7, "P1", "room", room=ROOM)
    h.recv("g1#1", 0.8, "P1")
    h.recv("g1#2", 0.8, "P1")
    h.close("g1#1", 0.9, "op6")
    h.close("g1#2", 5.0)
    assert h.check().valid


def test_a_refused_push_that_was_delivered() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    push = h.push(1.0, "P1", "room", room=ROOM, outcome="fail", code=-503)
    h.recv("g1#1", 1.1, "P1")
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["refused-delivered"]
    assert report.failing[0].ops[0] is push


def test_an_unknown_outcome_may_or_may_not_be_delivered() -> None:
    for delivered in (True, False):
        h = H(devices={})
        goim(h, "g1#1", 0.5)
        h.push(1.0, "P1", "room", room=ROOM, outcome="info", code=-504)
        if delivered:
            h.recv("g1#1", 1.1, "P1")
        h.close("g1#1", 5.0)
        assert h.check().valid


def test_a_goim_connection_gets_seq_0() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5, mid=7)
    h.push(1.0, "P1", mids=[7], connections=1, seqs={7: 4})
    frame = h.recv("g1#1", 1.1, "P1", seq=4, op=1000)
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["goim-seq"] and report.failing[0].ops == [frame]


def test_room_order_in_real_time_and_the_same_for_every_client() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    first = h.push(1.0, "P1", "room", room=ROOM, end=1.1)
    second = h.push(1.2, "P2", "room", room=ROOM, end=1.3)  # sent after P1 was answered
    h.recv("g1#1", 1.4, "P2")
    h.recv("g1#1", 1.5, "P1")
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["room-order"]
    assert first in report.failing[0].ops and second in report.failing[0].ops

    h = H(devices={})
    goim(h, "g1#1", 0.5)
    goim(h, "g2#1", 0.5)
    h.push(1.0, "P1", "room", room=ROOM, end=2.0)  # concurrent: either order, but one for all
    h.push(1.1, "P2", "room", room=ROOM, end=2.0)
    h.recv("g1#1", 1.4, "P1")
    h.recv("g1#1", 1.5, "P2")
    h.recv("g2#1", 1.4, "P2")
    h.recv("g2#1", 1.5, "P1")
    for c in ("g1#1", "g2#1"):
        h.close(c, 5.0)
    report = h.check()
    assert rules(report) == ["room-order"]
    assert "conflicting orders" in report.failing[0].message
