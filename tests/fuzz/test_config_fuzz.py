"""Configuration: any dict of sections or any file gives a Config or a ConfigError naming where."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Any, get_type_hints

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mpim import config
from mpim.config import Config, ConfigError

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in config.SECTIONS.items()}

# Text without "." so that no generated receive_hook makes find_spec import a real package.
_TEXT = st.text(alphabet=st.characters(blacklist_characters="."), max_size=16)
_STRINGS = st.one_of(
    _TEXT,
    st.sampled_from(
        [
            "jwt",
            "json",
            "debug",
            "error",
            "/sub",
            "/echo",
            "sub",
            "tcp://127.0.0.1:1",
            "ipc:///tmp/x",
            "inproc://x",
        ]
    ),
    st.sampled_from(
        ["tests.integration.hook_sink:record", "os:getcwd", "nosuchmodule:f", "a:", ":f", "m:f g"]
    ),
    st.builds(
        lambda host, port: f"{host}:{port}",
        st.sampled_from(["127.0.0.1", "0.0.0.0", "::", "[::1]", "", "localhost", "x y"]),
        st.one_of(st.integers(0, 70000), st.sampled_from(["", "²", "٣", "-1", "08", "3101"])),
    ),
)
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(),
    st.integers(10**308, 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    _STRINGS,
)
VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=4),
    st.lists(_STRINGS, max_size=4),
    st.dictionaries(_TEXT, _SCALARS, max_size=3),
)


_HUGE = st.integers(10**308, 10**400)


def typed(tp: Any, meta: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value of the field's own type, often near or past its limits."""
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if tp is int:
        near = st.integers(int(lo) - 2, int(hi) + 2) if lo is not None and hi is not None else st.integers()
        return st.one_of(near, st.integers(), _HUGE)
    if tp is float:
        inside = st.floats(lo, hi) if lo is not None and hi is not None else st.floats()
        return st.one_of(inside, st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), _HUGE)
    if tp is str:
        return st.sampled_from(choices) | _STRINGS if choices else _STRINGS
    return st.lists(_STRINGS, max_size=3)


_TYPED = {
    name: {f.name: typed(get_type_hints(cls)[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}
    for name, cls in config.SECTIONS.items()
}


@st.composite
def sections(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly real section and key names with values of their own type, some of anything."""
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(sorted(FIELDS)), _TEXT))
        if draw(st.integers(0, 19)) == 0:
            out[name] = draw(VALUES)  # not a table
            continue
        known = FIELDS.get(name, [])
        table = {}
        for _ in range(draw(st.integers(0, 4))):
            key = draw(st.sampled_from(known)) if known and draw(st.integers(0, 5)) else draw(_TEXT)
            wild = key not in _TYPED.get(name, {}) or draw(st.integers(0, 3)) == 0
            table[key] = draw(VALUES if wild else _TYPED[name][key])
        out[name] = table
    return out


def check_config(cfg: Config) -> None:
    """Every value of a returned Config has its declared type and lies within its limits."""
    for name, cls in config.SECTIONS.items():
        section = getattr(cfg, name)
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(section, f.name)
            tp = hints[f.name]
            if tp in (int, float, str):
                assert isinstance(value, tp) and not isinstance(value, bool), (name, f.name, value)
            lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
            if isinstance(value, float):
                assert math.isfinite(value), (name, f.name, value)
            if lo is not None:
                assert lo <= value, (name, f.name, value)
            if hi is not None:
                assert value <= hi, (name, f.name, value)
            if choices is not None:
                assert value in choices, (name, f.name, value)


def check_dict(data: dict[str, Any]) -> None:
    try:
        cfg = config.from_dict(data, source="<fuzz>")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("<fuzz>: "), message
        names = set(data) | set(config.SECTIONS)
        assert any(f"[{name}]" in message for name in names), f"no section named in {message!r}"
        return
    check_config(cfg)


def check_file(text: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="mpim-fuzz-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text)
        try:
            cfg = config.load(path)
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)
            return
        assert cfg.source == path
        check_config(cfg)
    finally:
        os.unlink(path)


def _toml(data: dict[str, Any]) -> bytes:
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    try:
        return config.to_toml(tables).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return b""


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


TOML_DOCS = st.one_of(
    sections().map(_toml),
    mutated(sections().map(_toml)),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(0, 3000).map(lambda n: b"x = " + b"[" * n + b"]" * n + b"\n"),
    st.integers(0, 3000).map(lambda n: b"x = " + b"{a = " * n + b"1" + b"}" * n + b"\n"),
    st.sampled_from([b"\xff\xfe[server]\n", b"[server]\nname = '\xc3\x28'\n"]),
)

TARGETS = [
    ("config.from_dict", sections(), check_dict),
    ("config.load", TOML_DOCS, check_file),
]


@FAST
@given(sections())
@example({"protocol": {"heartbeat": float("nan")}})  # used to be accepted
@example({"channel": {"slow_timeout": 10**400}})  # used to raise OverflowError
@example({"tcp": {"bind": ["127.0.0.1:\u0663"]}})  # a non-ASCII digit used to pass as a port
def test_from_dict_gives_config_or_config_error(data: dict[str, Any]) -> None:
    check_dict(data)


@FAST
@given(TOML_DOCS)
@example(b"\xe5")  # used to raise UnicodeDecodeError
@example(b"x = " + b"[" * 2000 + b"]" * 2000)  # used to raise RecursionError
def test_load_gives_config_or_config_error(text: bytes) -> None:
    check_file(text)


@settings(FAST, max_examples=100)
@given(sections())
def test_a_loaded_config_written_back_loads_equal(data: dict[str, Any]) -> None:
    try:
        cfg = config.from_dict(data, source="<fuzz>")
    except ConfigError:
        return
    tables = {
        f.name: dataclasses.asdict(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name != "source"
    }
    assert config.from_dict(tables, source="<fuzz>") == cfg
