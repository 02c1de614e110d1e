"""Client authentication: the token carried by the Auth frame.

``json`` mode accepts goim's plain JSON token and trusts the client; ``jwt`` mode
verifies a token carrying the same claims plus ``exp``: HS256 signed with
``[auth] secret``, or RS256 / ES256 checked against ``[auth] public_key`` (the
business backend alone holds the private key). The algorithm a token names must
be one the configured keys allow, so a public key is never taken for an HMAC
secret. ``exp`` and ``nbf`` are checked with ``[auth] leeway`` seconds of skew.

``mid`` is a user id, an integer from 1 to 2**63 - 1. A jwt must carry one. A json
token may leave it out or give 0: goim's anonymous connection, which joins rooms and
gets pushes by key, room and broadcast but has no user stream, so it cannot ask for
the ``ack`` cap (nor, therefore, send private chat). A negative mid is refused in
both modes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from mpim.limits import INT32, INT64, MAX_KEY, check_room_id, in_range

if TYPE_CHECKING:
    from mpim.config import AuthSection

_TOO_DEEP = "token is not valid JSON: nested too deeply"
_MIN_RSA_BITS = 2048


class AuthError(Exception):
    """The token is refused; the message says why (for the log, not the client)."""


CAPS = ("ack", "seq")  # what a client may opt in to (see the README's "Reliable delivery")


@dataclass(frozen=True, slots=True)
class Identity:
    mid: int
    key: str
    room: str
    platform: str
    accepts: frozenset[int]
    caps: frozenset[str] = frozenset()


def parse_caps(values: Any) -> frozenset[str]:
    """The ``caps`` claim: a list of strings; unknown ones are ignored (goim's parser ignores the field)."""
    if values is None:
        return frozenset()
    if not isinstance(values, list):
        raise AuthError("caps must be a list of strings")
    return frozenset(v for v in values if isinstance(v, str) and v in CAPS)


def parse_ops(values: Any) -> frozenset[int]:
    """A list of int32 operation codes."""
    if not isinstance(values, list):
        raise ValueError("accepts must be a list of integers")
    ops = set()
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not in_range(v, INT32):
            raise ValueError(f"accepts holds {v!r}, not an int32")
        ops.add(v)
    return frozenset(ops)


_NEED_MID = "jwt mode needs an integer mid > 0"


def check_mid(claims: dict[str, Any], anonymous: bool) -> int:
    """The token's ``mid``: a user id (1 .. 2**63 - 1). With ``anonymous`` (json mode, goim's own
    tokens) a missing mid or mid 0 is an anonymous connection (mid 0); a negative one is refused."""
    if "mid" not in claims and not anonymous:
        raise AuthError(f"the token has no mid ({_NEED_MID})")
    mid = claims.get("mid", 0)
    if not isinstance(mid, int) or isinstance(mid, bool) or not in_range(mid, INT64):
        raise AuthError(f"mid {mid!r} is not an int64")
    if mid > 0:
        return mid
    if not anonymous:
        raise AuthError(f"mid {mid} is not a user id ({_NEED_MID})")
    if mid < 0:
        raise AuthError(f"mid {mid} is negative (a user id is > 0; no mid or 0 = an anonymous connection)")
    return 0


def identity_from_claims(claims: Any, anonymous: bool = True) -> Identity:
    """The claims of a token as an :class:`Identity`; ``anonymous``: mid 0 (or none) is allowed."""
    if not isinstance(claims, dict):
        raise AuthError("token is not a JSON object")
    mid = check_mid(claims, anonymous)
    fields = {}
    for name in ("key", "room_id", "platform"):
        value = claims.get(name) or ""
        if not isinstance(value, str):
            raise AuthError(f"{name} {value!r} is not a string")
        if not value.isascii():
            try:
                value.encode("utf-8")  # JSON "\ud800" decodes to a lone surrogate
            except UnicodeEncodeError:
                raise AuthError(f"{name} is not valid UTF-8 (it holds a lone surrogate)") from None
        fields[name] = value
    if len(fields["key"]) > MAX_KEY:
        raise AuthError(f"key is longer than {MAX_KEY} characters")
    try:
        room = check_room_id(fields["room_id"])
        accepts = parse_ops(claims.get("accepts") or [])
    except ValueError as exc:
        raise AuthError(str(exc)) from None
    caps = parse_caps(claims.get("caps"))
    if mid == 0 and "ack" in caps:
        raise AuthError(
            'the "ack" cap needs a user id (mid > 0): an anonymous connection (mid 0) has no stream'
        )
    return Identity(
        mid=mid,
        key=fields["key"],
        room=sys.intern(room),
        platform=sys.intern(fields["platform"][:32]),
        accepts=accepts,
        caps=caps,
    )


class AuthKeyError(Exception):
    """``[auth] public_key`` cannot be used; the message says why."""


def load_public_key(path: str) -> tuple[Any, str]:
    """A PEM public key (or certificate) file -> (key, ``"RS256"`` or ``"ES256"``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise AuthKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError:
        hint = " (that is a private key: give the public half)" if b"PRIVATE KEY" in pem else ""
        raise AuthKeyError(f"{path} holds no PEM public key or certificate{hint}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise AuthKeyError(f"{path}: an RSA key of {key.key_size} bits is too small (2048 or more)")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise AuthKeyError(f"{path}: not an RSA (RS256) or P-256 (ES256) public key")


class Authenticator:
    """Turns an Auth body into an :class:`Identity` or raises :class:`AuthError`."""

    def __init__(
        self,
        mode: str,
        secret: str = "",
        public_key: Any = None,
        public_alg: str = "",
        leeway: float = 30.0,
    ) -> None:
        if mode not in ("jwt", "json"):
            raise ValueError(f"unknown auth mode {mode!r}")
        if mode == "jwt" and not secret and public_key is None:
            raise ValueError("jwt mode needs a secret or a public key")
        self.mode = mode
        self._secret = secret
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key is not None:
            self._keys[public_alg] = public_key
        self.leeway = leeway

    @classmethod
    def from_config(cls, section: AuthSection) -> Authenticator:
        """``[auth]`` (reads ``public_key``: raises :class:`AuthKeyError` if it went bad since the check)."""
        key, alg = load_public_key(section.public_key) if section.public_key else (None, "")
        return cls(section.mode, section.secret, key, alg, section.leeway)

    def verify(self, token: bytes, subject: bool = False) -> Identity:
        """``subject``: a token without ``mid`` may name its user in ``sub`` (a decimal string), as
        the go-zero chat server's tokens do."""
        if self.mode == "json":
            try:
                claims = json.loads(token)
            except (ValueError, UnicodeDecodeError):
                raise AuthError("token is not valid JSON") from None
            except RecursionError:
                raise AuthError(_TOO_DEEP) from None
            return identity_from_claims(_subject(claims) if subject else claims)
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            if not isinstance(alg, str) or alg not in self._keys:
                allowed = ", ".join(self._keys)
                raise AuthError(f"jwt rejected: algorithm {str(alg)[:16]!r} is not accepted here ({allowed})")
            claims = jwt.decode(
                token,
                self._keys[alg],
                algorithms=[alg],
                leeway=self.leeway,
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"jwt rejected: {exc}") from None
        except RecursionError:
            raise AuthError(_TOO_DEEP) from None
        return identity_from_claims(_subject(claims) if subject else claims, anonymous=False)


def _subject(claims: Any) -> Any:
    """The claims with ``mid`` taken from ``sub`` when they have no ``mid`` and ``sub`` is a user id."""
    if not isinstance(claims, dict) or "mid" in claims:
        return claims
    sub = claims.get("sub")
    if isinstance(sub, str) and sub.isascii() and sub.isdigit() and len(sub) <= 19:
        return {**claims, "mid": int(sub)}
    return claims


def private_key_algorithm(pem: str) -> str:
    """``"RS256"`` or ``"ES256"`` for a PEM private key; :class:`AuthKeyError` otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise AuthKeyError(f"not an unencrypted PEM private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise AuthKeyError("not an RSA or P-256 private key")


def mint(
    secret: str,
    mid: int,
    room: str = "",
    key: str = "",
    platform: str = "",
    accepts: tuple[int, ...] = (),
    ttl: float = 3600.0,
    caps: tuple[str, ...] = (),
    algorithm: str = "HS256",
) -> str:
    """Sign a token for a client (tests, demos, `mpim token`): HS256 with a secret, or
    ``algorithm`` RS256 / ES256 with ``secret`` holding a PEM private key."""
    claims: dict[str, Any] = {
        "mid": mid,
        "key": key,
        "room_id": room,
        "platform": platform,
        "accepts": list(accepts),
        "exp": int(time.time() + ttl),
    }
    if caps:
        claims["caps"] = list(caps)
    return jwt.encode(claims, secret, algorithm=algorithm)
