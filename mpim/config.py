"""Configuration: TOML -> frozen, validated dataclasses.

Every section is a frozen dataclass whose fields carry their own limits. :func:`load`
returns a new :class:`Config` or raises :class:`ConfigError` naming the file, the key
and the reason, so a reload can keep the old configuration when the new one is bad.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import math
import os
import tomllib
import urllib.parse
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
    tls_bind: list[str] = _opt([], doc="TLS listeners (used when [tls] cert_file is set)")
    proxy_protocol: bool = _opt(False, doc="a PROXY v1/v2 header opens every connection on bind")
    tls_proxy_protocol: bool = _opt(False, doc="the same on tls_bind (the header comes before TLS)")
    backlog: int = _opt(4096, lo=1, hi=65535)
    sndbuf: int = _opt(0, lo=0, hi=1 << 26, doc="SO_SNDBUF bytes; 0 = kernel default")
    rcvbuf: int = _opt(0, lo=0, hi=1 << 26, doc="SO_RCVBUF bytes; 0 = kernel default")


@dataclass(frozen=True)
class WebSocketSection:
    bind: list[str] = _opt(["0.0.0.0:3102"], doc="host:port list")
    tls_bind: list[str] = _opt(["0.0.0.0:3103"], doc="WSS listeners (used when [tls] cert_file is set)")
    proxy_protocol: bool = _opt(False, doc="a PROXY v1/v2 header opens every connection on bind")
    tls_proxy_protocol: bool = _opt(False, doc="the same on tls_bind (the header comes before TLS)")
    path: str = _opt("/sub")
    echo_path: str = _opt("", doc="echo endpoint for Autobahn checks; empty = off")
    backlog: int = _opt(4096, lo=1, hi=65535)
    max_message: int = _opt(65536, lo=16, hi=1 << 24, doc="largest client message, bytes")


@dataclass(frozen=True)
class HttpSection:
    bind: str = _opt("127.0.0.1:3111", doc="push API; off loopback it needs api_key (or insecure_open)")
    api_key: str = _opt("", doc="required in Authorization: Bearer or X-API-Key; empty = none")
    insecure_open: bool = _opt(False, doc="allow a non-loopback bind without api_key (logged loudly)")
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
    shards: int = _opt(1, lo=1, hi=64, doc="router processes per host, each owning a share of the users")
    report_interval: float = _opt(1.0, lo=0.05, hi=60.0, doc="worker liveness report period")
    worker_expiry: float = _opt(10.0, lo=0.2, hi=3600.0, doc="silent worker: drop its sessions")
    sweep_interval: float = _opt(1.0, lo=0.05, hi=60.0, doc="expiry sweep period")
    online_interval: float = _opt(5.0, lo=0.05, hi=10.0, doc="room counts sent to workers")
    receive_hook: str = _opt("", doc="module:function for client messages; empty = log")
    push_timeout: float = _opt(
        3.0, lo=0.1, hi=60.0, doc="room/broadcast push: longest wait for the workers' confirmation"
    )
    max_targets: int = _opt(
        10000, lo=1, hi=1_000_000, doc="distinct mids (or keys) one push may name; more is refused (-400)"
    )


@dataclass(frozen=True)
class IngressSection:
    zmq_bind: str = _opt("tcp://127.0.0.1:3112", doc="ZeroMQ ROUTER push ingress; empty = off")
    api_key: str = _opt("", doc='required as "api_key" in every request; empty = none')
    insecure_open: bool = _opt(False, doc="allow a non-loopback tcp:// bind without api_key")


@dataclass(frozen=True)
class NodesSection:
    domain: str = _opt("", doc="goim nodes/weighted domain; empty = server name")
    addresses: list[str] = _opt([], doc="nodes for non-web platforms; empty = [domain]")
    wss_port: int = _opt(0, lo=0, hi=65535, doc="0 = the WSS listener's port, or 0 when none listens")
    backoff_max_delay: int = _opt(300, lo=0, hi=86400)
    backoff_base_delay: int = _opt(3, lo=0, hi=86400)
    backoff_factor: float = _opt(1.8, lo=1.0, hi=100.0)
    backoff_jitter: float = _opt(1.3, lo=0.0, hi=100.0)


@dataclass(frozen=True)
class AuthSection:
    mode: str = _opt("json", choices=("jwt", "json"))
    secret: str = _opt("", doc="HS256 secret for jwt mode")
    public_key: str = _opt("", doc="PEM file: RSA (RS256) or P-256 (ES256) public key for jwt mode")
    leeway: float = _opt(30.0, lo=0.0, hi=600.0, doc="seconds of clock skew allowed on exp and nbf")


@dataclass(frozen=True)
class TlsSection:
    cert_file: str = _opt("", doc="PEM certificate chain (leaf first); empty = no TLS listeners")
    key_file: str = _opt("", doc="PEM private key, unencrypted; empty = in cert_file")
    min_version: str = _opt("1.2", choices=("1.2", "1.3"), doc="oldest TLS version accepted")
    handshake_timeout: float = _opt(5.0, lo=0.1, hi=300.0, doc="TLS handshake deadline, seconds")


@dataclass(frozen=True)
class ProxySection:
    trusted: list[str] = _opt([], doc="networks allowed to send a PROXY header; empty = any")
    timeout: float = _opt(5.0, lo=0.1, hi=300.0, doc="the PROXY header must arrive this soon")


@dataclass(frozen=True)
class LimitsSection:
    conns_per_ip: int = _opt(1000, lo=0, hi=10_000_000, doc="open connections per client IP per worker")
    rate_per_ip: float = _opt(50.0, lo=0.0, hi=1e6, doc="new connections per second per IP; 0 = off")
    burst_per_ip: int = _opt(200, lo=1, hi=10_000_000, doc="new connections at once per IP")
    auth_failures: int = _opt(10, lo=0, hi=1_000_000, doc="failed Auths per IP in auth_window; 0 = off")
    auth_window: float = _opt(60.0, lo=0.1, hi=86400.0, doc="seconds over which failures count")
    ban_time: float = _opt(60.0, lo=0.1, hi=86400.0, doc="an IP over auth_failures is refused this long")
    exempt: list[str] = _opt(["127.0.0.0/8", "::1/128"], doc="networks no per-IP limit applies to")
    ipv6_prefix: int = _opt(64, lo=32, hi=128, doc="IPv6 clients are limited per /prefix network")
    log_interval: float = _opt(10.0, lo=0.1, hi=86400.0, doc="one log line per IP at most this often")


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
    enabled: bool = _opt(True, doc="store every push by mid and private message (reliable delivery)")
    path: str = _opt(
        "mpim-inbox.sqlite3", doc='SQLite file, relative to the working directory; ":memory:" = not durable'
    )
    max_count: int = _opt(1000, lo=1, hi=1_000_000, doc="messages kept per user; older ones are dropped")
    max_age: float = _opt(604800.0, lo=1.0, hi=315_360_000.0, doc="messages older than this go, seconds")
    durability: str = _opt(
        "process", choices=("process", "power"), doc="survive kill -9 (process) or power loss (fsync)"
    )
    group_window: float = _opt(
        0.005,
        lo=0.0,
        hi=1.0,
        doc="a group of writes may wait this long after the last commit when more are coming (0 = never)",
    )


@dataclass(frozen=True)
class DeliverySection:
    max_unacked: int = _opt(
        512, lo=1, hi=1_000_000, doc="reliable pushes written and unacked at most; the rest wait for acks"
    )
    ack_timeout: float = _opt(30.0, lo=0.1, hi=86400.0, doc="oldest unacked push older than this: close")
    ack_rate: float = _opt(1000.0, lo=1.0, hi=1e7, doc="acks (op 18) per second per connection")
    ack_burst: int = _opt(2000, lo=1, hi=10_000_000, doc="acks allowed in a burst")
    replay_max: int = _opt(
        1000, lo=1, hi=1_000_000, doc="a resume missing more than this is not recovered (resync)"
    )
    max_unread: int = _opt(1000, lo=1, hi=1_000_000, doc="private chat refused once this many are unread")


@dataclass(frozen=True)
class UpstreamSection:
    ack: str = _opt("none", choices=("none", "only", "rigor"), doc="how client messages are acknowledged")
    url: str = _opt("", doc="POST client messages to this backend URL; empty = the receive hook")
    timeout: float = _opt(
        5.0, lo=0.1, hi=300.0, doc="backend answer deadline; a worker's wait for the router's answer, seconds"
    )
    concurrency: int = _opt(64, lo=1, hi=10000, doc="backend requests in flight at most")
    resend: float = _opt(3.0, lo=0.05, hi=3600.0, doc="rigor: re-send an unconfirmed ack this often")
    confirm_timeout: float = _opt(30.0, lo=0.1, hi=86400.0, doc="rigor: unconfirmed message expires")
    dedup_window: float = _opt(300.0, lo=0.0, hi=86400.0, doc="a retried message id is not delivered twice")
    rate: float = _opt(100.0, lo=0.1, hi=1e6, doc="upstream frames per second per connection")
    burst: int = _opt(200, lo=1, hi=1_000_000, doc="upstream frames allowed in a burst")
    bytes_rate: float = _opt(262144.0, lo=16.0, hi=1e9, doc="upstream bytes per second per connection")
    bytes_burst: int = _opt(524288, lo=16, hi=1 << 30, doc="upstream bytes allowed in a burst")


@dataclass(frozen=True)
class GoZeroSection:
    path: str = _opt(
        "", doc="WebSocket path of the go-zero chat server's JSON frames (e.g. /ws); empty = off"
    )
    op: int = _opt(
        1000, lo=-(1 << 31), hi=(1 << 31) - 1, doc="push op of their private messages and backend methods"
    )
    user_online: bool = _opt(
        True, doc="answer user.online for the users a client names; false = the backend answers it"
    )


@dataclass(frozen=True)
class ClusterSection:
    redis: str = _opt(
        "", doc="redis://host:port/db, rediss://..., unix:///path.sock; empty = one host, embedded"
    )
    timeout: float = _opt(1.0, lo=0.01, hi=60.0, doc="seconds for every Redis call (connect, command)")
    key_prefix: str = _opt("", doc="prepended to every Redis key (several clusters in one Redis)")
    lease_interval: float = _opt(1.0, lo=0.05, hi=60.0, doc="a host renews its lease this often, seconds")
    lease_ttl: float = _opt(
        4.0, lo=0.2, hi=600.0, doc="a host whose lease was not renewed for this long is dead to the others"
    )


@dataclass(frozen=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    tcp: TcpSection = field(default_factory=TcpSection)
    websocket: WebSocketSection = field(default_factory=WebSocketSection)
    http: HttpSection = field(default_factory=HttpSection)
    auth: AuthSection = field(default_factory=AuthSection)
    tls: TlsSection = field(default_factory=TlsSection)
    proxy: ProxySection = field(default_factory=ProxySection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    channel: ChannelSection = field(default_factory=ChannelSection)
    room: RoomSection = field(default_factory=RoomSection)
    log: LogSection = field(default_factory=LogSection)
    bus: BusSection = field(default_factory=BusSection)
    router: RouterSection = field(default_factory=RouterSection)
    ingress: IngressSection = field(default_factory=IngressSection)
    nodes: NodesSection = field(default_factory=NodesSection)
    inbox: InboxSection = field(default_factory=InboxSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    upstream: UpstreamSection = field(default_factory=UpstreamSection)
    gozero: GoZeroSection = field(default_factory=GoZeroSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
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
    pairs = [("tcp", "bind", a) for a in cfg.tcp.bind] + [
        ("websocket", "bind", a) for a in cfg.websocket.bind
    ]
    if cfg.tls.cert_file:
        pairs += [("tcp", "tls_bind", a) for a in cfg.tcp.tls_bind]
        pairs += [("websocket", "tls_bind", a) for a in cfg.websocket.tls_bind]
    pairs.append(("http", "bind", cfg.http.bind))
    owners: dict[int, list[tuple[str, str]]] = {}
    for section, key, addr in pairs:
        try:
            host, port = parse_address(addr)
        except ValueError as exc:
            raise ConfigError(f"{source}: [{section}] {key}: {exc}") from None
        for other_host, other in owners.get(port, []) if port else []:
            if host == other_host or _WILDCARD & {host, other_host}:
                raise ConfigError(f"{source}: [{section}] {key}: {addr} is already used by {other}")
        owners.setdefault(port, []).append((host, f"[{section}] {key}"))
    if cfg.auth.mode == "jwt" and not cfg.auth.secret and not cfg.auth.public_key:
        raise ConfigError(f'{source}: [auth] secret: required when mode = "jwt" (or set [auth] public_key)')
    for key in ("path", "echo_path"):
        path = getattr(cfg.websocket, key)
        if path and not path.startswith("/"):
            raise ConfigError(f"{source}: [websocket] {key}: {path!r} must start with '/'")
    if cfg.websocket.echo_path and cfg.websocket.echo_path == cfg.websocket.path:
        raise ConfigError(f"{source}: [websocket] echo_path: must differ from path")
    gozero = cfg.gozero.path
    if gozero and not gozero.startswith("/"):
        raise ConfigError(f"{source}: [gozero] path: {gozero!r} must start with '/'")
    if gozero and gozero in (cfg.websocket.path, cfg.websocket.echo_path):
        raise ConfigError(f"{source}: [gozero] path: {gozero!r} is already [websocket] path or echo_path")


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
    if cfg.router.shards > 1 and link:
        raise ConfigError(
            f"{source}: [router] shards: more than one needs the run directory's links"
            ' ([router] endpoint = "")'
        )
    if cfg.router.shards > 1 and cfg.ingress.zmq_bind and not cfg.ingress.zmq_bind.startswith("tcp://"):
        raise ConfigError(
            f"{source}: [ingress] zmq_bind: {cfg.ingress.zmq_bind!r}: with [router] shards > 1 the"
            " ZeroMQ ingress must be a tcp:// address (the shards share its port); use tcp:// or shards = 1"
        )
    if cfg.router.shards > 1 and cfg.inbox.enabled and cfg.inbox.path == ":memory:" and not cfg.cluster.redis:
        raise ConfigError(
            f'{source}: [inbox] path: ":memory:" is one router process\'s own; with [router] shards > 1'
            " the shards share the inbox: name a file"
        )
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


REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str) -> None:
    """Raise ValueError unless `url` is a redis://, rediss:// or unix:// URL redis-py can use."""
    if any(ch.isspace() for ch in url):
        raise ValueError("contains white space")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES or not url.startswith(parts.scheme + "://"):
        raise ValueError("is not a redis://, rediss:// or unix:// URL")
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise ValueError("must name an absolute socket path (unix:///path/to/redis.sock)")
        return
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError(f"database {db!r} is not a number (redis://host:port/0)")
    if port == 0:
        raise ValueError("has port 0")


def redact_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is not None:
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    if "password=" in parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        hidden = [(k, "***" if k == "password" else v) for k, v in pairs]
        parts = parts._replace(query=urllib.parse.urlencode(hidden, safe="*"))
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"


def _check_redis(source: str, cfg: Config) -> None:
    cc = cfg.cluster
    if cc.lease_ttl < 2 * cc.lease_interval:
        raise ConfigError(
            f"{source}: [cluster] lease_ttl: {cc.lease_ttl:g} must be at least twice lease_interval"
            f" ({cc.lease_interval:g}), or one late renewal kills a live host"
        )
    url = cc.redis
    if url:
        try:
            check_redis_url(url)
        except ValueError as exc:
            shown = redact_url(url)[:100]
            raise ConfigError(f"{source}: [cluster] redis: {shown!r} {exc}") from None


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_MIN_API_KEY = 16


def _check_open(source: str, section: str, where: str, host: str, key: str, insecure: bool) -> None:
    """A push ingress reachable from other machines needs a key, or an explicit opt-out."""
    if key and len(key) < _MIN_API_KEY:
        raise ConfigError(
            f"{source}: [{section}] api_key: {len(key)} characters is too short to guess-proof; "
            f"use {_MIN_API_KEY} or more (e.g. `openssl rand -hex 32`)"
        )
    if key or insecure or is_loopback(host):
        return
    raise ConfigError(
        f"{source}: [{section}] {where}: reachable from other machines without a key: "
        f"set [{section}] api_key (e.g. `openssl rand -hex 32`), bind to 127.0.0.1, "
        f"or set [{section}] insecure_open = true to let anyone who reaches it push"
    )


def _networks(source: str, where: str, values: list[str]) -> None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: {where}: {value!r} is not an IP network (e.g. 10.0.0.0/8)"
            ) from None


def _check_security(source: str, cfg: Config) -> None:
    """Push API keys, TLS files, JWT keys and network lists (files are read: a bad one refuses a reload)."""
    _check_open(
        source, "http", "bind", parse_address(cfg.http.bind)[0], cfg.http.api_key, cfg.http.insecure_open
    )
    zmq_bind = cfg.ingress.zmq_bind
    if zmq_bind.startswith("tcp://"):
        host = zmq_bind[len("tcp://") :].rpartition(":")[0].strip("[]")
        _check_open(source, "ingress", "zmq_bind", host, cfg.ingress.api_key, cfg.ingress.insecure_open)
    else:
        _check_open(source, "ingress", "zmq_bind", "localhost", cfg.ingress.api_key, False)
    _networks(source, "[limits] exempt", cfg.limits.exempt)
    _networks(source, "[proxy] trusted", cfg.proxy.trusted)
    if cfg.tls.key_file and not cfg.tls.cert_file:
        raise ConfigError(f"{source}: [tls] key_file: set without [tls] cert_file")
    if cfg.tls.cert_file:
        from mpim.tls import TlsError, server_context

        try:
            server_context(cfg.tls)
        except TlsError as exc:
            raise ConfigError(f"{source}: [tls] cert_file: {exc}") from None
    if cfg.auth.public_key:
        from mpim.auth import AuthKeyError, load_public_key

        try:
            load_public_key(cfg.auth.public_key)
        except AuthKeyError as exc:
            raise ConfigError(f"{source}: [auth] public_key: {exc}") from None


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
    _check_redis(source, cfg)
    _check_security(source, cfg)
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
