"""The ``mpim`` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence

from mpim import config as config_mod
from mpim.config import ConfigError

EXIT_CONFIG = 2
EXIT_BOOT_ERROR = 3


def _load(path: str | None) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"mpim: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_worker(args: argparse.Namespace) -> int:
    from mpim.worker.main import run_standalone

    return run_standalone(_load(args.config), args.config)


def cmd_master(args: argparse.Namespace) -> int:
    from mpim import pidfile
    from mpim.master import run_master

    cfg = _load(args.config)
    try:
        with pidfile.held(cfg.server.pid_file):
            return run_master(cfg, args.config)
    except pidfile.PidFileError as exc:
        print(f"mpim master: {exc}", file=sys.stderr)
        return EXIT_BOOT_ERROR


def _signal_master(args: argparse.Namespace, signum: signal.Signals) -> int:
    """``mpim reload`` / ``mpim stop``: signal the one master that runs with ``-c`` (or ``--pid``)."""
    from mpim import pidfile

    try:
        if args.pid:
            pid = pidfile.check_master(args.pid)
        else:
            pid = pidfile.find_master(args.config, _load(args.config).server.pid_file)
        os.kill(pid, signum)
    except pidfile.MasterNotFound as exc:
        print(f"mpim {args.command}: {exc}", file=sys.stderr)
        return 1
    except ProcessLookupError:
        print(f"mpim {args.command}: the master (pid {pid}) is gone", file=sys.stderr)
        return 1
    except PermissionError:
        print(
            f"mpim {args.command}: not allowed to signal pid {pid} (another user's master?)", file=sys.stderr
        )
        return 1
    print(f"mpim {args.command}: sent {signum.name} to the master (pid {pid})")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    return _signal_master(args, signal.SIGHUP)


def cmd_stop(args: argparse.Namespace) -> int:
    return _signal_master(args, signal.SIGTERM)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(f"{cfg.source}: ok ({cfg.worker_count()} workers, auth {cfg.auth.mode})")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import warnings

    from mpim.auth import AuthKeyError, mint, private_key_algorithm

    secret, algorithm = args.secret, "HS256"
    if args.private_key:
        try:
            with open(args.private_key, encoding="ascii") as f:
                secret = f.read()
            algorithm = private_key_algorithm(secret)
        except (OSError, UnicodeDecodeError, AuthKeyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            print(f"mpim token: --private-key {args.private_key}: {reason}", file=sys.stderr)
            return EXIT_CONFIG
    elif not secret:
        cfg = _load(args.config)
        secret = cfg.auth.secret
        if not secret:
            where = f"{cfg.source} has no [auth] secret" if args.config else "no --secret and no -c config"
            fix = 'set [auth] mode = "jwt" and secret = "..." in the config, or pass --secret'
            print(f"mpim token: {where}: {fix}", file=sys.stderr)
            return EXIT_CONFIG
        if cfg.auth.mode != "jwt":
            print(
                f'mpim token: warning: {cfg.source} has [auth] mode = "{cfg.auth.mode}": '
                'its workers will refuse this token until you set mode = "jwt"',
                file=sys.stderr,
            )
    accepts = tuple(int(op) for op in args.accepts.split(",") if op) if args.accepts else ()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        caps = tuple(c for c in args.caps.split(",") if c)
        token = mint(secret, args.mid, args.room, args.key, args.platform, accepts, args.ttl, caps, algorithm)
    for warning in caught:  # one plain line each, not a warning with a site-packages path
        if warning.category.__name__ == "InsecureKeyLengthWarning":
            size = len(secret.encode())
            print(
                f"mpim token: warning: the secret is {size} bytes; HS256 wants at least 32", file=sys.stderr
            )
        else:
            print(f"mpim token: warning: {warning.message}", file=sys.stderr)
    print(token)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from mpim import push

    cfg = _load(args.config)
    return push.run(args, args.endpoint or cfg.ingress.zmq_bind, cfg.ingress.api_key)


def cmd_client(args: argparse.Namespace) -> int:
    import uvloop

    from mpim.client import WatchError, watch

    claims = {
        "mid": args.mid,
        "key": args.key,
        "room_id": args.room,
        "platform": args.platform,
        "accepts": [int(op) for op in args.accepts.split(",") if op],
    }
    caps = tuple(c for c in args.caps.split(",") if c)
    if "ack" in caps:
        from mpim.sdk import follow

        try:
            return uvloop.run(follow(args.address, args.token or claims, caps, args.heartbeat, args.count))
        except KeyboardInterrupt:
            return 0
    token = args.token or json.dumps({**claims, "caps": list(caps)} if caps else claims)
    try:
        return uvloop.run(
            watch(
                args.address,
                token,
                args.heartbeat,
                args.count,
                auth_timeout=args.auth_timeout,
                cafile=args.cafile,
            )
        )
    except WatchError as exc:
        print(f"mpim client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def user_id(text: str) -> int:
    """``--mid`` of a token: a user id, 1 to 2**63 - 1 (jwt mode refuses a token without one)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if not 0 < value < 1 << 63:
        raise argparse.ArgumentTypeError(f"{value} is not a user id (an integer from 1 to {(1 << 63) - 1})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", help="config.toml (default: embedded defaults)")
        p.set_defaults(func=func)
        return p

    add("master", cmd_master, "run the master: workers, bus and router, supervised")
    add("worker", cmd_worker, "run one worker in the foreground (no bus, no router)")
    add("check", cmd_check, "validate a config file and exit")
    for name, func, what in (
        ("reload", cmd_reload, "reload the master that runs with this config (SIGHUP)"),
        ("stop", cmd_stop, "stop the master that runs with this config, draining clients (SIGTERM)"),
    ):
        control = add(name, func, what)
        control.add_argument("--pid", type=int, default=0, help="signal this master instead of looking it up")
    client = add("client", cmd_client, "connect as a goim client and print what is pushed")
    client.add_argument(
        "address",
        nargs="?",
        default="127.0.0.1:3101",
        help="host:port (TCP), tls://host:port (TCP over TLS), ws://host:port/sub or wss://host:port/sub",
    )
    client.add_argument("--cafile", default="", help="trust this CA (PEM) for tls:// and wss://")
    client.add_argument("--mid", type=int, default=1, help="user id for a json token")
    client.add_argument("--room", default="", help="room to join, e.g. live://1000")
    client.add_argument("--key", default="", help="connection key (empty = server generates one)")
    client.add_argument("--platform", default="cli")
    client.add_argument("--accepts", default="1000,1001,1002", help="ops to watch")
    client.add_argument("--token", default="", help="send this token instead (e.g. from `mpim token`)")
    client.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats")
    client.add_argument("--count", type=int, default=0, help="exit after this many pushes (0 = never)")
    client.add_argument(
        "--caps",
        default="",
        help="ask for mpim's reliable delivery: ack (resume, acks; reconnects by itself) and/or seq",
    )
    client.add_argument(
        "--auth-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the connection and the Auth reply",
    )
    token = add("token", cmd_token, "mint a client token for jwt auth mode (HS256, or RS256/ES256)")
    token.add_argument("--mid", type=user_id, required=True, help="user id (> 0)")
    token.add_argument("--room", default="", help="room id, e.g. live://1000")
    token.add_argument("--key", default="", help="connection key (empty = server generates one)")
    token.add_argument("--platform", default="", help="platform, e.g. web")
    token.add_argument("--accepts", default="", help="comma-separated ops, e.g. 1000,1001")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until exp")
    token.add_argument("--caps", default="", help="reliable delivery: ack and/or seq, e.g. ack,seq")
    token.add_argument("--secret", default="", help="secret (default: [auth] secret of --config)")
    token.add_argument(
        "--private-key", default="", help="sign RS256/ES256 with this PEM private key instead of a secret"
    )
    push = add("push", cmd_push, "push a message through the router's ZeroMQ ingress")
    push.add_argument("kind", choices=("keys", "mids", "room", "all"), help="who receives it")
    push.add_argument("--body", default="", help="message body; '-' reads stdin")
    push.add_argument("--op", type=int, required=True, help="operation, e.g. 1000")
    push.add_argument("--key", action="append", default=[], help="connection key (repeat)")
    push.add_argument("--mid", type=int, action="append", default=[], help="user id (repeat)")
    push.add_argument("--room", default="", help="full room id, type://id, e.g. live://1000")
    push.add_argument("--raw-room", action="store_true", help="accept a room id without type://")
    push.add_argument("--speed", type=int, default=0, help="push all: connections/s, 0 = unpaced")
    push.add_argument("--endpoint", default="", help="ingress endpoint (default: [ingress] zmq_bind)")
    push.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    push.add_argument(
        "--api-key", default="", help="the ingress key (default: [ingress] api_key of --config)"
    )
    push.add_argument("--no-wait", action="store_true", help="fire and forget: ask for no answer")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    raise SystemExit(args.func(args))
