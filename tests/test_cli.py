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
