"""The checker's reliable-delivery rules on hand-made histories: each rule passes a valid
history and reports a history with exactly that violation, naming the operations involved."""

from __future__ import annotations

from tests.bench.chaos.builder import H, rules


def device_got(h: H, conn: str, t: float, seqs: list[int], top: int, recovered: bool = True) -> None:
    """A connection of raw-1 that resumes, replays ``seqs`` (bodies P<seq>) and gets op 21."""
    h.connect(conn, t)
    for i, seq in enumerate(seqs):
        h.recv(conn, t + 0.01 * (i + 1), f"P{seq}", seq=seq)
    h.resumed(conn, t + 0.5, top, recovered)


def pushed(h: H, seqs: list[int], t: float = 1.0) -> None:
    for seq in seqs:
        h.push(t + seq * 0.01, f"P{seq}", mids=[1], connections=0, seqs={1: seq})


def test_every_ok_push_handled_in_order_is_valid() -> None:
    h = H()
    pushed(h, [1, 2, 3])
    device_got(h, "raw-1#1", 5.0, [1, 2, 3], 3)
    h.close("raw-1#1", 9.0)
    h.final(9.5, "raw-1")
    assert h.check().valid


def test_an_ok_push_never_handled_is_lost() -> None:
    h = H()
    pushed(h, [1, 2, 3])
    device_got(h, "raw-1#1", 5.0, [1, 2], 2)  # the server claims top 2: seq 3 vanished
    h.close("raw-1#1", 9.0)
    report = h.check()
    assert rules(report) == ["reliable-lost"]
    (v,) = report.failing
    assert "P3@3" in v.message and any(o.values.get("body") == "P3" for o in v.ops)


def test_a_message_lost_behind_recovered_false_is_excused() -> None:
    h = H()
    pushed(h, [1, 2, 3])
    device_got(h, "raw-1#1", 5.0, [3], 3, recovered=False)  # 1 and 2 trimmed: said so
    h.close("raw-1#1", 9.0)
    assert h.check().valid


def test_a_skipped_seq_on_a_live_connection() -> None:
    h = H()
    pushed(h, [1])
    device_got(h, "raw-1#1", 2.0, [1], 1)
    pushed(h, [2, 3], t=3.0)
    h.recv("raw-1#1", 4.0, "P3", seq=3)  # 2 never came, the connection is live
    h.close("raw-1#1", 9.0)
    report = h.check()
    assert "reliable-order" in rules(report)
    v = next(v for v in report.failing if v.rule == "reliable-order")
    assert "seqs 2..2 skipped on a live connection" in v.message
    assert [o.values.get("seq") for o in v.ops if o.kind == "recv"] == [3]


def test_a_replay_that_skips_yet_says_recovered() -> None:
    h = H()
    pushed(h, [1, 2, 3])
    device_got(h, "raw-1#1", 5.0, [1, 3], 3, recovered=True)
    h.close("raw-1#1", 9.0)
    report = h.check()
    assert "reliable-order" in rules(report)
    assert any("skipped seqs 2..2 yet its op 21 says recovered" in v.message for v in report.failing)


def test_a_replay_cut_before_op_21_with_a_jump_is_an_unknown_not_a_violation() -> None:
    h = H()
    pushed(h, [1, 2, 3])
    h.connect("raw-1#1", 5.0)
    h.recv("raw-1#1", 5.1, "P3", seq=3)  # (1 and 2 trimmed, op 21 would have said so)
    h.close("raw-1#1", 5.2, "eof")
    h.fault("kill-worker", 5.15, 6.0)
    assert h.check().valid


def test_op_21_recovered_before_the_replay_reached_its_top() -> None:
    h = H()
    pushed(h, [1, 2, 3])
    device_got(h, "raw-1#1", 5.0, [1, 2], 3, recovered=True)
    h.close("raw-1#1", 9.0)
    report = h.check()
    assert rules(report) == ["reliable-order"]
    assert "says recovered up to seq 3, but the replay before it reached 2" in report.failing[0].message


def test_duplicates_are_fine_for_the_raw_client_but_not_from_the_sdk_handler() -> None:
    for kind, valid in (("raw", True), ("sdk", False)):
        h = H(devices={"raw-1": (1, kind)})
        pushed(h, [1, 2])
        device_got(h, "raw-1#1", 5.0, [1, 2], 2)
        h.close("raw-1#1", 6.0, "eof")
        h.fault("kill-worker", 5.9, 7.0)
        device_got(h, "raw-1#2", 8.0, [1, 2], 2)  # replayed again from the cursor: duplicates
        h.close("raw-1#2", 9.0)
        report = h.check()
        assert report.valid is valid, report.text()
        if not valid:
            assert set(rules(report)) == {"reliable-order"}
            assert "handed seq 1 to the handler after seq 2" in report.failing[0].message


def test_one_seq_carrying_two_messages() -> None:
    h = H(devices={"raw-1": (1, "raw"), "sdk-1": (1, "sdk")})
    h.push(1.0, "P1", mids=[1], connections=0, seqs={1: 1})
    h.push(1.1, "Px", mids=[1], outcome="info", code=None)
    device_got(h, "raw-1#1", 5.0, [1], 1)
    h.connect("sdk-1#1", 5.0)
    h.recv("sdk-1#1", 5.1, "Px", seq=1)  # the same seq, another body
    h.resumed("sdk-1#1", 5.2, 1)
    for c in ("raw-1#1", "sdk-1#1"):
        h.close(c, 9.0)
    report = h.check()
    assert "reliable-mismatch" in rules(report)
    v = next(v for v in report.failing if v.rule == "reliable-mismatch")
    assert "seq 1 carries 2 different messages" in v.message


def test_a_resume_cut_before_op_21_in_calm_is_a_violation_but_not_in_a_fault_or_a_kick() -> None:
    h = H()
    pushed(h, [1, 2])
    h.connect("raw-1#1", 5.0)
    h.recv("raw-1#1", 5.1, "P1", seq=1)
    h.close("raw-1#1", 5.2, "op6")  # a livelock: cut for its backlog, no op 21
    report = h.check()
    assert "resume-op21" in rules(report)
    v = next(v for v in report.failing if v.rule == "resume-op21")
    assert "raw-1#1 (op6)" in v.message and v.ops[0].kind == "connect"

    h = H()
    pushed(h, [1])
    h.connect("raw-1#1", 5.0)
    h.close("raw-1#1", 5.2, "eof")
    h.fault("kill-router", 5.1, 6.0)  # the router died: no answer is owed
    device_got(h, "raw-1#2", 7.0, [1], 1)
    h.close("raw-1#2", 9.0)
    assert h.check().valid

    h = H()
    pushed(h, [1])
    h.connect("raw-1#1", 5.0)
    device_got(h, "raw-1#2", 5.0, [1], 1)  # the same key again: the first one is kicked
    h.close("raw-1#1", 5.1, "op6")
    h.close("raw-1#2", 9.0)
    assert h.check().valid


def test_a_device_that_does_not_catch_up_once_faults_stop() -> None:
    h = H()
    pushed(h, [1])
    device_got(h, "raw-1#1", 5.0, [1], 1)
    h.close("raw-1#1", 9.0)
    h.final(8.0, "raw-1", ok=False)
    report = h.check()
    assert rules(report) == ["resume-op21"]
    assert report.failing[0].ops[0].kind == "final"


def test_an_sdk_session_that_ends_by_itself() -> None:
    h = H(devices={"sdk-1": (1, "sdk")})
    crash = h.op(
        "sdk:sdk-1", "crash", "info", {"life": "1", "error": "AssertionError: expected auth reply"}, 3.0
    )
    report = h.check()
    assert rules(report) == ["client-crash"] and report.failing[0].ops == [crash]


def test_a_chat_stored_by_an_attempt_before_a_recovered_false_is_excused() -> None:
    """The first attempt's answer was lost (info); the device then resumed in a new epoch, not
    recovered, past the message; the retry was answered with the first attempt's seq, below
    that top. The device was told of the loss after the message was stored: excused. A message
    first sent after that resume, answered ok and never handled, is not."""
    h = H()
    h.connect("raw-1#1", 1.0)
    h.resumed("raw-1#1", 1.1, 0, True, epoch="e1")
    h.chat(2.0, "m1", 1, 2, outcome="info")  # stored at seq 3 in a new epoch; the answer was lost
    h.close("raw-1#1", 2.5, "op6")
    h.connect("raw-1#2", 3.0)
    h.resumed("raw-1#2", 3.1, 5, False, epoch="e2")
    h.chat(4.0, "m1", 1, 2, seq=3)  # the retry: de-duplicated, the first seq
    h.close("raw-1#2", 9.0)
    h.final(9.5, "raw-1")
    assert h.check().valid
    h.chat(6.0, "m2", 1, 2, seq=6)  # sent after the resume, answered ok, never handled
    report = h.check()
    assert rules(report) == ["reliable-lost"]
    assert "C:m2@6" in report.failing[0].message and "C:m1" not in report.failing[0].message


def test_a_same_key_race_whose_loser_hears_an_unknown_stream_does_not_reset_the_winner() -> None:
    """Found by a 30-minute two-host soak: the raw client raced two connections of one key (one
    per host); the one on a host cut off from Redis got op 21 with no epoch (the stream could
    not be read: not recovered) while the other, live, went on with seq n + 1. Each connection's
    own stream was whole; the checker had mixed them."""
    h = H()
    pushed(h, [1, 2, 3, 4])
    device_got(h, "raw-1#1", 5.0, [1, 2, 3], 3)
    h.connect("raw-1#2", 5.6, host="B")
    h.resumed("raw-1#2", 5.8, 0, recovered=False, epoch="")
    h.recv("raw-1#1", 6.0, "P4", seq=4)
    h.close("raw-1#2", 6.5, "client")
    h.close("raw-1#1", 9.0)
    h.final(9.5, "raw-1")
    assert h.check().valid


def test_a_skip_on_the_live_winner_of_a_race_is_still_found() -> None:
    h = H()
    pushed(h, [1, 2, 3, 4, 5])
    device_got(h, "raw-1#1", 5.0, [1, 2, 3], 3)
    h.connect("raw-1#2", 5.6, host="B")
    h.resumed("raw-1#2", 5.8, 0, recovered=False, epoch="")
    h.recv("raw-1#1", 6.0, "P5", seq=5)  # 4 never came on the live connection
    h.close("raw-1#2", 6.5, "client")
    h.close("raw-1#1", 9.0)
    report = h.check()
    assert any("seqs 4..4 skipped on a live connection" in v.message for v in report.failing), report.failing


def test_a_seq_both_racing_connections_got_is_not_a_skip_on_the_second() -> None:
    """Found by the second two-host soak: both connections of a same-key race were live and
    got seq n (the first one counted it for the client, the second as a repeat); the next
    seq on the second was reported as a skip of n."""
    h = H()
    pushed(h, [1, 2, 3, 4, 5])
    device_got(h, "raw-1#1", 5.0, [1, 2, 3], 3)
    h.connect("raw-1#2", 5.6, host="B")
    h.resumed("raw-1#2", 5.8, 3, recovered=True)
    h.recv("raw-1#1", 6.0, "P4", seq=4)
    h.recv("raw-1#2", 6.01, "P4", seq=4)
    h.recv("raw-1#2", 6.2, "P5", seq=5)
    h.close("raw-1#1", 6.5, "op6")
    h.close("raw-1#2", 9.0)
    h.final(9.5, "raw-1")
    assert h.check().valid, h.check().failing
