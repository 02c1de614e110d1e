"""The ``mpim`` command's own messages (as a user sees them: a subprocess, stderr)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

from mpim.auth import Authenticator
from tests.support import ROOT, write_config

FIX = 'set [auth] mode = "jwt" and secret = "..." in the config, or pass --secret'


def mpim(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpim", *argv], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_token_with_the_shipped_config_says_how_to_fix_it() -> None:
    done = mpim("token", "-c", "config.toml", "--mid", "123")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"mpim token: config.toml has no [auth] secret: {FIX}\n"


def test_token_needs_a_user_id() -> None:
    for mid in ("0", "-3", str(1 << 63)):
        done = mpim("token", "--secret", "s" * 40, "--mid", mid)
        assert done.returncode == 2 and f"argument --mid: {mid} is not a user id" in done.stderr
        assert done.stdout == ""


def test_token_without_any_secret_says_how_to_fix_it() -> None:
    done = mpim("token", "--mid", "123")
    assert done.returncode == 2 and done.stderr == f"mpim token: no --secret and no -c config: {FIX}\n"


def test_token_with_a_short_secret_warns_in_one_line() -> None:
    done = mpim("token", "--secret", "short", "--mid", "123")
    assert done.returncode == 0
    assert done.stderr == "mpim token: warning: the secret is 5 bytes; HS256 wants at least 32\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns again about the short key when verifying
        assert Authenticator("jwt", "short").verify(done.stdout.strip().encode()).mid == 123


def test_token_from_a_json_mode_config_with_a_secret_warns(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"auth": {"mode": "json", "secret": "s" * 32}})
    done = mpim("token", "-c", str(path), "--mid", "1")
    assert done.returncode == 0 and done.stdout.count(".") == 2
    assert done.stderr == (
        f'mpim token: warning: {path} has [auth] mode = "json": '
        'its workers will refuse this token until you set mode = "jwt"\n'
    )


def test_token_signed_with_a_private_key_verifies_against_its_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from mpim.auth import load_public_key

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    done = mpim("token", "--private-key", str(private), "--mid", "77")
    assert done.returncode == 0 and done.stderr == ""
    pub, alg = load_public_key(str(public))
    assert Authenticator("jwt", public_key=pub, public_alg=alg).verify(done.stdout.strip().encode()).mid == 77


def test_token_with_an_unusable_private_key_says_so(tmp_path: Path) -> None:
    done = mpim("token", "--private-key", str(tmp_path / "none.pem"), "--mid", "1")
    assert done.returncode == 2 and done.stderr.startswith("mpim token: --private-key ")
    assert "No such file or directory" in done.stderr
    (tmp_path / "bad.pem").write_text("not a key\n")
    done = mpim("token", "--private-key", str(tmp_path / "bad.pem"), "--mid", "1")
    assert done.returncode == 2 and "not an unencrypted PEM private key" in done.stderr
