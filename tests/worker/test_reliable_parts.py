"""The pure parts of reliable delivery and client messages: frame bodies in, values or clear errors out."""

from __future__ import annotations

import pytest

from mpim.proto import RemoteProtocolError
from mpim.worker.reliable import CAP_ACK, CAP_SEQ, caps_bits, parse_resume
from mpim.worker.upstream import parse_message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ("", 0, True)),
        (b"  ", ("", 0, True)),
        (b"{}", ("", 0, True)),
        (b'{"epoch": "ab12", "seq": 7}', ("ab12", 7, False)),
        (b'{"epoch": "", "seq": 0}', ("", 0, False)),
    ],
)
def test_resume_bodies(body: bytes, expected: tuple[str, int, bool]) -> None:
    assert parse_resume(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"[",
        b"[1]",
        b'"x"',
        b'{"epoch": 1, "seq": 2}',
        b'{"epoch": "a"}',
        b'{"epoch": "a", "seq": -1}',
        b'{"epoch": "a", "seq": true}',
    ],
)
def test_bad_resume_bodies_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="op 20"):
        parse_resume(body)


def test_message_bodies() -> None:
    assert parse_message(b'{"id": "m1", "to": 5, "op": 1000, "body": {"a": [1]}}') == (
        "m1",
        5,
        1000,
        b'{"a":[1]}',
    )
    assert parse_message(b'{"id": "m2", "op": 7}') == ("m2", 0, 7, b"null")  # no "to": for the backend


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"nope", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"op": 1}', "id must be"),
        (b'{"id": "", "op": 1}', "id must be"),
        (b'{"id": "' + b"x" * 65 + b'", "op": 1}', "id must be"),
        (b'{"id": "a", "to": -1, "op": 1}', "to must be"),
        (b'{"id": "a", "to": "5", "op": 1}', "to must be"),
        (b'{"id": "a", "to": 5}', "op must be"),
        (b'{"id": "a", "to": 5, "op": 4294967296}', "op must be"),
        (b'{"id": "\\ud800", "op": 1}', "UTF-8"),
    ],
)
def test_bad_message_bodies_say_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_message(body)


def test_caps() -> None:
    assert caps_bits(frozenset()) == 0
    assert caps_bits(frozenset({"ack"})) == CAP_ACK
    assert caps_bits(frozenset({"ack", "seq"})) == CAP_ACK | CAP_SEQ
