"""Arbitrary frames of the reliable ops (4 message, 18 ack, 20 resume, 22 confirm) from an ack
client, against a real in-process worker over TCP.

Every field of every one of these frames is checked at the edge: whatever the bodies and header
seqs, the worker answers only with frames of the contract (op 5 answers carrying the message's
id and a code, goim's op 4 echo, op 21 once), closes the connection only after an op 6, logs
nothing at ERROR, and keeps serving its other clients (the rig's bystanders).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mpim.proto import Decoder, Frame, Op, encode
from tests.fuzz.strategies import INT16, INT32, JSON_VALUES, nested
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
MODES = ["none", "only", "rigor"]
SENTINEL = 0x5EED


def _json(value: object, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


IDS = st.one_of(
    st.sampled_from(["m1", "", "x" * 64, "x" * 65, "\ud800", "é"]), st.text(max_size=8), JSON_VALUES
)
EPOCHS = st.one_of(
    st.sampled_from(["", "ab12cd34", "\ud800", "a b", "x" * 65, "é"]), st.text(max_size=6), JSON_VALUES
)
SEQS = st.one_of(st.integers(-3, 5), st.sampled_from([2**31 - 1, 2**31, -(2**31), 2**63]), JSON_VALUES)
OBJECTS = {
    4: st.fixed_dictionaries(
        {}, optional={"id": IDS, "to": SEQS, "op": st.one_of(INT32, SEQS), "body": JSON_VALUES}
    ),
    20: st.fixed_dictionaries({}, optional={"epoch": EPOCHS, "seq": SEQS}),
    22: st.fixed_dictionaries({}, optional={"id": IDS}),
    18: st.just({}),
}


def bodies(op: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(_json, OBJECTS[op], st.booleans()),
        st.builds(_json, JSON_VALUES, st.booleans()),
        st.builds(nested, st.sampled_from([5, 1500]), st.sampled_from(["[", '{"a":'])),
        st.sampled_from([b"", b"{}", b" ", b"\xff\xfe", b"{", b"null"]),
        st.binary(max_size=40),
    )


RELIABLE_FRAME = st.sampled_from([4, 18, 20, 22]).flatmap(
    lambda op: st.builds(encode, st.just(op), bodies(op), INT16, INT32)
)


@pytest.fixture(scope="module", params=MODES)
def rig(request: pytest.FixtureRequest) -> Iterator[WorkerRig]:
    with WorkerRig(upstream={"ack": request.param}, protocol={"max_body": 16384}) as running:
        yield running
        running.check_healthy()


def exchange(rig: WorkerRig, frames: list[bytes]) -> tuple[list[Frame], bool]:
    """Auth as an ack client, send the frames and a heartbeat; (frames received, closed by the server)."""
    sock = socket.create_connection(rig.tcp, timeout=5)
    decoder = Decoder(max_body=1 << 20)
    got: list[Frame] = []
    try:
        sock.sendall(encode(Op.AUTH, b'{"mid":7,"key":"rel-fuzz","accepts":[1000],"caps":["ack"]}', seq=1))
        sock.sendall(b"".join(frames) + encode(Op.HEARTBEAT, seq=SENTINEL))
        while True:
            data = sock.recv(65536)
            if not data:
                return got, True
            got += decoder.feed(data)
            if any(f.op == Op.HEARTBEAT_REPLY and f.seq == SENTINEL for f in got):
                return got, False
    except ConnectionResetError:
        return got, True
    finally:
        sock.close()


def check(rig: WorkerRig, frames: list[bytes]) -> None:
    got, closed = exchange(rig, frames)
    assert got and got[0].op == Op.AUTH_REPLY, got
    resumed = 0
    for frame in got[1:]:
        if frame.op == Op.SEND_MSG_REPLY:
            answer = json.loads(frame.body)
            assert "id" in answer and isinstance(answer.get("code"), int), answer
        elif frame.op == 21:
            resumed += 1
            info = json.loads(frame.body)
            assert set(info) == {"epoch", "seq", "recovered"}, info
        else:
            assert frame.op in (Op.SEND_MSG, Op.HEARTBEAT_REPLY, Op.DISCONNECT_REPLY), frame
    assert resumed <= 1
    asked = any(Decoder(max_body=1 << 20).feed(frame)[0].op == 20 for frame in frames)
    if asked and not closed:  # (the standalone worker answers a resume at once: never a hang)
        assert resumed == 1, f"a resume (op 20) with no answer: {got}"
    if closed:
        assert got[-1].op == Op.DISCONNECT_REPLY, f"closed without op 6: {got}"
    else:
        assert all(f.op != Op.DISCONNECT_REPLY for f in got), got
    rig.check_healthy()


@FUZZ
@given(st.lists(RELIABLE_FRAME, min_size=1, max_size=6))
@example([encode(22, b"{}", seq=2)])  # KeyError: 'id' before
@example([encode(20, b'{"epoch": "\\ud800", "seq": 1}', seq=2)])  # a hang before: no op 21, no close
@example([encode(4, b'{"id": "a", "op": 1, "body": "\\ud800"}', seq=2)])
@example([encode(4, b'{"id": "\\ud800", "op": "x"}', seq=2)])
@example([encode(18, b"x", seq=2)])
def test_reliable_frames(rig: WorkerRig, frames: list[bytes]) -> None:
    check(rig, frames)
