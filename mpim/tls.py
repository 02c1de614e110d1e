"""TLS for the client listeners (WSS and TLS over raw TCP): the server context and its checks.

:func:`server_context` loads ``[tls] cert_file`` (the certificate chain, PEM, leaf
first) and ``[tls] key_file`` (its unencrypted private key; "" = in the same
file) into an ``ssl.SSLContext`` with the standard library's server defaults and
TLS 1.2 as the oldest version. It raises :class:`TlsError` saying what is wrong
with which file, so the config check refuses a bad file (at start, and at a
SIGHUP reload, which then keeps the running generation and its certificate).
A worker builds its context once at start: a reload's new generation of workers
reads the files again, which is how a renewed certificate goes live.
"""

from __future__ import annotations

import datetime
import ssl
from typing import NoReturn

from mpim.config import TlsSection

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_CERT = b"-----BEGIN CERTIFICATE-----"
_KEY = b"PRIVATE KEY-----"


class TlsError(Exception):
    """The certificate or key cannot be used; the message names the file and the reason."""


def _encrypted() -> NoReturn:
    raise TlsError("the private key is encrypted; mpim needs an unencrypted key file (readable by mpim only)")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def check_files(section: TlsSection) -> None:
    """Friendly reasons for the usual mistakes (no PEM, key missing, expired) before OpenSSL's."""
    from cryptography import x509

    cert = _read(section.cert_file, "certificate file")
    if _CERT not in cert:
        raise TlsError(f"{section.cert_file} holds no PEM certificate ({_CERT.decode()})")
    key = _read(section.key_file, "key file") if section.key_file else cert
    if _KEY not in key:
        where = section.key_file or f"{section.cert_file} (set [tls] key_file)"
        raise TlsError(f"no PEM private key in {where}")
    start = cert.index(_CERT)
    try:
        leaf = x509.load_pem_x509_certificate(cert[start:])
    except ValueError as exc:
        raise TlsError(f"{section.cert_file}: the first certificate is not valid PEM: {exc}") from None
    expires = leaf.not_valid_after_utc
    if expires <= datetime.datetime.now(datetime.UTC):
        raise TlsError(f"the certificate in {section.cert_file} expired on {expires:%Y-%m-%d %H:%M} UTC")


def server_context(section: TlsSection) -> ssl.SSLContext:
    """The server-side context for ``[tls]``; :class:`TlsError` if the files cannot be used."""
    check_files(section)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = VERSIONS[section.min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(section.cert_file, section.key_file or None, password=_encrypted)
    except ssl.SSLError as exc:
        files = section.cert_file + (f" / {section.key_file}" if section.key_file else "")
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or reason == "KEY_VALUES_MISMATCH":
            reason = "the private key does not belong to the certificate"
        raise TlsError(f"cannot load {files}: {reason}") from None
    except OSError as exc:
        raise TlsError(f"cannot read {section.cert_file}: {exc.strerror or exc}") from None
    return ctx
