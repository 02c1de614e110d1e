"""The business backend of a chaos run: pushes by mid, key, room and to everyone, over HTTP
(goim's API) and the ZeroMQ ingress, through any host; every push is one ``push`` operation.

An answer's outcome (see :mod:`bench.chaos.history`): code 0 is ``ok``; a refusal that says
nothing was done is ``fail`` (-400-style codes; -503 when the router refused before doing
anything: "push refused", "stopping", "rebuilding", "nothing was pushed", "not on the bus
yet"); everything else is ``info`` — -504, a -503 that "may" have delivered or delivered on
one host only, no answer, a timeout, a connection that broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import msgpack
import zmq
import zmq.asyncio

from bench.chaos.ctx import OPS, ROOMS, Ctx
from bench.chaos.history import FAIL, INFO, OK
from bench.chaos.servers import Host

TIMEOUT = 5.0
DEFINITE = (-400, -401, -404, -405, -413, -429)
NOTHING_DONE = ("push refused", "is stopping", "rebuilding", "nothing was pushed", "not on the bus yet")


def outcome(code: int | None, message: str) -> str:
    if code == 0:
        return OK
    if code in DEFINITE:
        return FAIL
    if code == -503 and any(s in message for s in NOTHING_DONE) and "may" not in message:
        return FAIL
    return INFO


class Http:
    """One keep-alive HTTP/1.1 connection to a host's push API; one request at a time."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.lock = asyncio.Lock()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, body: bytes = b"") -> dict[str, Any]:
        async with self.lock:
            try:
                return await asyncio.wait_for(self._request(method, target, body), TIMEOUT)
            except BaseException:
                self.reset()
                raise

    async def _request(self, method: str, target: str, body: bytes) -> dict[str, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.host.http_port)
        assert self.reader is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        size = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                size = int(value)
        answer: dict[str, Any] = json.loads(await self.reader.readexactly(size))
        return answer

    def reset(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


class Zmq:
    """A DEALER on a host's ZeroMQ ingress; answers matched to requests by id."""

    def __init__(self, context: zmq.asyncio.Context, host: Host) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{host.zmq_port}")
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = 0
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            raw = await self.sock.recv()
            try:
                answer = msgpack.unpackb(raw, raw=False)
            except ValueError:
                continue
            rid = answer.get("id") if isinstance(answer, dict) else None
            future = self.waiting.pop(rid, None) if isinstance(rid, int) else None
            if future is not None and not future.done():
                future.set_result(answer)

    async def request(self, req: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        rid = self.ids
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[rid] = future
        try:
            await self.sock.send(msgpack.packb({**req, "id": rid}, use_bin_type=True))
            return await asyncio.wait_for(future, TIMEOUT)
        finally:
            self.waiting.pop(rid, None)

    def close(self) -> None:
        self.reader.cancel()
        self.sock.close(linger=0)


class Pushers:
    """HTTP lanes and a ZeroMQ socket per host, and the push operation itself."""

    def __init__(self, ctx: Ctx, lanes: int = 2) -> None:
        self.ctx = ctx
        self.context = zmq.asyncio.Context()
        self.http = {h.label: [Http(h) for _ in range(lanes)] for h in ctx.hosts}
        self.zmq = {h.label: Zmq(self.context, h) for h in ctx.hosts}
        self.count = 0

    def body(self, prefix: str = "P") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    async def push(
        self,
        process: str,
        target: str,
        host: str,
        via: str,
        *,
        mids: Sequence[int] = (),
        keys: Sequence[str] = (),
        room: str = "",
        body: str = "",
    ) -> dict[str, Any]:
        """One push, recorded; returns its values (with ``code``, ``connections``, ``seqs``)."""
        history = self.ctx.history
        body = body or self.body()
        values: dict[str, Any] = {"via": via, "host": host, "target": target, "op": OPS[target], "body": body}
        if target == "mid":
            values["mids"] = list(mids)
        elif target == "key":
            values["keys"] = list(keys)
        elif target == "room":
            values["room"] = room
        start = history.now()
        try:
            answer = await (self._http(values) if via == "http" else self._zmq(values))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, zmq.ZMQError) as exc:
            values["error"] = str(exc) or type(exc).__name__
            history.record(process, "push", INFO, values, time=start, end=None)
            return values
        code = int(answer.get("code", -1))
        data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
        assert isinstance(data, dict)
        values.update(code=code, message=str(answer.get("message", "")))
        if "connections" in data:
            values["connections"] = int(data["connections"])
        if "seqs" in data:
            values["seqs"] = {str(m): int(s) for m, s in data["seqs"].items()}
        history.record(process, "push", outcome(code, values["message"]), values, time=start)
        return values

    async def _http(self, v: dict[str, Any]) -> dict[str, Any]:
        target = v["target"]
        query: list[tuple[str, Any]] = [("operation", v["op"])]
        if target == "mid":
            query += [("mids", m) for m in v["mids"]]
        elif target == "key":
            query += [("keys", k) for k in v["keys"]]
        elif target == "room":
            kind, _, name = v["room"].partition("://")
            query += [("type", kind), ("room", name)]
        else:
            query.append(("speed", 0))
        path = {"mid": "mids", "key": "keys", "room": "room", "all": "all"}[target]
        lane = random.choice(self.http[v["host"]])
        return await lane.request("POST", f"/goim/push/{path}?{urlencode(query)}", v["body"].encode())

    async def _zmq(self, v: dict[str, Any]) -> dict[str, Any]:
        kind = {"mid": "mids", "key": "keys", "room": "room", "all": "all"}[v["target"]]
        req: dict[str, Any] = {"kind": kind, "op": v["op"], "body": v["body"]}
        if kind == "mids":
            req["mids"] = v["mids"]
        elif kind == "keys":
            req["keys"] = v["keys"]
        elif kind == "room":
            req["room"] = v["room"]
        else:
            req["speed"] = 0
        return await self.zmq[v["host"]].request(req)

    async def get(self, host: str, target: str) -> dict[str, Any]:
        return await self.http[host][0].request("GET", target)

    def close(self) -> None:
        for lanes in self.http.values():
            for lane in lanes:
                lane.reset()
        for z in self.zmq.values():
            z.close()
        self.context.term()


class Backend:
    """The steady push load: ``rate`` pushes per second in the mix described in the README."""

    def __init__(
        self, ctx: Ctx, pushers: Pushers, reliable: list[int], goim: list[int], keys: list[str]
    ) -> None:
        self.ctx = ctx
        self.pushers = pushers
        self.reliable = reliable
        self.goim = goim
        self.keys = keys
        self.rng = ctx.rng("backend")

    async def run(self, rate: float) -> None:
        rng = self.rng
        in_flight: set[asyncio.Task[Any]] = set()
        limit = asyncio.Semaphore(16)
        while not self.ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stopping.wait(), rng.expovariate(rate))
            if self.ctx.stopping.is_set():
                break
            if limit.locked():
                continue
            kwargs = self._choose()
            task = asyncio.get_running_loop().create_task(self._one(limit, kwargs))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)

    async def _one(self, limit: asyncio.Semaphore, kwargs: dict[str, Any]) -> None:
        async with limit:
            await self.pushers.push("backend", **kwargs)

    def _choose(self) -> dict[str, Any]:
        rng = self.rng
        host = rng.choice(self.ctx.hosts).label
        via = "http" if rng.random() < 0.6 else "zmq"
        r = rng.random()
        if r < 0.45:
            if rng.random() < 0.8:
                mids = [rng.choice(self.reliable)]
            else:
                mids = rng.sample(self.reliable + self.goim, rng.randint(2, 3))
            return {"target": "mid", "host": host, "via": via, "mids": mids}
        if r < 0.60:
            return {
                "target": "key",
                "host": host,
                "via": via,
                "keys": rng.sample(self.keys, rng.randint(1, 2)),
            }
        if r < 0.90:
            return {"target": "room", "host": host, "via": via, "room": rng.choice(ROOMS)}
        return {"target": "all", "host": host, "via": via}
