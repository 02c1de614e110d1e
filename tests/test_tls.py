"""The TLS server context: good files load, every bad file is refused naming it, TLS 1.2 is the floor."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest

from mpim import config
from mpim.config import ConfigError, TlsSection
from mpim.tls import TlsError, server_context
from tests.certs import issue


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A TLS handshake between two in-memory ends (no sockets); returns the version agreed."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"s": False, "c": False}
    for _ in range(10):
        for name, end, out, peer_in in (("c", cli, c_out, s_in), ("s", srv, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return str(cli.version())
    raise AssertionError("handshake did not finish")


def test_a_chain_and_key_load_and_serve_tls_12_and_13(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    ctx = server_context(TlsSection(certs.cert_file, certs.key_file))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(ctx, certs.client_context()) == "TLSv1.3"
    old = certs.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(ctx, old) == "TLSv1.2"


def test_min_version_13_refuses_a_tls_12_client(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    ctx = server_context(TlsSection(certs.cert_file, certs.key_file, min_version="1.3"))
    old = certs.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(ctx, old)


def test_key_and_chain_in_one_file(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    both = tmp_path / "both.pem"
    both.write_bytes(Path(certs.key_file).read_bytes() + Path(certs.cert_file).read_bytes())
    assert handshake(server_context(TlsSection(str(both))), certs.client_context()) == "TLSv1.3"


def _encrypted_key(tmp_path: Path, key_file: str) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    path = tmp_path / "encrypted.key"
    path.write_bytes(pem)
    return str(path)


def test_bad_files_are_refused_naming_the_file_and_the_reason(tmp_path: Path) -> None:
    certs = issue(tmp_path / "a")
    other = issue(tmp_path / "b")
    expired = issue(tmp_path / "c", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    cases = [
        (TlsSection(str(tmp_path / "missing.crt")), "cannot read the certificate file .*missing.crt"),
        (TlsSection(certs.cert_file, str(tmp_path / "missing.key")), "cannot read the key file"),
        (TlsSection(str(garbage), certs.key_file), "garbage.pem holds no PEM certificate"),
        (TlsSection(certs.cert_file), r"no PEM private key in .*server.crt \(set \[tls\] key_file\)"),
        (TlsSection(certs.cert_file, str(garbage)), "no PEM private key in .*garbage.pem"),
        (TlsSection(certs.cert_file, other.key_file), "the private key does not belong to the certificate"),
        (TlsSection(expired.cert_file, expired.key_file), "expired on 2020-01-01"),
        (
            TlsSection(certs.cert_file, _encrypted_key(tmp_path, certs.key_file)),
            "the private key is encrypted",
        ),
    ]
    for section, reason in cases:
        with pytest.raises(TlsError, match=reason):
            server_context(section)


def test_the_config_check_loads_the_chain(tmp_path: Path) -> None:
    certs = issue(tmp_path)
    cfg = config.replace(config.Config(), tls=certs.tls())
    assert cfg.tls.cert_file == certs.cert_file
    with pytest.raises(ConfigError, match=r"\[tls\] cert_file: cannot read the certificate file"):
        config.replace(config.Config(), tls={"cert_file": str(tmp_path / "nope.crt")})
    with pytest.raises(ConfigError, match=r"\[tls\] key_file: set without \[tls\] cert_file"):
        config.replace(config.Config(), tls={"key_file": certs.key_file})
