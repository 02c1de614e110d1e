"""Configuration: TOML -> frozen, validated dataclasses.

Every section is a frozen dataclass whose fields carry their own limits. :func:`load`
returns a new :class:`Config` or raises :class:`ConfigError` naming the file, the key
and the reason, so a reload can keep the old configuration when the new one is bad.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


def _opt(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    doc: str = "",
) -> Any:
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerSection:
    workers: int = _opt(0, lo=0, hi=1024, doc="worker processes; 0 = one per CPU")
    graceful_timeout: float = _opt(30.0, lo=0.0, hi=3600.0, doc="drain deadline, seconds")
    run_dir: str = _opt("", doc="directory for ipc sockets; empty = a private temp dir")
    worker_timeout: float = _opt(30.0, lo=1.0, hi=3600.0, doc="hung-worker kill, seconds")
    name: str = _opt("", doc="server name reported to the router; empty = hostname")
    reload_drain_timeout: float = _opt(
        300.0, lo=0.0, hi=86400.0, doc="after a reload, old workers serve their clients this long"
    )
    max_connections: int = _opt(
        0, lo=0, hi=10_000_000, doc="per worker; 0 = the open-file limit minus a reserve"
    )
    pid_file: str = _opt("", doc="the master writes its pid here while it runs; empty = none")


@dataclass(frozen=True)
class TcpSection:
    bind: list[str] = _opt(["0.0.0.0:3101"], doc="host:port list")
    backlog: int = _opt(4096, lo=1, hi=65535)
    sndbuf: int = _opt(0, lo=0, hi=1 << 26, doc="SO_SNDBUF bytes; 0 = kernel default")
    rcvbuf: int = _opt(0, lo=0, hi=1 << 26, doc="SO_RCVBUF bytes; 0 = kernel default")


@dataclass(frozen=True)
class WebSocketSection:
    bind: list[str] = _opt(["0.0.0.0:3102"], doc="host:port list")
    path: str = _opt("/sub")
    echo_path: str = _opt("", doc="echo endpoint for Autobahn checks; empty = off")
    backlog: int = _opt(4096, lo=1, hi=65535)
    max_message: int = _opt(65536, lo=16, hi=1 << 24, doc="largest client message, bytes")


@dataclass(frozen=True)
class HttpSection:
    bind: str = _opt("0.0.0.0:3111")
    max_body: int = _opt(1 << 20, lo=0, hi=1 << 28, doc="largest push body, bytes")
    max_header: int = _opt(8192, lo=256, hi=1 << 20, doc="largest request line + headers, bytes")
    idle_timeout: float = _opt(60.0, lo=0.1, hi=86400.0, doc="close idle keep-alive connections")
    request_timeout: float = _opt(
        10.0, lo=0.1, hi=3600.0, doc="a started request must be complete (headers and body) this soon"
    )


@dataclass(frozen=True)
class BusSection:
    in_endpoint: str = _opt("", doc="XSUB endpoint publishers connect to; empty = ipc in run_dir")
    out_endpoint: str = _opt("", doc="XPUB endpoint workers subscribe to; empty = ipc in run_dir")
    hwm: int = _opt(100000, lo=100, hi=10_000_000, doc="messages queued per peer before dropping")


@dataclass(frozen=True)
class RouterSection:
    endpoint: str = _opt("", doc="where workers link to the router (ipc:// or tcp://); empty = run_dir")
    report_interval: float = _opt(1.0, lo=0.05, hi=60.0, doc="worker liveness report period")
    worker_expiry: float = _opt(10.0, lo=0.2, hi=3600.0, doc="silent worker: drop its sessions")
    sweep_interval: float = _opt(1.0, lo=0.05, hi=60.0, doc="expiry sweep period")
    online_interval: float = _opt(5.0, lo=0.05, hi=10.0, doc="room counts sent to workers")
    receive_hook: str = _opt("", doc="module:function for client messages; empty = log")
    push_timeout: float = _opt(
        3.0, lo=0.1, hi=60.0, doc="room/broadcast push: longest wait for the workers' confirmation"
    )


@dataclass(frozen=True)
class IngressSection:
    zmq_bind: str = _opt("tcp://127.0.0.1:3112", doc="ZeroMQ ROUTER push ingress; empty = off")


@dataclass(frozen=True)
class NodesSection:
    domain: str = _opt("", doc="goim nodes/weighted domain; empty = server name")
    addresses: list[str] = _opt([], doc="nodes for non-web platforms; empty = [domain]")
    wss_port: int = _opt(3103, lo=0, hi=65535)
    backoff_max_delay: int = _opt(300, lo=0, hi=86400)
    backoff_base_delay: int = _opt(3, lo=0, hi=86400)
    backoff_factor: float = _opt(1.8, lo=1.0, hi=100.0)
    backoff_jitter: float = _opt(1.3, lo=0.0, hi=100.0)


@dataclass(frozen=True)
class AuthSection:
    mode: str = _opt("json", choices=("jwt", "json"))
    secret: str = _opt("", doc="HS256 secret for jwt mode")


@dataclass(frozen=True)
class ProtocolSection:
    handshake_timeout: float = _opt(8.0, lo=0.1, hi=3600.0)
    heartbeat: float = _opt(240.0, lo=0.1, hi=86400.0)
    heartbeat_max: int = _opt(2, lo=1, hi=100)
    max_body: int = _opt(4096, lo=0, hi=1 << 24)


@dataclass(frozen=True)
class ChannelSection:
    max_pending_bytes: int = _opt(262144, lo=1024, hi=1 << 30, doc="outbound bytes before cut")
    high_water: int = _opt(65536, lo=0, hi=1 << 30, doc="transport pause threshold")
    slow_timeout: float = _opt(10.0, lo=0.1, hi=3600.0, doc="longest pause before cut")


@dataclass(frozen=True)
class RoomSection:
    mode: str = _opt(
        "adaptive", choices=("adaptive", "fixed"), doc="adaptive: at once when quiet, wider under load"
    )
    batch: int = _opt(
        20, lo=1, hi=100000, doc="flush a room at once when this many messages wait (not in a wide window)"
    )
    batch_delay: float = _opt(
        0.01, lo=0.0, hi=10.0, doc="fixed: window after the first message; adaptive: shortest window"
    )
    max_delay: float = _opt(0.25, lo=0.0, hi=10.0, doc="adaptive: widest window under load, seconds")
    buckets: int = _opt(32, lo=1, hi=65536, doc="channel shards per worker")


@dataclass(frozen=True)
class LogSection:
    level: str = _opt("info", choices=("debug", "info", "warning", "error"))
    file: str = _opt("", doc="log file; empty = stderr")


@dataclass(frozen=True)
class InboxSection:
    path: str = _opt(
        "mpim-inbox.sqlite3", doc='SQLite file, relative to the working directory; ":memory:" = not durable'
    )
    max_count: int = _opt(1000, lo=1, hi=1_000_000, doc="messages kept per user; older ones are dropped")
    max_age: float = _opt(604800.0, lo=1.0, hi=315_360_000.0, doc="messages older than this go, seconds")
    durability: str = _opt(
        "process", choices=("process", "power"), doc="survive kill -9 (process) or power loss (fsync)"
    )


@dataclass(frozen=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    tcp: TcpSection = field(default_factory=TcpSection)
    websocket: WebSocketSection = field(default_factory=WebSocketSection)
    http: HttpSection = field(default_factory=HttpSection)
    auth: AuthSection = field(default_factory=AuthSection)
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    channel: ChannelSection = field(default_factory=ChannelSection)
    room: RoomSection = field(default_factory=RoomSection)
    log: LogSection = field(default_factory=LogSection)
    bus: BusSection = field(default_factory=BusSection)
    router: RouterSection = field(default_factory=RouterSection)
    ingress: IngressSection = field(default_factory=IngressSection)
    nodes: NodesSection = field(default_factory=NodesSection)
    inbox: InboxSection = field(default_factory=InboxSection)
    source: str = "<defaults>"

    @property
    def heartbeat_timeout(self) -> float:
        return self.protocol.heartbeat * self.protocol.heartbeat_max

    def worker_count(self) -> int:
        return self.server.workers or (os.cpu_count() or 1)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(
        tp, "a list of strings"
    )


def _check_value(where: str, tp: Any, meta: dict[str, Any], value: Any) -> Any:
    if isinstance(value, bool) and tp is not bool:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is float and isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value} is too large") from None
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got nan")
    if tp in (int, float, str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is above the maximum {hi}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _build_section(source: str, name: str, cls: type[Any], table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: [{name}] {key}: unknown key (known: {known})")
        where = f"{source}: [{name}] {key}"
        values[key] = _check_value(where, hints[key], dict(fields[key].metadata), value)
    return cls(**values)


_WILDCARD = {"0.0.0.0", "::", ""}


def _check_addresses(source: str, cfg: Config) -> None:
    pairs = [("tcp", a) for a in cfg.tcp.bind] + [("websocket", a) for a in cfg.websocket.bind]
    pairs.append(("http", cfg.http.bind))
    owners: dict[int, list[tuple[str, str]]] = {}
    for section, addr in pairs:
        try:
            host, port = parse_address(addr)
        except ValueError as exc:
            raise ConfigError(f"{source}: [{section}] bind: {exc}") from None
        for other_host, other in owners.get(port, []) if port else []:
            if host == other_host or _WILDCARD & {host, other_host}:
                raise ConfigError(f"{source}: [{section}] bind: {addr} is already used by [{other}] bind")
        owners.setdefault(port, []).append((host, section))
    if cfg.auth.mode == "jwt" and not cfg.auth.secret:
        raise ConfigError(f'{source}: [auth] secret: required when mode = "jwt"')
    for key in ("path", "echo_path"):
        path = getattr(cfg.websocket, key)
        if path and not path.startswith("/"):
            raise ConfigError(f"{source}: [websocket] {key}: {path!r} must start with '/'")
    if cfg.websocket.echo_path and cfg.websocket.echo_path == cfg.websocket.path:
        raise ConfigError(f"{source}: [websocket] echo_path: must differ from path")


_ZMQ_SCHEMES = ("tcp://", "ipc://", "inproc://")


def _check_cluster(source: str, cfg: Config) -> None:
    """ZeroMQ endpoints and the receive hook (bus, router, ingress)."""
    for where, value in (
        ("[bus] in_endpoint", cfg.bus.in_endpoint),
        ("[bus] out_endpoint", cfg.bus.out_endpoint),
        ("[ingress] zmq_bind", cfg.ingress.zmq_bind),
    ):
        if value and not value.startswith(_ZMQ_SCHEMES):
            raise ConfigError(f"{source}: {where}: {value!r} is not a tcp://, ipc:// or inproc:// endpoint")
    link = cfg.router.endpoint
    if link and not link.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"{source}: [router] endpoint: {link!r} is not a tcp:// or ipc:// endpoint")
    hook = cfg.router.receive_hook
    if hook:
        module, sep, func = hook.partition(":")
        if not sep or not module or not func.isidentifier():
            raise ConfigError(f"{source}: [router] receive_hook: {hook!r} is not module:function")
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"{source}: [router] receive_hook: module {module!r} cannot be found")


def parse_address(addr: str) -> tuple[str, int]:
    """``"host:port"`` (``[v6]:port`` for IPv6) -> (host, port)."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{addr!r} is not host:port")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{addr!r}: port {port} is out of range")
    host = host.strip("[]")
    return host or "0.0.0.0", port


SECTIONS: dict[str, type[Any]] = {name: tp for name, tp in get_type_hints(Config).items() if name != "source"}


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in SECTIONS:
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"{source}: [{name}]: unknown section (known: {known})")
        sections[name] = _build_section(source, name, SECTIONS[name], table)
    cfg = Config(**sections, source=source)
    _check_addresses(source, cfg)
    _check_cluster(source, cfg)
    if not cfg.inbox.path.strip():
        raise ConfigError(f'{source}: [inbox] path: must name a file (or ":memory:")')
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(sections: dict[str, dict[str, Any]]) -> str:
    """Write ``{"section": {"key": value}}`` as TOML (tests, benchmarks, generated configs)."""
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8: byte {exc.start} is {exc.object[exc.start]:#04x}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply") from None
    return from_dict(data, source)


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys changed, validated like a file (for tests)."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name == "source":
            continue
        data[f.name] = dataclasses.asdict(getattr(cfg, f.name))
    for name, changes in sections.items():
        data.setdefault(name, {}).update(changes)
    return from_dict(data, cfg.source)
