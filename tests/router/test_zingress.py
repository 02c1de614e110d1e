from __future__ import annotations

import logging
from typing import Any

import msgpack
import pytest

from mpim import bus, config
from mpim.records import PushAll, PushKeys, PushMids, PushRoom
from mpim.router.zingress import Ingress
from tests.router.fakes import Harness, RecordingInbox

MID_MAX = (1 << 63) - 1


class Setup:
    def __init__(self, **sections: Any) -> None:
        self.h = Harness(config.replace(config.Config(), **sections))
        self.link = self.h.worker("w1")
        self.h.connect(self.link, "k1", 5)
        self.link.take()
        self.sent = self.h.bus.published
        self.ingress = Ingress(self.h.router, max_body=16)

    def ask(self, req: Any) -> tuple[Any, bool]:
        return self.ingress.handle(msgpack.packb(req))


def test_the_four_kinds() -> None:
    s = Setup()
    assert s.ask({"kind": "keys", "op": 1000, "keys": ["k1", "x"], "body": b"a", "id": 1}) == (
        {"id": 1, "code": 0, "message": "", "data": {"connections": 1}},
        True,
    )
    stored, _ = s.ask({"kind": "mids", "op": 1000, "mids": [5], "body": "text"})
    assert s.h.wait(stored)["data"] == {"connections": 1, "seqs": {"5": 1}}
    assert s.ask({"kind": "room", "op": 1000, "room": "live://1", "body": b"r"})[0]["code"] == 0
    everyone, wants = s.ask({"kind": "all", "op": 1000, "speed": 10, "body": b"z", "reply": False})
    assert not wants
    assert s.link.take() == [PushKeys(1000, ["k1"], b"a"), PushMids(1000, ["k1"], [1], b"text")]
    assert s.sent == [
        (bus.room_topic("live://1"), PushRoom(1000, b"r")),
        (bus.BROADCAST, PushAll(1000, 10, b"z")),
    ]
    # a broadcast is answered once the worker took the mark that followed it
    from mpim.records import BusSeen

    s.h.send(s.link, BusSeen(s.h.bus.end_turn()))
    s.h.settle()
    assert everyone.result() == {"id": None, "code": 0, "message": "", "data": None}


@pytest.mark.parametrize(
    ("req", "code", "message"),
    [
        ({"kind": "fax", "op": 1}, -400, "kind: invalid value 'fax' (one of keys, mids, room, all)"),
        ({"op": 1}, -400, "kind: required"),
        ({"kind": "room", "room": "live://1"}, -400, "op: required"),
        ({"kind": "room", "op": "1", "room": "live://1"}, -400, "op: expected `int`, got `str`"),
        ({"kind": "room", "op": 1 << 40, "room": "live://1"}, -400, "op: expected `int` <= 2147483647"),
        ({"kind": "room", "op": 1}, -400, "room: required"),
        ({"kind": "room", "op": 1, "room": "a\x00b"}, -400, "room: room id must be"),
        ({"kind": "keys", "op": 1, "keys": []}, -400, "keys: expected `array` of length >= 1"),
        ({"kind": "keys", "op": 1, "keys": [1]}, -400, "keys: expected `str`, got `int`"),
        ({"kind": "mids", "op": 1, "mids": ["1"]}, -400, "mids: expected `int`, got `str`"),
        ({"kind": "all", "op": 1, "speed": -5}, -400, "speed: expected `int` >= 0"),
        ({"kind": "all", "op": 1, "body": 5}, -400, "body: expected bytes or a string"),
        ({"kind": "all", "op": 1, "body": b"x" * 17}, -413, "body of 17 bytes is over the 16-byte limit"),
        ([1, 2, 3], -400, "request must be a msgpack map"),
    ],
)
def test_bad_requests_get_a_clear_answer(req: Any, code: int, message: str) -> None:
    s = Setup()
    reply, wants = s.ask(req)
    assert reply["code"] == code and message in reply["message"]
    assert wants and s.sent == []


def test_malformed_msgpack() -> None:
    s = Setup()
    reply, wants = s.ingress.handle(b"\xc1\xc1\xc1")
    assert reply["code"] == -400 and "malformed msgpack" in reply["message"] and wants
    reply, _ = s.ingress.handle(b"")
    assert reply["code"] == -400


def test_on_message_answers_on_the_same_route() -> None:
    s = Setup()
    out: list[list[bytes]] = []
    req = msgpack.packb({"kind": "room", "op": 1, "room": "r://1", "id": "x"})
    s.ingress.on_message([b"peer", b"", req], out.append)
    assert out[0][:2] == [b"peer", b""]
    assert msgpack.unpackb(out[0][2])["id"] == "x"
    quiet = msgpack.packb({"kind": "room", "op": 1, "room": "r", "reply": False})
    s.ingress.on_message([b"peer", quiet], out.append)
    s.ingress.on_message([b"lonely"], out.append)
    assert len(out) == 1


def test_with_an_api_key_every_request_must_carry_it() -> None:
    s = Setup()
    s.ingress.api_key = "0123456789abcdef-api-key"
    push = {"kind": "keys", "op": 1000, "keys": ["k1"], "body": b"a", "id": 3}
    assert s.ask(push) == ({"id": 3, "code": -401, "message": "api_key: missing"}, True)
    assert s.ask({**push, "api_key": "nope"})[0] == {"id": 3, "code": -401, "message": "api_key: wrong key"}
    assert s.ask({**push, "api_key": "0123456789abcdef-api-kez"})[0]["code"] == -401
    assert s.ask({**push, "api_key": 12})[0]["code"] == -400  # not a string: a bad field
    assert s.link.take() == []  # nothing was pushed
    assert s.ask({**push, "api_key": "0123456789abcdef-api-key"})[0]["data"] == {"connections": 1}
    assert s.link.take() == [PushKeys(1000, ["k1"], b"a")]


def test_without_a_key_configured_a_key_in_the_request_is_ignored() -> None:
    s = Setup()
    stored, _ = s.ask({"kind": "mids", "op": 1, "mids": [5], "api_key": "x"})
    assert s.h.wait(stored)["code"] == 0


@pytest.mark.parametrize("bad", [0, -3, -(1 << 63), 1 << 63, (1 << 64) - 1])
def test_push_by_mid_refuses_a_mid_that_is_not_a_user_id(bad: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mpim.ingress")
    s = Setup()
    inbox = RecordingInbox()
    s.h.router.streams.inbox = inbox
    reply, wants = s.ask({"kind": "mids", "op": 1000, "mids": [5, bad], "body": b"m", "id": 9})
    message = f"mids: {bad} is not a user id (a mid is an integer from 1 to {MID_MAX})"
    assert (reply, wants) == ({"id": 9, "code": -400, "message": message}, True)
    assert inbox.appended == [] and s.link.take() == []  # nothing stored, nothing sent (not even to 5)
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("refusing a ZeroMQ push (") and line.endswith(f" bytes): {message}")


def test_pushes_by_mid_and_by_key_are_bounded_by_max_targets() -> None:
    s = Setup(router={"max_targets": 2})
    inbox = RecordingInbox()
    s.h.router.streams.inbox = inbox
    reply, _ = s.ask({"kind": "mids", "op": 1000, "mids": [1, 2, 3]})
    assert reply == {
        "id": None,
        "code": -400,
        "message": "3 mids in one push; the limit is 2 ([router] max_targets)",
    }
    reply, _ = s.ask({"kind": "keys", "op": 1000, "keys": ["k1", "k2", "k3"]})
    assert reply["message"] == "3 keys in one push; the limit is 2 ([router] max_targets)"
    assert inbox.appended == [] and s.link.take() == []
    stored, _ = s.ask({"kind": "mids", "op": 1000, "mids": [5, 6, 5, 6, 5]})  # duplicates count once
    assert s.h.wait(stored)["data"] == {"connections": 1, "seqs": {"5": 1, "6": 1}}
    assert s.ask({"kind": "keys", "op": 1000, "keys": ["k1", "x", "k1"]})[0]["data"] == {"connections": 1}
