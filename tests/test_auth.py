from __future__ import annotations

import json
import time

import jwt
import pytest

from mpim.auth import Authenticator, AuthError, mint
from mpim.limits import check_room_id

SECRET = "test-secret-" + "x" * 56


def test_json_mode_accepts_goim_token() -> None:
    token = b'{"mid":123,"key":"","room_id":"live://1000","platform":"web","accepts":[1000,1001,1002]}'
    ident = Authenticator("json").verify(token)
    assert ident.mid == 123 and ident.key == "" and ident.room == "live://1000"
    assert ident.platform == "web" and ident.accepts == frozenset({1000, 1001, 1002})


def test_json_mode_minimal_token() -> None:
    ident = Authenticator("json").verify(b"{}")
    assert ident.mid == 0 and ident.room == "" and ident.accepts == frozenset()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"mid":"12"}', "mid '12' is not an int64"),
        (b'{"mid":1e3}', "not an int64"),
        (b'{"mid":99999999999999999999}', "not an int64"),
        (b'{"key":5}', "key 5 is not a string"),
        (b'{"accepts":[1,"x"]}', "not an int32"),
        (b'{"accepts":[4294967296]}', "not an int32"),
        (b'{"accepts":7}', "must be a list"),
        (b'{"room_id":"a\\u0000b"}', "without NUL"),
        (json.dumps({"room_id": "r" * 300}).encode(), "at most 256 bytes"),
        (json.dumps({"key": "k" * 200}).encode(), "longer than 128"),
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, "nested too deeply"),
        (b'{"key":"\\ud800"}', "key is not valid UTF-8"),
        (b'{"room_id":"live://\\udfff"}', "room_id is not valid UTF-8"),
        (b'{"platform":"web\\ud83d"}', "platform is not valid UTF-8"),
    ],
)
def test_json_mode_rejects_malformed(token: bytes, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        Authenticator("json").verify(token)


def test_jwt_round_trip() -> None:
    token = mint(SECRET, 42, room="live://7", key="k1", platform="ios", accepts=(1000,))
    ident = Authenticator("jwt", SECRET).verify(token.encode())
    assert (ident.mid, ident.key, ident.room, ident.platform) == (42, "k1", "live://7", "ios")
    assert ident.accepts == frozenset({1000})


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (mint("another-secret-of-at-least-32-bytes!", 1), "Signature verification failed"),
        (mint(SECRET, 1, ttl=-10), "expired"),
        (jwt.encode({"mid": 1}, SECRET, algorithm="HS256"), 'missing the "exp"'),
        (jwt.encode({"mid": 1, "exp": time.time() + 60}, SECRET, algorithm="HS384"), "alg"),
        ("a.b.c", "jwt rejected"),
        ('{"mid":1}', "jwt rejected"),
    ],
)
def test_jwt_rejects(token: str, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        Authenticator("jwt", SECRET).verify(token.encode())


def signed(payload: bytes) -> str:
    """A correctly signed HS256 token around any payload bytes (claims json.dumps cannot make)."""
    return jwt.api_jws.encode(payload, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 2000 + b"]" * 2000, "nested too deeply|recursion depth"),  # PyJWT may catch it itself
        (b'{"mid":1,"exp":4102444800,"key":"\\ud800"}', "key is not valid UTF-8"),  # exp: year 2100
    ],
)
def test_jwt_rejects_signed_but_bad_claims(payload: bytes, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        Authenticator("jwt", SECRET).verify(signed(payload).encode())


def test_non_ascii_fields_are_kept() -> None:
    token = json.dumps({"key": "clé", "room_id": "live://直播", "platform": "wéb"}).encode()
    ident = Authenticator("json").verify(token)
    assert (ident.key, ident.room, ident.platform) == ("clé", "live://直播", "wéb")


def test_jwt_needs_secret() -> None:
    with pytest.raises(ValueError):
        Authenticator("jwt", "")


def test_room_id_limits() -> None:
    assert check_room_id("live://1000") == "live://1000"
    with pytest.raises(ValueError):
        check_room_id("x\x00")


def test_caps_are_read_and_unknown_ones_ignored() -> None:
    auth = Authenticator("json")
    assert auth.verify(b'{"mid": 1}').caps == frozenset()
    assert auth.verify(b'{"mid": 1, "caps": ["ack", "seq", "teleport", 7]}').caps == frozenset({"ack", "seq"})
    with pytest.raises(AuthError, match="caps"):
        auth.verify(b'{"mid": 1, "caps": "ack"}')
