"""bench/inbox_write.py runs end to end on tiny settings (no figures are checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import inbox_write, report


def test_runs_every_store_and_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    monkeypatch.setattr(report, "RESULTS", results)  # where the record is written
    args = [
        "--seconds",
        "0.05",
        "--batches",
        "1,3",
        "--users",
        "5",
        "--max-count",
        "2",
        "--dir",
        str(tmp_path),
    ]
    inbox_write.main([*args, "--record"])
    table = capsys.readouterr().out
    for label, _ in inbox_write.STORES.values():
        assert table.count(f"| {label} ") == 2
    inbox_write.main([*args[:4], "--stores", "memory", "--record"])
    text = results.read_text()
    assert text.count(inbox_write.HEADING) == 1
    assert text.count("Command (repository root, venv active)") == 2


def test_unknown_store_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        inbox_write.main(["--stores", "redis"])
    assert "unknown store redis" in capsys.readouterr().err
