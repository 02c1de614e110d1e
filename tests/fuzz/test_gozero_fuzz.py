"""Arbitrary messages on the go-zero endpoint of a real in-process worker (WebSocket, each ack mode).

Whatever the messages (frames with every field of every type, chat and user.online data of any
shape, text that is not JSON or not UTF-8, nesting too deep), the worker answers only go-zero frames
with all six fields, closes the connection exactly when a message was not a go-zero frame and then
only after an error frame saying so, logs nothing at ERROR, and keeps serving its other clients.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from mpim.gozero.frames import FrameError, decode
from tests.fuzz.strategies import INT64_EDGE, JSON_VALUES, nested
from tests.fuzz.worker_rig import WorkerRig

EXAMPLES = int(os.environ.get("MPIM_FUZZ_WORKER_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
MAX_BODY = 4096  # (this module's rigs' [protocol] max_body: the default)
SENTINEL = {
    "frameType": 0,
    "id": "sentinel",
    "method": "fuzz.sentinel",
}  # an unknown method: answered at once
FIELDS = ("frameType", "id", "ackSeq", "method", "formId", "data")

TEXTS = st.one_of(
    st.sampled_from(["", "m1", "x" * 64, "x" * 65, "\ud800", "é", "sentinel"]), st.text(max_size=8)
)
ANY = st.one_of(TEXTS, JSON_VALUES, INT64_EDGE)
CHAT = st.fixed_dictionaries(
    {},
    optional={
        "recvId": st.one_of(st.sampled_from([7, "7", 8, "8", 0, "x", -1]), ANY),
        "chatType": st.one_of(st.sampled_from([1, 2]), ANY),
        "msg": st.one_of(st.fixed_dictionaries({}, optional={"mType": ANY, "content": ANY}), ANY),
        "sendTime": ANY,
        "conversationId": ANY,
    },
)
FRAME = st.fixed_dictionaries(
    {},
    optional={
        "frameType": st.one_of(st.sampled_from([0, 1, 2, 3, 6, 9, 5, 256, -1]), ANY),
        "id": TEXTS,
        "ackSeq": st.one_of(st.integers(-2, 3), INT64_EDGE, ANY),
        "method": st.one_of(st.sampled_from(["conversation.chat", "user.online", "push", "x.y"]), ANY),
        "formId": ANY,
        "transpondUid": ANY,
        "data": st.one_of(CHAT, st.lists(ANY, max_size=4), ANY),
    },
)


def _text(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


MESSAGES = st.one_of(
    st.builds(_text, FRAME, st.booleans()),
    st.builds(_text, JSON_VALUES, st.booleans()),
    st.builds(
        lambda d, o: nested(d, o).decode(), st.sampled_from([5, 1500]), st.sampled_from(["[", '{"a":'])
    ),
    st.sampled_from(
        ["", "{}", " ", "{", "null", '{"data": NaN}', '{"ackSeq": 1e999}', "x" * (2 * MAX_BODY + 1)]
    ),
    st.binary(max_size=40),
)


@pytest.fixture(scope="module", params=["none", "only", "rigor"])
def rig(request: pytest.FixtureRequest) -> Iterator[WorkerRig]:
    with WorkerRig(gozero={"path": "/ws"}, upstream={"ack": request.param}) as running:
        yield running
        running.check_healthy()


def is_frame(message: str | bytes, max_body: int) -> bool:
    data = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
    if len(data) > max_body:
        return False
    try:
        decode(data)
    except FrameError:
        return False
    return True


def exchange(rig: WorkerRig, messages: list[str | bytes]) -> tuple[list[dict[str, Any]], bool]:
    """Send the messages and the sentinel; (frames received, closed by the server)."""
    base = rig.ws_url.rsplit("/", 1)[0]
    got: list[dict[str, Any]] = []
    url = f"{base}/ws?token={urllib.parse.quote(json.dumps({'mid': 7}))}"
    with connect(url, compression=None, max_size=None, proxy=None, ping_interval=None) as conn:
        try:
            for message in messages:
                if isinstance(message, str):
                    conn.send(message.encode("utf-8", "surrogatepass"), text=True)
                else:
                    conn.send(message)
            conn.send(json.dumps(SENTINEL))
        except ConnectionClosed:  # (closed while sending: what came before the close is still read)
            pass
        try:
            while True:
                frame = json.loads(conn.recv(timeout=5))
                got.append(frame)
                if frame["id"] == "sentinel" and frame["method"] == SENTINEL["method"]:
                    return got, False
        except ConnectionClosed:
            return got, True


def check(rig: WorkerRig, messages: list[str | bytes]) -> None:
    got, closed = exchange(rig, messages)
    for frame in got:
        assert list(frame)[:6] == list(FIELDS), frame
        assert frame["frameType"] in (0, 1, 2, 9), frame
        assert isinstance(frame["id"], str) and isinstance(frame["ackSeq"], int), frame
    bad = [m for m in messages if not is_frame(m, rig.cfg.protocol.max_body)]
    assert closed == bool(bad), (closed, bad, got)
    if closed:
        assert got and got[-1]["frameType"] == 9 and got[-1]["code"] == -400, got
    rig.check_healthy()


TARGETS = [("worker.gozero", st.lists(MESSAGES, min_size=1, max_size=6), check)]  # (bench.fuzz_campaign)


@FUZZ
@given(st.lists(MESSAGES, min_size=1, max_size=6))
@example(['{"frameType": 0, "method": "conversation.chat", "id": "a", "data": {"recvId": 7, "msg": {}}}'])
@example(['{"method": "user.online", "id": "o", "data": {"uids": [1, "2", "x"]}}'])
@example(['{"frameType": 2, "method": "push", "ackSeq": 9223372036854775807}'])
@example(
    ['{"frameType": 0, "id": "r", "method": "x", "ackSeq": 5}', '{"frameType": 2, "id": "r", "ackSeq": 6}']
)
@example(['{"data": {"a": NaN}}', b"\xff"])
def test_gozero_frames(rig: WorkerRig, messages: list[str | bytes]) -> None:
    check(rig, messages)
