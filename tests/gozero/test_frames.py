"""The go-zero JSON frame codec: client text in, a frame or an error out; frames out as Go writes them."""

from __future__ import annotations

import base64
import json

import pytest

from mpim.gozero.frames import (
    FRAME_ACK,
    FRAME_DATA,
    FRAME_PING,
    FrameError,
    GzFrame,
    body_json,
    decode,
    encode,
    error_frame,
    goim_items,
)
from mpim.gozero.push import push_frame, push_frames
from mpim.proto import Op
from mpim.proto import encode as goim
from mpim.worker.room import ws_batch
from mpim.worker.wsframe import binary_frame, text_frame


def test_a_full_frame() -> None:
    raw = {"frameType": 0, "id": "m1", "ackSeq": 3, "method": "conversation.chat", "formId": "7", "data": [1]}
    assert decode(json.dumps(raw).encode()) == GzFrame(0, "m1", 3, "conversation.chat", "7", [1], "")


@pytest.mark.parametrize(
    "text",
    [b"{}", b'{"frameType": null, "id": null, "ackSeq": null, "method": null}', b'{"other": 1}'],
)
def test_absent_or_null_fields_are_the_go_zero_values_and_unknown_ones_are_ignored(text: bytes) -> None:
    assert decode(text) == GzFrame(FRAME_DATA, "", 0, "", "", None, "")


def test_transpond_uid_and_binary_messages() -> None:
    assert decode(b'{"frameType":6,"transpondUid":"9","data":"x"}').transpond_uid == "9"
    assert decode('{"method":"é"}'.encode()).method == "é"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"nope", "not JSON"),
        (b"\xff{}", "not UTF-8"),
        (b"[1]", "JSON object"),
        (b'"x"', "JSON object"),
        (b'{"frameType": "0"}', "frameType must be"),
        (b'{"frameType": true}', "frameType must be"),
        (b'{"frameType": 256}', "frameType must be"),
        (b'{"frameType": -1}', "frameType must be"),
        (b'{"frameType": 1.0}', "frameType must be"),
        (b'{"ackSeq": "1"}', "ackSeq must be"),
        (b'{"ackSeq": 9223372036854775808}', "ackSeq must be"),
        (b'{"id": 5}', "id must be a string"),
        (b'{"method": []}', "method must be a string"),
        (b'{"formId": {}}', "formId must be a string"),
        (b'{"id": "' + b"x" * 65 + b'"}', "id is longer than 64"),
        (b'{"id": "\\ud800"}', "not valid UTF-8"),
        (b'{"data": NaN}', "not JSON"),
        (b'{"data": 1e999}', "not JSON"),
        (b"[" * 100000, "not JSON"),
    ],
)
def test_what_is_not_a_frame_says_why(text: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        decode(text)


def test_server_frames_carry_every_field_like_go() -> None:
    assert json.loads(encode(FRAME_PING)) == {
        "frameType": 1, "id": "", "ackSeq": 0, "method": "", "formId": "", "data": None,
    }  # fmt: skip
    ack = json.loads(encode(FRAME_ACK, id="é\ud800", ack_seq=2))  # (a lone surrogate is escaped)
    assert ack["id"] == "é\ud800" and ack["ackSeq"] == 2
    err = json.loads(error_frame("bad", id="m", method="x", code=-400))
    assert (err["frameType"], err["data"], err["code"], err["id"]) == (9, "bad", -400, "m")


@pytest.mark.parametrize(
    ("body", "data", "b64"),
    [
        (b'{"a":1}', {"a": 1}, False),
        (b"[1, 2]", [1, 2], False),
        (b"42", 42, False),
        (b"hello", "hello", False),
        (b"", "", False),
        (b"NaN", "NaN", False),
        ("\ufeff{}".encode(), "\ufeff{}", False),
        (b"\xff\x00", base64.b64encode(b"\xff\x00").decode(), True),
    ],
)
def test_a_pushed_body_is_json_when_it_is_else_a_string(body: bytes, data: object, b64: bool) -> None:
    text, is_b64 = body_json(body)
    assert json.loads(text) == data and is_b64 == b64


def test_goim_items_of_a_frame_and_of_a_batch() -> None:
    one = binary_frame(goim(1000, b"x" * 300, seq=5))
    assert goim_items(one) == [(1000, 5, b"x" * 300)]
    batch = ws_batch(goim(1000, b"a", seq=1) + goim(1001, b"", seq=2))
    assert goim_items(batch) == [(1000, 1, b"a"), (1001, 2, b"")]
    big = binary_frame(goim(7, b"y" * 70000))
    assert goim_items(big) == [(7, 0, b"y" * 70000)]
    with pytest.raises(ValueError, match="packLen"):
        goim_items(binary_frame(goim(1, b"abc")[:-1]))


def test_push_frames() -> None:
    frame = json.loads(push_frame(1000, 0, b'{"n":1}', 5))
    assert frame == {
        "frameType": 0, "id": "", "ackSeq": 0, "method": "push", "formId": "root", "data": {"n": 1},
        "op": 1000,
    }  # fmt: skip
    binary = json.loads(push_frame(1000, 9, b"\xfe", 5))
    assert binary["base64"] is True and binary["ackSeq"] == 9
    env = b'{"id":"m1","from":3,"to":4,"body":"hi"}'
    chat = json.loads(push_frame(1000, 12, env, 99))
    assert (chat["id"], chat["ackSeq"], chat["formId"]) == ("m1", 12, "3")
    assert chat["data"]["msg"] == {"mType": 0, "content": "hi"} and chat["data"]["sendId"] == "3"
    both = push_frames(ws_batch(goim(1000, b"a", seq=1) + goim(1000, env, seq=2)), 0)
    assert [json.loads(f)["formId"] for f in both] == ["root", "3"]


def test_text_frames() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:2] == b"\x81\x7f"


def test_op_raw_as_a_business_op_is_not_taken_for_a_batch() -> None:
    assert goim_items(binary_frame(goim(Op.RAW, b"abc"))) == [(Op.RAW, 0, b"abc")]
