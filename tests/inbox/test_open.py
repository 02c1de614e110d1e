"""The [inbox] config section and open_inbox; the memory store's restart signal."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvloop

from mpim import config
from mpim.config import ConfigError
from mpim.inbox import InboxLimits, MemoryInbox, SqliteInbox, open_inbox


def test_defaults() -> None:
    section = config.Config().inbox
    assert section.path == "mpim-inbox.sqlite3"
    assert section.max_count == 1000
    assert section.max_age == 604800.0
    assert section.durability == "process"


def test_memory_path_opens_a_memory_store() -> None:
    cfg = config.replace(config.Config(), inbox={"path": ":memory:", "max_count": 5})
    store = open_inbox(cfg.inbox)
    assert isinstance(store, MemoryInbox)
    uvloop.run(store.close())


def test_a_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text('[inbox]\npath = "data.sqlite3"\ndurability = "power"\nmax_age = 60\n')
    cfg = config.load(path)
    assert cfg.inbox.max_age == 60.0
    store = open_inbox(cfg.inbox)
    assert isinstance(store, SqliteInbox)
    assert (tmp_path / "data.sqlite3").exists()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    uvloop.run(store.close())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[inbox]\ndurability = 'disk'\n", "[inbox] durability: 'disk' is not one of process, power"),
        ("[inbox]\nmax_count = 0\n", "[inbox] max_count: 0 is below the minimum 1"),
        ("[inbox]\nmax_age = 0\n", "[inbox] max_age: 0.0 is below the minimum 1.0"),
        ("[inbox]\npath = ''\n", "[inbox] path: must name a file"),
        ("[inbox]\npath = 3\n", "[inbox] path: expected a string"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_count"):
        InboxLimits(max_count=0)
    with pytest.raises(ValueError, match="max_age"):
        InboxLimits(max_age=0.0)


def test_a_restarted_memory_store_has_new_epochs() -> None:
    async def epoch() -> str:
        store = MemoryInbox(InboxLimits())
        (position,) = await store.append([(1, 1000, b"x", 0)])
        return position.epoch

    assert uvloop.run(epoch()) != uvloop.run(epoch())
