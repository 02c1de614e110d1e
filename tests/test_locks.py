"""requirements/*.lock against pyproject.toml: every dependency pinned within its range, with
hashes, and the server's lock a subset of the development lock (same versions)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(path: Path) -> dict[tuple[str, str], tuple[str, int]]:
    """(name, marker) -> (version, number of hashes) of each pinned entry of a lock."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    entry: tuple[str, str] | None = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name, version, marker = match.groups()
            entry = (canonicalize_name(name), marker or "")
            assert entry not in out, f"{path.name}: {entry} twice"
            out[entry] = (version, 0)
        elif entry is not None and line.strip().startswith("--hash=sha256:"):
            version, hashes = out[entry]
            out[entry] = (version, hashes + 1)
        elif line and not line[0].isspace() and not line.startswith("#"):
            raise AssertionError(f"{path.name}: not a pinned requirement: {line!r}")
    return out


def here(locked: dict[tuple[str, str], tuple[str, int]]) -> dict[str, str]:
    """name -> version of the entries that apply to this interpreter and platform."""
    return {name: v for (name, marker), (v, _) in locked.items() if not marker or Marker(marker).evaluate()}


def needed(extra: bool) -> list[Requirement]:
    reqs = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"], "pip"]
    if extra:
        reqs += PYPROJECT["project"]["optional-dependencies"]["dev"]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize(("lock", "extra"), [("dev.lock", True), ("run.lock", False)])
def test_every_dependency_is_pinned_within_its_range_with_hashes(lock: str, extra: bool) -> None:
    locked = pins(ROOT / "requirements" / lock)
    assert all(hashes for _, hashes in locked.values()), "an entry without --hash"
    versions = here(locked)
    for req in needed(extra):
        name = canonicalize_name(req.name)
        assert name in versions, f"{lock}: {req.name} is not pinned: run requirements/refresh.sh"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"{lock}: {req.name}=={versions[name]} is outside {req.specifier}: run requirements/refresh.sh"
        )


def test_the_server_lock_has_the_versions_of_the_development_lock() -> None:
    """(Markers may differ: a package the dev tools need everywhere, the server only on old Pythons.)"""
    run, dev = pins(ROOT / "requirements" / "run.lock"), pins(ROOT / "requirements" / "dev.lock")
    for (name, _), (version, _) in run.items():
        assert (name, version) in {(n, v) for (n, _), (v, _) in dev.items()}, f"{name}=={version}"
