"""``python -m bench chaos`` in CI: about 60 s of workload and faults per topology, fixed seeds,
and any violation fails the test (its report is in the failure message).

Not a timing test: the tool's checker judges what happened, whatever the machine's speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import ROOT


def chaos(out: Path, *argv: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "chaos", "--duration", "60", "--out", str(out), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def assert_valid(code: int, output: str) -> None:
    lines = output.strip().splitlines()
    assert code == 0 and lines and lines[-1].startswith("valid: "), output[-6000:]


@pytest.mark.timeout(600)
def test_one_host_under_faults_keeps_every_guarantee(tmp_path: Path) -> None:
    assert_valid(*chaos(tmp_path, "--hosts", "1", "--seed", "1"))
    assert (tmp_path / "history.jsonl").stat().st_size > 0
    assert (tmp_path / "chaos.png").exists() and (tmp_path / "summary.json").exists()


@pytest.mark.timeout(600)
def test_two_hosts_on_redis_under_faults_keep_every_guarantee(tmp_path: Path) -> None:
    assert_valid(*chaos(tmp_path, "--hosts", "2", "--seed", "1"))


@pytest.mark.timeout(600)
def test_one_host_with_two_router_shards_under_faults_keeps_every_guarantee(tmp_path: Path) -> None:
    """Issue 24: the histories hold with several router shards too (kill-router and pause-router
    pick one shard; the others go on serving their users)."""
    assert_valid(*chaos(tmp_path, "--hosts", "1", "--shards", "2", "--seed", "2"))


@pytest.mark.timeout(600)
def test_two_hosts_of_two_router_shards_on_redis_under_faults_keep_every_guarantee(tmp_path: Path) -> None:
    """Issue 24 with ``[cluster] redis``: each shard serves its slots against Redis, shard 0 speaks
    for its host; Redis faults, killed and paused shards on both hosts."""
    assert_valid(*chaos(tmp_path, "--hosts", "2", "--shards", "2", "--seed", "3"))
