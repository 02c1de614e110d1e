"""Finding the master: the pid file and the process-title scan, against a fake /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mpim import pidfile
from mpim.pidfile import MasterNotFound, PidFileError, find_master


def fake_proc(root: Path, cmdlines: dict[int, bytes]) -> str:
    for pid, cmdline in cmdlines.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(cmdline)
    (root / "self").mkdir(exist_ok=True)  # not a pid: skipped
    return str(root)


def test_master_title_names_the_absolute_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert pidfile.master_title("config.toml") == f"mpim: master -c {tmp_path}/config.toml"
    assert pidfile.master_title(None) == "mpim: master"


def test_title_scan_matches_exactly(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: b"mpim: master -c /srv/a.toml" + b"\0" * 40,  # setproctitle pads with NULs
            11: b"mpim: master -c /srv/a.toml.bak\0",
            12: b"python\0-m\0mpim\0master\0-c\0/srv/a.toml\0",  # before setproctitle: argv
            13: b"mpim: master -c /srv/b.toml\0",
            14: b"mpim: worker 1\0",
        },
    )
    assert find_master("/srv/a.toml", "", proc) == 10
    assert find_master("/srv/b.toml", "", proc) == 13
    with pytest.raises(MasterNotFound, match=r"no process has the title 'mpim: master -c /srv/c.toml'"):
        find_master("/srv/c.toml", "", proc)


def test_two_masters_with_one_config_is_an_error(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {20: b"mpim: master -c /x.toml\0", 7: b"mpim: master -c /x.toml\0"})
    with pytest.raises(MasterNotFound, match=r"2 processes have the title .* \(pids 7, 20\): pass --pid"):
        find_master("/x.toml", "", proc)


def test_pid_file_wins_over_the_title_and_is_checked(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {30: b"mpim: master -c /other.toml\0", 31: b"sshd\0"})
    pid_path = tmp_path / "mpim.pid"
    pid_path.write_text("30\n")
    assert find_master("/x.toml", str(pid_path), proc) == 30  # whatever the title says
    pid_path.write_text("31\n")
    with pytest.raises(MasterNotFound, match=r"names pid 31, which is not an mpim master: 'sshd'"):
        find_master("/x.toml", str(pid_path), proc)
    pid_path.write_text("32\n")
    with pytest.raises(MasterNotFound, match=r"names pid 32, which is not running \(a stale pid file\)"):
        find_master("/x.toml", str(pid_path), proc)
    pid_path.unlink()
    with pytest.raises(MasterNotFound, match=r"no pid in the pid file .*mpim.pid \(\[server\] pid_file\)"):
        find_master("/x.toml", str(pid_path), proc)


def test_held_writes_and_removes_the_pid_file(tmp_path: Path) -> None:
    path = tmp_path / "mpim.pid"
    with pidfile.held(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()
    with pidfile.held(str(path)):
        path.write_text("1\n")  # another master took the file over: leave it
    assert path.read_text() == "1\n"
    with pidfile.held(""):
        pass


def test_unwritable_pid_file(tmp_path: Path) -> None:
    held = pidfile.held(str(tmp_path / "missing" / "mpim.pid"))
    with pytest.raises(PidFileError, match=r"cannot write the pid file .*/missing/mpim.pid: No such file"):
        held.__enter__()
    assert list(tmp_path.iterdir()) == []
