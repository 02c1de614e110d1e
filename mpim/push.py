"""Push through the router's ZeroMQ ingress: a small blocking client and ``mpim push``.

    from mpim.push import Pusher

    with Pusher("tcp://127.0.0.1:3112") as pusher:
        pusher.room(1000, "live://1000", b'{"test":1}')
        found = pusher.mids(1000, [123], b"hello")["connections"]
        pusher.all(1000, b"news", speed=5000, wait=False)  # fire and forget

Each call sends one msgpack request (the format is in :mod:`mpim.router.zingress`)
on a DEALER socket. With ``wait=True`` (the default) it returns the reply's
``data`` or raises :class:`PushError` with the ingress's code and message;
:class:`PushTimeout` if no answer comes within ``timeout`` seconds. With
``wait=False`` the request asks for no reply. ``api_key`` (``[ingress] api_key``
of the server) goes into every request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import count
from types import TracebackType
from typing import Any

import msgpack
import zmq


class PushError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PushTimeout(PushError):
    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__(-504, f"no answer from {endpoint} within {timeout:g}s")


class Pusher:
    def __init__(self, endpoint: str, timeout: float = 5.0, api_key: str = "") -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.api_key = api_key
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.connect(endpoint)
        self._ids = count(1)

    def __enter__(self) -> Pusher:
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close; requests still queued get up to ``timeout`` to leave."""
        self._sock.close(linger=int(self.timeout * 1000))
        self._ctx.term()

    def request(self, req: dict[str, Any], wait: bool = True) -> Any:
        """Send one request map; returns the reply's ``data`` (``None`` without ``wait``)."""
        rid = next(self._ids)
        req = {**req, "id": rid}
        if self.api_key:
            req["api_key"] = self.api_key
        if not wait:
            req["reply"] = False
        self._sock.send(msgpack.packb(req, use_bin_type=True))
        if not wait:
            return None
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                raise PushTimeout(self.endpoint, self.timeout)
            try:
                reply = msgpack.unpackb(self._sock.recv(), raw=False)
            except (ValueError, msgpack.UnpackException):
                continue
            if isinstance(reply, dict) and reply.get("id") == rid:
                break  # anything else is the late answer to an earlier timed-out request
        if reply.get("code") != 0:
            raise PushError(int(reply.get("code", -500)), str(reply.get("message", "")))
        return reply.get("data")

    def keys(self, op: int, keys: list[str], body: bytes | str, wait: bool = True) -> Any:
        return self.request({"kind": "keys", "op": op, "keys": keys, "body": body}, wait)

    def mids(self, op: int, mids: list[int], body: bytes | str, wait: bool = True) -> Any:
        return self.request({"kind": "mids", "op": op, "mids": mids, "body": body}, wait)

    def room(self, op: int, room: str, body: bytes | str, wait: bool = True) -> Any:
        return self.request({"kind": "room", "op": op, "room": room, "body": body}, wait)

    def all(self, op: int, body: bytes | str, speed: int = 0, wait: bool = True) -> Any:
        return self.request({"kind": "all", "op": op, "speed": speed, "body": body}, wait)


def run(args: argparse.Namespace, default_endpoint: str, default_key: str = "") -> int:
    """``mpim push``: print the answer as JSON; exit 0 when the push was accepted."""
    endpoint = args.endpoint or default_endpoint
    if not endpoint:
        print("mpim push: no endpoint: pass --endpoint or set [ingress] zmq_bind", file=sys.stderr)
        return 2
    need = {"keys": ("key", "--key"), "mids": ("mid", "--mid"), "room": ("room", "--room")}
    if args.kind in need and not getattr(args, need[args.kind][0]):
        print(f"mpim push {args.kind}: {need[args.kind][1]} is required", file=sys.stderr)
        return 2
    if args.kind == "room" and "://" not in args.room and not args.raw_room:
        print(
            f"mpim push room: room id {args.room!r} has no type: clients join full room ids "
            f"such as 'live://{args.room}' (pass --raw-room to push to {args.room!r} anyway)",
            file=sys.stderr,
        )
        return 2
    body: bytes = sys.stdin.buffer.read() if args.body == "-" else args.body.encode()
    wait = not args.no_wait
    with Pusher(endpoint, args.timeout, args.api_key or default_key) as pusher:
        try:
            if args.kind == "keys":
                data = pusher.keys(args.op, args.key, body, wait)
            elif args.kind == "mids":
                data = pusher.mids(args.op, args.mid, body, wait)
            elif args.kind == "room":
                data = pusher.room(args.op, args.room, body, wait)
            else:
                data = pusher.all(args.op, body, args.speed, wait)
        except PushError as exc:
            print(json.dumps({"code": exc.code, "message": exc.message}))
            return 1
    print(json.dumps({"code": 0, "message": "", "data": data}) if wait else "sent")
    return 0
