from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpim import bus, config
from mpim.records import PushAll, PushKeys, PushMids, PushRoom
from mpim.router.api import PushApi, Reply, parse_query
from tests.router.fakes import FakeLink, Harness


class Api:
    def __init__(self, **sections: dict[str, Any]) -> None:
        cfg = config.replace(config.Config(), **sections)
        self.h = Harness(cfg)
        self.router = self.h.router
        self.sent = self.h.bus.published
        self.links: dict[str, FakeLink] = {}
        self.api = PushApi(cfg, self.router)

    def connect(self, worker: str, key: str, mid: int, room: str, ip: str = "10.0.0.1") -> None:
        if worker not in self.links:
            self.links[worker] = self.h.worker(worker)
        self.h.connect(self.links[worker], key, mid, room, ip)

    def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
        path, _, query = target.partition("?")
        reply = self.api.handle(method, path, query.encode(), body)
        if not isinstance(reply, Reply):  # a push by mid: stored, then sent
            reply = self.h.wait(reply)
        assert isinstance(reply, Reply)
        return reply.status, json.loads(reply.body)


def test_goim_push_room_request_works_unchanged() -> None:
    a = Api()
    status, answer = a.call("POST", "/goim/push/room?operation=1000&type=test&room=1", b'{"test":1}')
    assert status == 200 and answer == {"code": 0, "message": "", "data": None}
    assert a.sent == [(bus.room_topic("test://1"), PushRoom(1000, b'{"test":1}'))]


def test_push_keys_mids_all() -> None:
    a = Api()
    a.connect("w1", "k1", 5, "")
    a.connect("w2", "k2", 5, "")
    assert a.call("POST", "/goim/push/keys?operation=1000&keys=k1&keys=zz", b"m")[1]["data"] == {
        "connections": 1
    }
    # goim's {"connections": n}, and beside it each user's stream seq (stored before it was sent)
    assert a.call("POST", "/goim/push/mids?operation=1000&mids=5&mids=6", b"m")[1]["data"] == {
        "connections": 2,
        "seqs": {"5": 1, "6": 1},
    }
    assert [r for link in a.links.values() for r in link.take() if isinstance(r, (PushKeys, PushMids))] == [
        PushKeys(1000, ["k1"], b"m"),
        PushMids(1000, b"m", ["k1"], [1]),
        PushMids(1000, b"m", ["k2"], [1]),
    ]
    all_50 = a.api.handle("POST", "/goim/push/all", b"operation=1000&speed=50", b"m")
    all_0 = a.api.handle("POST", "/goim/push/all", b"operation=1000", b"m")
    assert a.sent == [(bus.BROADCAST, PushAll(1000, 25, b"m")), (bus.BROADCAST, PushAll(1000, 0, b"m"))]
    assert not isinstance(all_50, Reply) and not isinstance(all_0, Reply)  # they wait for the workers


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/goim/push/keys?keys=a", "operation: required"),
        ("/goim/push/keys?operation=x&keys=a", "operation: 'x' is not an integer"),
        ("/goim/push/keys?operation=99999999999&keys=a", "operation: 99999999999 is out of range"),
        ("/goim/push/keys?operation=1", "keys: at least one value is required"),
        ("/goim/push/mids?operation=1&mids=abc", "mids: 'abc' is not an integer"),
        ("/goim/push/room?operation=1&room=1", "type: required"),
        ("/goim/push/room?operation=1&type=live", "room: required"),
        ("/goim/push/room?operation=1&type=live&room=%00", "room: room id must be"),
        ("/goim/push/all?operation=1&speed=-1", "speed: -1 is out of range"),
        ("/goim/online/top?type=live", "limit: required"),
        ("/goim/online/top?type=live&limit=0", "limit: 0 is out of range"),
        ("/goim/online/room?type=live", "rooms: at least one value is required"),
        ("/goim/online/room?rooms=1", "type: required"),
        ("/goim/push/keys?operation=1&keys=%ff", "query string is not UTF-8"),
    ],
)
def test_bad_parameters_get_code_minus_400_and_say_what(target: str, message: str) -> None:
    a = Api()
    method = "POST" if "/push/" in target else "GET"
    status, answer = a.call(method, target, b"x")
    assert status == 200 and answer["code"] == -400
    assert message in answer["message"]
    assert a.sent == []


def test_unknown_path_and_wrong_method() -> None:
    a = Api()
    status, answer = a.call("GET", "/goim/push/nothing")
    assert status == 404 and answer["code"] == -404
    reply = a.api.handle("GET", "/goim/push/room", b"operation=1&type=a&room=1", b"")
    assert reply.status == 405 and reply.allow == "POST"
    assert json.loads(reply.body)["code"] == -405


def test_online_endpoints_exact_counts() -> None:
    a = Api()
    a.connect("w1", "a", 1, "live://1000", "10.0.0.1")
    a.connect("w1", "b", 2, "live://1000", "10.0.0.2")
    a.connect("w2", "c", 3, "live://1001", "10.0.0.2")
    a.connect("w2", "d", 4, "chat://1", "10.0.0.3")
    a.connect("w2", "e", 4, "", "10.0.0.3")
    _, top = a.call("GET", "/goim/online/top?type=live&limit=5")
    assert top["data"] == [{"room_id": "1000", "count": 2}, {"room_id": "1001", "count": 1}]
    _, top = a.call("GET", "/goim/online/top?type=nothing&limit=5")
    assert top["data"] == []
    _, rooms = a.call("GET", "/goim/online/room?type=live&rooms=1000&rooms=1001&rooms=7")
    assert rooms["data"] == {"1000": 2, "1001": 1, "7": 0}
    _, total = a.call("GET", "/goim/online/total")
    assert total == {"code": 0, "message": "", "data": {"ip_count": 3, "conn_count": 5}}


def test_nodes_weighted_shape() -> None:
    a = Api(
        tcp={"bind": ["0.0.0.0:4101"]},
        websocket={"bind": ["0.0.0.0:4102"]},
        nodes={"domain": "conn.example", "addresses": ["10.0.0.1:4101", "10.0.0.2:4101"]},
    )
    _, web = a.call("GET", "/goim/nodes/weighted?platform=web")
    assert web["data"] == {
        "domain": "conn.example",
        "tcp_port": 4101,
        "ws_port": 4102,
        "wss_port": 0,  # no certificate: WSS does not listen
        "heartbeat": 240,
        "heartbeat_max": 2,
        "nodes": ["conn.example"],
        "backoff": {"max_delay": 300, "base_delay": 3, "factor": 1.8, "jitter": 1.3},
    }
    _, android = a.call("GET", "/goim/nodes/weighted?platform=android")
    assert android["data"]["nodes"] == ["10.0.0.1:4101", "10.0.0.2:4101"]


def test_wss_port_is_advertised_only_when_wss_listens(tmp_path: Path) -> None:
    from tests.certs import issue

    certs = issue(tmp_path)
    wss = Api(tls=certs.tls(), websocket={"tls_bind": ["0.0.0.0:4103"]})
    assert wss.call("GET", "/goim/nodes/weighted")[1]["data"]["wss_port"] == 4103
    balancer = Api(nodes={"wss_port": 443})  # TLS ends at a load balancer: its port, as configured
    assert balancer.call("GET", "/goim/nodes/weighted")[1]["data"]["wss_port"] == 443
    no_listener = Api(tls=certs.tls(), websocket={"tls_bind": []})
    assert no_listener.call("GET", "/goim/nodes/weighted")[1]["data"]["wss_port"] == 0


def test_mpim_session_and_workers() -> None:
    a = Api()
    a.connect("w1", "a", 9, "live://1")
    a.connect("w2", "b", 9, "")
    _, s = a.call("GET", "/mpim/session?mid=9")
    assert sorted((c["key"], c["worker"], c["seq"]) for c in s["data"]) == [
        ("a", "h/w1/1", 1),
        ("b", "h/w2/1", 2),
    ]
    _, s = a.call("GET", "/mpim/session?key=b")
    assert [c["mid"] for c in s["data"]] == [9]
    _, w = a.call("GET", "/mpim/workers")
    assert sorted((x["name"], x["conns"]) for x in w["data"]) == [("w1", 1), ("w2", 1)]


def test_parse_query() -> None:
    assert parse_query(b"a=1&b=x+y&b=%2F&&c") == {"a": ["1"], "b": ["x y", "/"], "c": [""]}
    assert parse_query(b"") == {}


@given(st.lists(st.sampled_from(["a", "b", "=", "&", "1", "é", "%2F", "+", ";", "x=", "&&"]), max_size=12))
def test_parse_query_agrees_with_parse_qs(pieces: list[str]) -> None:
    raw = "".join(pieces)
    assert parse_query(raw.encode()) == parse_qs(raw, keep_blank_values=True)


def test_batch_push_carries_out_every_item_in_order() -> None:
    a = Api()
    a.connect("w1", "k1", 5, "live://1")
    body = json.dumps(
        [
            {"kind": "mids", "op": 1000, "mids": [5, 6], "body": "m"},
            {"kind": "keys", "op": 1000, "keys": ["k1", "zz"], "body": "k"},
            {"kind": "room", "op": 1000, "room": "bad\x00room", "body": "r"},
            {"kind": "mids", "op": 1000, "mids": [5], "body": "again"},
        ]
    ).encode()
    status, answer = a.call("POST", "/mpim/push", body)
    assert status == 200 and answer["code"] == 0
    first, second, third, fourth = answer["data"]
    assert first == {"code": 0, "message": "", "data": {"connections": 1, "seqs": {"5": 1, "6": 1}}}
    assert second["data"] == {"connections": 1}
    assert third["code"] == -400 and "room" in third["message"]
    assert fourth["data"]["seqs"] == {"5": 2}
    records = [r for link in a.links.values() for r in link.take() if isinstance(r, (PushKeys, PushMids))]
    # (a push by mid is sent once stored, so the push by key went out first)
    assert [(r.keys, r.body, getattr(r, "seqs", [0])) for r in records] == [
        (["k1"], b"k", [0]),
        (["k1"], b"m", [1]),
        (["k1"], b"again", [2]),
    ]


@pytest.mark.parametrize(
    ("body", "message"), [(b"[]", "empty"), (b"{}", "expected `array`"), (b'[{"op": 1}]', "kind")]
)
def test_batch_push_refuses_a_malformed_body_whole(body: bytes, message: str) -> None:
    a = Api()
    status, answer = a.call("POST", "/mpim/push", body)
    assert status == 200 and answer["code"] == -400 and message in answer["message"]
