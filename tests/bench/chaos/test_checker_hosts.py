"""The checker's rules on connections counted, online counts, one key one connection, and hosts
(some of them wait for issue 22: their violations carry that issue and can be known-pending)."""

from __future__ import annotations

from bench.chaos.report import verdict
from tests.bench.chaos.builder import H, rules


def goim(h: H, conn: str, t: float, host: str = "A", room: str = "live://1", mid: int = 200) -> str:
    return h.connect(conn, t, mid=mid, room=room, host=host, ack=False)


def test_a_push_counting_a_connection_that_was_not_there() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5, mid=7)
    h.push(1.0, "P1", mids=[7], connections=1, seqs={7: 1})
    h.recv("g1#1", 1.1, "P1", op=1000)
    h.push(2.0, "P2", mids=[7], connections=2, seqs={7: 2})  # one connection, two counted
    h.recv("g1#1", 2.1, "P2", op=1000)
    h.close("g1#1", 5.0)
    report = h.check()
    assert rules(report) == ["overcount"]
    assert report.failing[0].ops[0].values["body"] == "P2"


def test_a_dead_host_s_connections_counted_after_the_grace_is_issue_22() -> None:
    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5, host="B", mid=7)
    h.fault("kill-master", 10.0, 30.0, host="B")
    h.close("g1#1", 10.01, "eof")
    h.push(12.0, "P1", mids=[7], connections=1, seqs={7: 1})  # within the lease: may be
    h.push(20.0, "P2", mids=[7], connections=1, seqs={7: 2})  # the host is dead: delivered to whom?
    report = h.check()
    assert rules(report) == ["dead-host"]
    (v,) = report.failing
    assert v.issue == 22 and v.ops[0].values["body"] == "P2"
    pending = h.check(22)
    assert pending.valid and [x.rule for x in pending.pending] == ["dead-host"]
    line = verdict(pending, 1)
    assert line.startswith("valid: ") and "1 known-pending (issue 22: dead-host 1)" in line


def test_a_connection_that_left_while_its_router_was_down_is_still_counted_by_the_other_host() -> None:
    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5, host="A", mid=7)
    h.fault("kill-router", 10.0, 30.0, host="A")  # A cannot tell Redis that g1#1 left
    h.close("g1#1", 12.0, "client")
    h.push(20.0, "P1", mids=[7], connections=1, seqs={7: 1}, host="B")
    report = h.check()
    assert rules(report) == ["dead-host"] and report.failing[0].issue == 22
    h = H(devices={})  # one host: the router knows, there is no excuse
    goim(h, "g1#1", 0.5, mid=7)
    h.fault("kill-router", 10.0, 30.0)
    h.close("g1#1", 12.0, "client")
    h.push(20.0, "P1", mids=[7], connections=1, seqs={7: 1})
    assert rules(h.check()) == ["overcount"]


def test_a_host_cut_off_from_redis_is_dead_to_the_others() -> None:
    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5, host="B", mid=7)
    h.fault("partition-redis", 10.0, 30.0, host="B", healed=25.0)
    h.push(20.0, "P1", mids=[7], connections=1, seqs={7: 1}, host="A")
    h.push(20.0, "P2", mids=[7], connections=1, seqs={7: 2}, host="B")  # its own host: fine
    h.recv("g1#1", 20.1, "P2", op=1000)
    h.recv("g1#1", 26.0, "P1", op=1000)
    h.close("g1#1", 40.0)
    report = h.check()
    assert rules(report) == ["dead-host"]
    assert report.failing[0].ops[0].values["body"] == "P1"


def test_online_counts_judged_once_nothing_changed_for_the_window() -> None:
    h = H(devices={})
    goim(h, "g1#1", 0.5)
    goim(h, "g2#1", 0.5, room="live://2")
    h.counts(1.0, "A", 0, {"live://1": 0})  # too early: not judged
    h.counts(10.0, "A", 2, {"live://1": 1, "live://2": 1})
    for c in ("g1#1", "g2#1"):
        h.close(c, 20.0)
    assert h.check().valid

    h = H(devices={})
    goim(h, "g1#1", 0.5)
    stale = h.counts(10.0, "A", 3, {"live://1": 1})
    h.close("g1#1", 20.0)
    report = h.check()
    assert rules(report) == ["counts-converge"] and report.failing[0].ops == [stale]
    assert report.failing[0].issue is None  # one host: counts are exact today

    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5)
    h.counts(10.0, "B", 0, {"live://1": 0})
    h.close("g1#1", 20.0)
    assert [v.issue for v in h.check().failing] == [22]


def test_two_live_connections_of_one_key() -> None:
    h = H(hosts=("A", "B"), devices={})
    goim(h, "g1#1", 0.5, host="A")
    goim(h, "g1#2", 1.0, host="A")
    h.close("g1#1", 1.1, "op6")  # kicked at once
    goim(h, "g1#3", 2.0, host="B")
    h.close("g1#2", 8.0, "op6")  # kicked only 6 s later, by a connection on the other host
    h.close("g1#3", 9.0)
    report = h.check()
    assert rules(report) == ["one-key"]
    assert report.failing[0].issue == 22 and "g1#2 (host A) and g1#3 (host B)" in report.failing[0].message
    assert {o.values["conn"] for o in report.failing[0].ops} == {"g1#2", "g1#3"}


def test_no_recovery_and_a_restart_refused_for_a_dead_host_s_name() -> None:
    h = H(devices={})
    h.fault("kill-router", 1.0, None, waited=45, state="probe push by room via A: -504")
    report = h.check()
    assert rules(report) == ["recovery"] and report.failing[0].issue is None
    h = H(hosts=("A", "B"), devices={})
    h.fault(
        "kill-master",
        1.0,
        20.0,
        host="B",
        refused=["host B: another live host of this cluster has that name"],
    )
    report = h.check()
    assert rules(report) == ["host-restart"] and report.failing[0].issue == 22
    assert h.check(22).valid
