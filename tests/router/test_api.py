from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpim import bus, config
from mpim.records import PushAll, PushKeys, PushMids, PushRoom
from mpim.router.api import PushApi, Reply, parse_query
from tests.router.fakes import FakeLink, Harness, RecordingInbox

MID_MAX = (1 << 63) - 1


class Api:
    def __init__(self, **sections: dict[str, Any]) -> None:
        cfg = config.replace(config.Config(), **sections)
        self.h = Harness(cfg)
        self.router = self.h.router
        self.sent = self.h.bus.published
        self.links: dict[str, FakeLink] = {}
        self.api = PushApi(cfg, self.router)

    def spy(self) -> RecordingInbox:
        """From now on the router's inbox records every append (to prove nothing was stored)."""
        inbox = RecordingInbox()
        self.router.streams.inbox = inbox
        return inbox

    def pushed(self) -> list[Any]:
        """What the workers were handed since the last call (pushes by key and by mid)."""
        return [r for link in self.links.values() for r in link.take() if isinstance(r, (PushKeys, PushMids))]

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
        PushMids(1000, ["k1"], [1], b"m"),
        PushMids(1000, ["k2"], [1], b"m"),
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


# -- who a push names: mids are user ids (> 0), at most [router] max_targets of them --------------


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refusing")]


@pytest.mark.parametrize("bad", [0, -3, -(1 << 63), 1 << 63, 1 << 70])
def test_push_by_mid_refuses_a_mid_that_is_not_a_user_id(bad: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    a = Api()
    a.connect("w1", "k1", 5, "")
    a.connect("w1", "anonymous", 0, "")
    inbox = a.spy()
    a.pushed()
    status, answer = a.call("POST", f"/goim/push/mids?operation=1000&mids=5&mids={bad}", b"m")
    assert (status, answer["code"]) == (200, -400)
    assert answer["message"] == f"mids: {bad} is not a user id (a mid is an integer from 1 to {MID_MAX})"
    assert inbox.appended == [] and a.pushed() == []  # nothing stored, nothing sent (not even to mid 5)
    assert refusals(caplog) == [f"refusing POST /goim/push/mids: {answer['message']}"]


def test_push_by_mid_of_many_mids_is_bounded_by_max_targets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    a = Api(router={"max_targets": 3})
    inbox = a.spy()
    status, answer = a.call("POST", "/goim/push/mids?operation=1000&mids=1&mids=2&mids=3&mids=4", b"m")
    assert (status, answer["code"]) == (200, -400)
    assert answer["message"] == "4 mids in one push; the limit is 3 ([router] max_targets)"
    assert inbox.appended == [] and len(refusals(caplog)) == 1
    # a mid named twice is stored once, so it counts once
    _, answer = a.call("POST", "/goim/push/mids?operation=1000&mids=1&mids=2&mids=1&mids=3&mids=2", b"m")
    assert answer["code"] == 0 and answer["data"]["seqs"] == {"1": 1, "2": 1, "3": 1}
    assert [mid for mid, *_ in inbox.appended] == [1, 2, 3]


def test_push_by_key_of_many_keys_is_bounded_by_max_targets() -> None:
    a = Api(router={"max_targets": 2})
    a.connect("w1", "k1", 5, "")
    a.pushed()
    _, answer = a.call("POST", "/goim/push/keys?operation=1000&keys=k1&keys=k2&keys=k3", b"m")
    assert answer == {"code": -400, "message": "3 keys in one push; the limit is 2 ([router] max_targets)"}
    assert a.pushed() == []
    _, answer = a.call("POST", "/goim/push/keys?operation=1000&keys=k1&keys=k2&keys=k1", b"m")
    assert answer["data"] == {"connections": 1}


def test_batch_items_with_a_bad_mid_are_refused_and_the_others_go(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    a = Api()
    a.connect("w1", "k1", 5, "")
    inbox = a.spy()
    a.pushed()
    body = json.dumps(
        [
            {"kind": "mids", "op": 1000, "mids": [5, 0], "body": "zero"},
            {"kind": "mids", "op": 1000, "mids": [5], "body": "fine"},
            {"kind": "mids", "op": 1000, "mids": [-3, 5], "body": "negative"},
            {"kind": "mids", "op": 1000, "mids": [1 << 63], "body": "too big"},
        ]
    ).encode()
    status, answer = a.call("POST", "/mpim/push", body)
    assert status == 200 and answer["code"] == 0
    zero, fine, negative, big = answer["data"]
    assert zero == {
        "code": -400,
        "message": f"mids: 0 is not a user id (a mid is an integer from 1 to {MID_MAX})",
    }
    assert fine["data"] == {"connections": 1, "seqs": {"5": 1}}
    assert negative["code"] == -400 and negative["message"].startswith("mids: -3 is not a user id")
    assert big["code"] == -400 and big["message"].startswith(f"mids: {1 << 63} is not a user id")
    assert [(mid, body) for mid, _, body, _ in inbox.appended] == [(5, b"fine")]
    assert [r.body for r in a.pushed()] == [b"fine"]
    # one line for the request, saying how many items were refused and why the first was
    assert refusals(caplog) == [f"refusing 3 of 4 items of POST /mpim/push: item 0: {zero['message']}"]


def test_batch_is_bounded_by_max_targets_per_item_and_in_total(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    a = Api(router={"max_targets": 3})
    inbox = a.spy()

    def push(*items: dict[str, Any]) -> dict[str, Any]:
        status, answer = a.call("POST", "/mpim/push", json.dumps(list(items)).encode())
        assert status == 200
        return answer  # type: ignore[no-any-return]

    assert push(
        {"kind": "keys", "op": 1, "keys": ["a"]}, {"kind": "mids", "op": 1, "mids": [1, 2, 3, 4]}
    ) == {
        "code": -400,
        "message": "item 1: 4 mids in one push; the limit is 3 ([router] max_targets)",
    }
    assert push({"kind": "mids", "op": 1, "mids": [1, 2]}, {"kind": "keys", "op": 1, "keys": ["a", "b"]}) == {
        "code": -400,
        "message": "4 mids and keys in one request (over its 2 items); the limit is 3 ([router] max_targets)",
    }
    assert inbox.appended == [] and len(refusals(caplog)) == 2
    # duplicates within an item count once; the same mid in two items is two pushes (stored twice)
    answer = push({"kind": "mids", "op": 1, "mids": [1, 1, 2, 2]}, {"kind": "mids", "op": 1, "mids": [1]})
    assert [item["code"] for item in answer["data"]] == [0, 0]
    assert [mid for mid, *_ in inbox.appended] == [1, 2, 1]


def test_one_batch_item_naming_100000_users_is_refused_whole() -> None:
    """The report: 672 KiB of mids in one item made the router write 100,000 inbox rows."""
    a = Api()
    inbox = a.spy()
    body = json.dumps([{"kind": "mids", "op": 1000, "mids": list(range(1, 100_001)), "body": "x"}]).encode()
    assert len(body) > 600_000
    _, answer = a.call("POST", "/mpim/push", body)
    assert answer == {
        "code": -400,
        "message": "item 0: 100000 mids in one push; the limit is 10000 ([router] max_targets)",
    }
    assert inbox.appended == []
