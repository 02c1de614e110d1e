from __future__ import annotations

from typing import Any

import pytest

from mpim import bus, config
from mpim.router.core import Router
from mpim.router.zingress import Ingress


class Setup:
    def __init__(self) -> None:
        cfg = config.Config()
        self.sent: list[tuple[bytes, Any]] = []
        self.router = Router(cfg, lambda t, e: self.sent.append((t, bus.unpack(e))), lambda *a: None, 0.0)
        self.router.on_report(bus.pack(["h", "w1", 1, [[bus.EV_CONNECT, "k1", 5, "", "ip"]]]), 0.0)
        self.ingress = Ingress(self.router, max_body=16)

    def ask(self, req: Any) -> tuple[dict[str, Any], bool]:
        return self.ingress.handle(bus.pack(req))


def test_the_four_kinds() -> None:
    s = Setup()
    assert s.ask({"kind": "keys", "op": 1000, "keys": ["k1", "x"], "body": b"a", "id": 1}) == (
        {"id": 1, "code": 0, "message": "", "data": {"connections": 1}},
        True,
    )
    assert s.ask({"kind": "mids", "op": 1000, "mids": [5], "body": "text"})[0]["data"] == {"connections": 1}
    assert s.ask({"kind": "room", "op": 1000, "room": "live://1", "body": b"r"})[0]["code"] == 0
    assert s.ask({"kind": "all", "op": 1000, "speed": 10, "body": b"z", "reply": False}) == (
        {"id": None, "code": 0, "message": "", "data": None},
        False,
    )
    assert [t for t, _ in s.sent] == [
        bus.worker_topic("h/w1/1"),
        bus.worker_topic("h/w1/1"),
        bus.room_topic("live://1"),
        bus.BROADCAST,
    ]
    assert s.sent[1][1] == [bus.PUSH_KEYS, 1000, ["k1"], b"text"]
    assert s.sent[3][1] == [bus.PUSH_ALL, 1000, 10, b"z"]


@pytest.mark.parametrize(
    ("req", "code", "message"),
    [
        ({"kind": "fax", "op": 1}, -400, "kind: 'fax' is not one of keys, mids, room, all"),
        ({"op": 1}, -400, "kind: None"),
        ({"kind": "room", "room": "live://1"}, -400, "op: required"),
        ({"kind": "room", "op": "1", "room": "live://1"}, -400, "op: expected an integer"),
        ({"kind": "room", "op": 1 << 40, "room": "live://1"}, -400, "op: 1099511627776 is out of range"),
        ({"kind": "room", "op": 1}, -400, "room: expected a room id"),
        ({"kind": "room", "op": 1, "room": "a\x00b"}, -400, "room: room id must be"),
        ({"kind": "keys", "op": 1, "keys": []}, -400, "keys: expected a non-empty list"),
        ({"kind": "keys", "op": 1, "keys": [1]}, -400, "keys: 1 is not a string"),
        ({"kind": "mids", "op": 1, "mids": ["1"]}, -400, "mids: '1' is not an integer"),
        ({"kind": "all", "op": 1, "speed": -5}, -400, "speed: -5 is out of range"),
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
    req = bus.pack({"kind": "room", "op": 1, "room": "r://1", "id": "x"})
    s.ingress.on_message([b"peer", b"", req], out.append)
    assert out[0][:2] == [b"peer", b""]
    assert bus.unpack(out[0][2])["id"] == "x"
    quiet = bus.pack({"kind": "room", "op": 1, "room": "r", "reply": False})
    s.ingress.on_message([b"peer", quiet], out.append)
    s.ingress.on_message([b"lonely"], out.append)
    assert len(out) == 1
