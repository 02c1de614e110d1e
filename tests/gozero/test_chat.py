"""go-zero chat data <-> mpim private messages, and user.online questions: values in, values or errors out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mpim.gozero.chat import MAX_ONLINE, chat_body, conversation_id, online_query, present, user_id


@pytest.mark.parametrize(("value", "mid"), [(5, 5), ("5", 5), ("9223372036854775807", 2**63 - 1)])
def test_user_ids(value: Any, mid: int) -> None:
    assert user_id(value) == mid


@pytest.mark.parametrize("value", [0, -1, "0", "-1", "x", "", " 5", "5.0", 5.0, True, None, 2**63, "\u0661"])
def test_not_user_ids(value: Any) -> None:
    with pytest.raises(ValueError, match="not a user id"):
        user_id(value)


def test_conversation_ids_follow_go_zero() -> None:
    assert conversation_id(12, 3) == conversation_id(3, 12) == "3_12"


def test_a_chat_is_stamped_with_its_sender() -> None:
    data = {"recvId": "6", "sendId": "999", "msg": {"mType": 0, "content": "hi"}, "extra": [1]}
    to, raw = chat_body(data, sender=5, now_ms=1234)
    assert to == 6
    assert json.loads(raw) == {
        "recvId": "6", "sendId": "5", "msg": {"mType": 0, "content": "hi"}, "extra": [1],
        "conversationId": "5_6", "chatType": 2, "sendTime": 1234,
    }  # fmt: skip
    _, kept = chat_body({**data, "conversationId": "c", "sendTime": 77, "chatType": 2}, 5, 1234)
    assert (json.loads(kept)["conversationId"], json.loads(kept)["sendTime"]) == ("c", 77)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("hi", "JSON object"),
        ({"msg": {}}, "recvId"),
        ({"recvId": "x", "msg": {}}, "recvId"),
        ({"recvId": 6}, "msg must be"),
        ({"recvId": 6, "msg": "hi"}, "msg must be"),
        ({"recvId": 6, "msg": {}, "chatType": 1}, "group chat"),
        ({"recvId": 6, "msg": {}, "chatType": "2"}, "chatType"),
        ({"recvId": 6, "msg": {}, "sendTime": "now"}, "sendTime"),
        ({"recvId": 6, "msg": {}, "conversationId": 5}, "conversationId"),
        ({"recvId": 6, "msg": {"content": "\ud800"}}, "UTF-8"),
    ],
)
def test_bad_chats_say_what_is_wrong(data: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        chat_body(data, 5, 0)


def envelope(body: Any, msg_id: str = "m1", sender: int = 3, to: int = 4) -> bytes:
    return json.dumps({"id": msg_id, "from": sender, "to": to, "body": body}, separators=(",", ":")).encode()


def test_a_go_zero_chat_comes_back_as_it_was_sent() -> None:
    _, raw = chat_body({"recvId": 4, "msg": {"mType": 0, "content": "yo"}}, 3, 10)
    body = json.loads(raw)
    form_id, msg_id, data = present(envelope(body), 99) or ("", "", b"")
    assert (form_id, msg_id) == ("3", "m1")
    assert json.loads(data) == {**body, "sendId": "3", "recvId": "4"}


def test_a_goim_clients_body_becomes_the_message_content() -> None:
    for body, content in (("hi", "hi"), ({"text": "é"}, '{"text": "é"}'), (None, "null")):
        _, _, data = present(envelope(body), 99) or ("", "", b"")
        assert json.loads(data) == {
            "conversationId": "3_4", "chatType": 2, "msg": {"mType": 0, "content": content},
            "sendTime": 99, "sendId": "3", "recvId": "4",
        }  # fmt: skip


def test_the_envelope_says_who_sent_it_whatever_the_body_claims() -> None:
    forged = {"sendId": "1", "recvId": "2", "msg": {"content": "x"}, "conversationId": ""}
    _, _, data = present(envelope(forged), 0) or ("", "", b"")
    assert json.loads(data)["sendId"] == "3" and json.loads(data)["conversationId"] == "3_4"


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":1}',
        b'{"id":"a","from":1,"to":2}',
        b'{"id":"a","from":"1","to":2,"body":0}',
        b"[]",
        b'{"id":"a",',
    ],
)
def test_other_bodies_are_not_chats(body: bytes) -> None:
    assert present(body, 0) is None


def test_online_questions() -> None:
    assert online_query(None, 7) == [7]
    assert online_query([1, "2", 1], 7) == [1, 2]
    assert online_query({"uids": ["3"]}, 7) == [3]
    with pytest.raises(ValueError, match="list of user ids"):
        online_query("1", 7)
    with pytest.raises(ValueError, match="at most"):
        online_query(list(range(1, MAX_ONLINE + 2)), 7)
    with pytest.raises(ValueError, match="not a user id"):
        online_query([0], 7)
