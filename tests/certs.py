"""Throwaway certificate authorities and server certificates (trustme), made at run time."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Certs:
    ca: trustme.CA
    cert_file: str  # the chain, leaf first
    key_file: str

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this CA uses (hostname 127.0.0.1 / localhost)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def tls(self) -> dict[str, str]:
        """The ``[tls]`` section serving this certificate."""
        return {"cert_file": self.cert_file, "key_file": self.key_file}


def issue(
    directory: Path,
    name: str = "server",
    ca: trustme.CA | None = None,
    not_after: datetime.datetime | None = None,
) -> Certs:
    """A CA (new unless given) and a certificate for 127.0.0.1 and localhost, written as PEM files."""
    ca = ca or trustme.CA()
    kw = {} if not_after is None else {"not_after": not_after}
    cert = ca.issue_cert("127.0.0.1", "localhost", **kw)
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_file.write_bytes(cert.private_key_pem.bytes())
    return Certs(ca, str(cert_file), str(key_file))
