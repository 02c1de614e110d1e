from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from mpim.auth import (
    Authenticator,
    AuthError,
    AuthKeyError,
    load_public_key,
    mint,
    private_key_algorithm,
)
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
        (mint(SECRET, 1, ttl=-120), "expired"),  # past the 30 s leeway
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


# -- mid: a user id (> 0); json mode also takes 0 = an anonymous connection --------------------------


def _jwt(claims: dict[str, Any]) -> bytes:
    return jwt.encode({**claims, "exp": time.time() + 60}, SECRET, algorithm="HS256").encode()


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, r"the token has no mid \(jwt mode needs an integer mid > 0\)"),
        ({"mid": None}, "mid None is not an int64"),
        ({"mid": 0}, r"mid 0 is not a user id \(jwt mode needs an integer mid > 0\)"),
        ({"mid": -3}, r"mid -3 is not a user id \(jwt mode needs an integer mid > 0\)"),
        ({"mid": -(1 << 63)}, "is not a user id"),
        ({"mid": 1 << 63}, "is not an int64"),
        ({"mid": True}, "is not an int64"),
        ({"mid": 0, "caps": ["ack"]}, "mid 0 is not a user id"),
    ],
)
def test_jwt_mode_needs_a_user_id(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        Authenticator("jwt", SECRET).verify(_jwt(claims))


def test_jwt_mode_takes_any_user_id() -> None:
    auth = Authenticator("jwt", SECRET)
    assert auth.verify(_jwt({"mid": 1})).mid == 1
    assert auth.verify(_jwt({"mid": (1 << 63) - 1, "caps": ["ack"]})).mid == (1 << 63) - 1


def test_json_mode_takes_mid_0_as_anonymous_without_a_stream() -> None:
    auth = Authenticator("json")
    assert auth.verify(b"{}").mid == 0 and auth.verify(b'{"mid":0}').mid == 0  # goim's clients and tools
    assert auth.verify(b'{"mid":0,"caps":["seq"]}').caps == frozenset({"seq"})
    assert auth.verify(b'{"mid":7,"caps":["ack"]}').caps == frozenset({"ack"})
    for token in (b'{"caps":["ack"]}', b'{"mid":0,"caps":["seq","ack"]}'):
        with pytest.raises(AuthError, match=r'the "ack" cap needs a user id \(mid > 0\)'):
            auth.verify(token)


@pytest.mark.parametrize("mid", [-1, -3, -(1 << 63)])
def test_json_mode_refuses_a_negative_mid(mid: int) -> None:
    with pytest.raises(AuthError, match=f"mid {mid} is negative"):
        Authenticator("json").verify(b'{"mid":%d}' % mid)


# -- public keys (RS256 / ES256), leeway, algorithm confusion ------------------------------------


def _keypair(kind: str, tmp_path: Any) -> tuple[str, str]:
    """(private PEM text, path of the public PEM file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key: Any = (
        rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / f"{kind}.pub.pem"
    path.write_bytes(public)
    return private, str(path)


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("ec", "ES256")])
def test_public_key_tokens_are_verified_and_others_refused(kind: str, alg: str, tmp_path: Any) -> None:
    private, public_path = _keypair(kind, tmp_path)
    assert private_key_algorithm(private) == alg
    key, found = load_public_key(public_path)
    assert found == alg
    auth = Authenticator("jwt", public_key=key, public_alg=alg)
    token = mint(private, 9, room="live://1", key="k9", algorithm=alg)
    assert auth.verify(token.encode()).mid == 9
    (tmp_path / "other").mkdir()
    other, _ = _keypair(kind, tmp_path / "other")
    with pytest.raises(AuthError, match="Signature verification failed"):
        auth.verify(mint(other, 9, algorithm=alg).encode())
    with pytest.raises(AuthError, match=r"algorithm 'HS256' is not accepted here \(" + alg):
        auth.verify(mint(SECRET, 9).encode())  # no secret configured: HS256 is not taken at all


def test_a_public_key_is_never_used_as_an_hmac_secret(tmp_path: Any) -> None:
    """The classic confusion: an HS256 token 'signed' with the public key's PEM text."""
    import hashlib
    import hmac as hmac_mod

    _, public_path = _keypair("rsa", tmp_path)
    key, alg = load_public_key(public_path)
    pem = Path(public_path).read_bytes()
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    body = jwt.utils.base64url_encode(json.dumps({"mid": 1, "exp": time.time() + 60}).encode())
    sig = jwt.utils.base64url_encode(hmac_mod.new(pem, header + b"." + body, hashlib.sha256).digest())
    with pytest.raises(AuthError, match="'HS256' is not accepted"):
        Authenticator("jwt", public_key=key, public_alg=alg).verify(header + b"." + body + b"." + sig)


def test_both_a_secret_and_a_public_key_are_accepted_each_for_its_algorithm(tmp_path: Any) -> None:
    private, public_path = _keypair("ec", tmp_path)
    key, alg = load_public_key(public_path)
    auth = Authenticator("jwt", SECRET, key, alg)
    assert auth.verify(mint(SECRET, 1).encode()).mid == 1
    assert auth.verify(mint(private, 2, algorithm="ES256").encode()).mid == 2
    with pytest.raises(AuthError, match="'none' is not accepted"):
        auth.verify(jwt.encode({"mid": 3, "exp": time.time() + 60}, None, algorithm="none").encode())


def test_exp_and_nbf_allow_the_leeway_and_no_more() -> None:
    now = time.time()
    late = jwt.encode({"mid": 1, "exp": now - 100}, SECRET, algorithm="HS256").encode()
    early = jwt.encode({"mid": 1, "exp": now + 3600, "nbf": now + 100}, SECRET, algorithm="HS256").encode()
    assert Authenticator("jwt", SECRET, leeway=300).verify(late).mid == 1
    assert Authenticator("jwt", SECRET, leeway=300).verify(early).mid == 1
    with pytest.raises(AuthError, match="expired"):
        Authenticator("jwt", SECRET, leeway=30).verify(late)
    with pytest.raises(AuthError, match="not yet valid"):
        Authenticator("jwt", SECRET, leeway=30).verify(early)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        (b"not a key", "holds no PEM public key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "give the public half"),
    ],
)
def test_unusable_public_key_files_are_refused(content: bytes | None, reason: str, tmp_path: Any) -> None:
    path = tmp_path / "key.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AuthKeyError, match=reason):
        load_public_key(str(path))


def test_small_rsa_and_other_curves_are_refused(tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    for name, key, reason in [
        ("small", rsa.generate_private_key(65537, 1024), "1024 bits is too small"),
        ("p384", ec.generate_private_key(ec.SECP384R1()), "not an RSA .RS256. or P-256"),
    ]:
        path = tmp_path / f"{name}.pem"
        path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, spki))
        with pytest.raises(AuthKeyError, match=reason):
            load_public_key(str(path))


def test_the_go_zero_endpoint_may_name_the_user_in_sub() -> None:
    auth = Authenticator("jwt", SECRET)
    assert auth.verify(_jwt({"sub": "77"}), subject=True).mid == 77
    assert auth.verify(_jwt({"sub": "77", "mid": 5}), subject=True).mid == 5  # mid wins
    assert Authenticator("json").verify(b'{"sub": "8"}', subject=True).mid == 8
    for sub in ("x", "-1", "0", "1.5"):
        with pytest.raises(AuthError, match="mid"):
            auth.verify(_jwt({"sub": sub}), subject=True)
    with pytest.raises(AuthError, match="no mid"):  # goim's Auth frame does not read sub
        auth.verify(_jwt({"sub": "77"}))
