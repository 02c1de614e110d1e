"""The checker's private-chat rules on hand-made histories."""

from __future__ import annotations

from tests.bench.chaos.builder import H, rules

DEVICES = {"raw-1": (1, "raw"), "raw-2": (2, "raw")}


def both_online(h: H) -> None:
    h.connect("raw-1#1", 0.5, mid=1)
    h.resumed("raw-1#1", 0.6, 0)
    h.connect("raw-2#1", 0.5, mid=2)
    h.resumed("raw-2#1", 0.6, 0)


def test_a_message_retried_under_its_id_is_answered_with_one_seq_and_stored_once() -> None:
    h = H(devices=DEVICES)
    both_online(h)
    h.chat(1.0, "m1", 1, 2, outcome="info", code=-504)  # no answer in time: resent
    h.chat(2.0, "m1", 1, 2, seq=1)
    h.chat(3.0, "m1", 1, 2, seq=1)  # sent again much later: the first answer again
    env = H.envelope("m1", 1, 2)
    h.recv("raw-1#1", 2.1, env, seq=1)
    h.recv("raw-2#1", 2.1, env, seq=1)
    for c in ("raw-1#1", "raw-2#1"):
        h.close(c, 9.0)
    h.inbox(9.5, 1, [(1, env)])
    h.inbox(9.5, 2, [(1, env)])
    assert h.check().valid, h.check().text()


def test_a_retry_answered_with_another_seq_and_stored_twice() -> None:
    h = H(devices=DEVICES)
    both_online(h)
    first = h.chat(1.0, "m1", 1, 2, seq=1)
    h.fault("kill-router", 1.5, 2.0)
    retry = h.chat(3.0, "m1", 1, 2, seq=2)  # the router forgot it: stored again
    env = H.envelope("m1", 1, 2)
    for c in ("raw-1#1", "raw-2#1"):
        h.recv(c, 1.1, env, seq=1)
        h.recv(c, 3.1, env, seq=2)
        h.close(c, 9.0)
    report = h.check()
    assert rules(report) == ["chat-seq", "chat-stored-once", "chat-stored-once"]
    seq_v = next(v for v in report.failing if v.rule == "chat-seq")
    assert seq_v.ops == [first, retry] and "answered with 2 seqs [1, 2]" in seq_v.message
    stored = [v for v in report.failing if v.rule == "chat-stored-once"]
    assert {"mid 1" in v.message for v in stored} == {True, False}  # both streams


def test_the_final_inbox_read_sees_a_second_copy_no_device_saw() -> None:
    h = H(devices=DEVICES)
    both_online(h)
    h.chat(1.0, "m1", 1, 2, seq=1)
    env = H.envelope("m1", 1, 2)
    h.recv("raw-1#1", 1.1, env, seq=1)
    h.recv("raw-2#1", 1.1, env, seq=1)
    for c in ("raw-1#1", "raw-2#1"):
        h.close(c, 9.0)
    h.inbox(9.5, 2, [(1, env), (2, env)])
    report = h.check()
    assert rules(report) == ["chat-stored-once"]
    assert report.failing[0].ops[-1].kind == "inbox"


def test_the_envelope_names_the_real_sender() -> None:
    h = H(devices=DEVICES)
    both_online(h)
    h.chat(1.0, "m1", 1, 2, seq=1)
    forged = H.envelope("m1", 99, 2)
    h.recv("raw-1#1", 1.1, H.envelope("m1", 1, 2), seq=1)
    got = h.recv("raw-2#1", 1.1, forged, seq=1)
    for c in ("raw-1#1", "raw-2#1"):
        h.close(c, 9.0)
    report = h.check()
    assert rules(report) == ["chat-sender"]
    assert "as from 99" in report.failing[0].message and report.failing[0].ops[-1] == got


def test_a_message_refused_every_time_must_not_arrive() -> None:
    h = H(devices=DEVICES)
    both_online(h)
    refused = h.chat(1.0, "m1", 1, 2, outcome="fail", code=-429)
    got = h.recv("raw-2#1", 1.1, H.envelope("m1", 1, 2), seq=1)
    for c in ("raw-1#1", "raw-2#1"):
        h.close(c, 9.0)
    report = h.check()
    assert rules(report) == ["refused-delivered"] and report.failing[0].ops == [refused, got]


def test_a_done_message_missing_at_the_recipient_is_lost() -> None:
    h = H(devices=DEVICES)
    both_online(h)
    h.chat(1.0, "m1", 1, 2, seq=1)
    h.recv("raw-1#1", 1.1, H.envelope("m1", 1, 2), seq=1)
    for c in ("raw-1#1", "raw-2#1"):
        h.close(c, 9.0)
    report = h.check()
    assert rules(report) == ["reliable-lost"]
    assert "device raw-2" in report.failing[0].message and "C:m1" in report.failing[0].message
