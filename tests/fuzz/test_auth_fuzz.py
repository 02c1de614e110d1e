"""Token parsing: whatever the Auth body, json and jwt mode give an Identity or AuthError."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mpim.auth import Authenticator, AuthError, Identity
from mpim.limits import MAX_ROOM_ID
from tests.fuzz.strategies import CLAIMS, JSON_TOKENS, JSON_VALUES, NEST_DEPTHS, nested

SECRET = "fuzz-secret-" + "k" * 52
JSON_AUTH = Authenticator("json")
JWT_AUTH = Authenticator("jwt", SECRET)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_identity(ident: Identity, anonymous: bool) -> None:
    """What the rest of the server relies on: sizes, ranges, text that encodes to UTF-8; a user id
    (> 0) in jwt mode, and in json mode 0 (anonymous) only without the ack cap."""
    assert isinstance(ident.mid, int) and (0 if anonymous else 1) <= ident.mid < 1 << 63
    assert ident.mid > 0 or "ack" not in ident.caps
    for text in (ident.key, ident.room, ident.platform):
        assert isinstance(text, str)
        text.encode("utf-8")  # msgpack and the bus need strict UTF-8
    assert len(ident.key) <= 128 and len(ident.platform) <= 32
    assert len(ident.room.encode()) <= MAX_ROOM_ID and "\x00" not in ident.room
    assert all(isinstance(op, int) and -(1 << 31) <= op < 1 << 31 for op in ident.accepts)


def check_token(auth: Authenticator, token: bytes) -> None:
    try:
        ident = auth.verify(token)
    except AuthError:
        return
    check_identity(ident, auth.mode == "json")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed(header: bytes, payload: bytes, secret: str = SECRET) -> bytes:
    """An HS256 JWT over raw header and payload bytes (valid JSON or not)."""
    signing_input = _b64(header) + b"." + _b64(payload)
    return signing_input + b"." + _b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())


def _json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


JWT_HEADERS = st.one_of(
    st.just(b'{"alg":"HS256","typ":"JWT"}'),
    st.builds(
        lambda extra: _json({"alg": "HS256", **extra}),
        st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
    ),
    st.builds(_json, JSON_VALUES),
    st.sampled_from([b'{"alg":"none"}', b'{"alg":"HS512"}', b"{}", b"[]"]),
    st.builds(nested, NEST_DEPTHS, st.just("[")),
    st.binary(max_size=40),
)
JWT_PAYLOADS = st.one_of(
    st.builds(lambda claims: _json({"exp": 4102444800, **claims}), CLAIMS),
    st.builds(_json, CLAIMS),
    st.builds(_json, JSON_VALUES),
    st.builds(nested, NEST_DEPTHS, st.sampled_from(["[", '{"a":'])),
    st.binary(max_size=40),
)
JWT_TOKENS = st.one_of(
    st.builds(signed, JWT_HEADERS, JWT_PAYLOADS),
    st.builds(signed, JWT_HEADERS, JWT_PAYLOADS, st.just("wrong-secret")),
    st.lists(st.binary(max_size=30).map(_b64), max_size=4).map(b".".join),
    st.binary(max_size=120),
)

TARGETS = [
    ("auth.json", JSON_TOKENS, lambda token: check_token(JSON_AUTH, token)),
    ("auth.jwt", JWT_TOKENS, lambda token: check_token(JWT_AUTH, token)),
]


@FAST
@given(JSON_TOKENS)
@example(b'{"key":"\\udcff"}')  # a lone surrogate used to pass, then break msgpack on the bus
@example(b'{"platform":"\\ud83d"}')
def test_json_mode_gives_identity_or_auth_error(token: bytes) -> None:
    check_token(JSON_AUTH, token)


@FAST
@given(JWT_TOKENS)
def test_jwt_mode_gives_identity_or_auth_error(token: bytes) -> None:
    check_token(JWT_AUTH, token)


@FAST
@given(st.binary(max_size=256))
def test_arbitrary_bytes_in_both_modes(token: bytes) -> None:
    check_token(JSON_AUTH, token)
    check_token(JWT_AUTH, token)


def test_deep_nesting_is_refused_not_crashed() -> None:
    """Fits a 4096-byte Auth body; it used to raise RecursionError out of the worker."""
    for depth in (1100, 5000):
        check_token(JSON_AUTH, nested(depth, "["))
        check_token(JWT_AUTH, signed(b'{"alg":"HS256"}', nested(depth, "[")))
        check_token(JWT_AUTH, signed(nested(depth, "["), b"{}"))
