"""Who the workload is: reliable users with an SDK device and a raw device each, goim users in
rooms, a probe client per host, and the backend that pushes to all of them.

- Reliable users 101-103: device ``sdk-<mid>`` (:mod:`.sdkdevice`) and ``raw-<mid>``
  (:mod:`.rawdevice`); they chat with each other and go offline at random. With two hosts
  each connection picks a host, so a user's devices are often on different hosts.
- goim users 201-206 (:mod:`.goim`): keys ``g<mid>``, rooms ``live://1`` / ``live://2``,
  TCP and WebSocket, spread over the hosts; connected all along.
- Probe clients ``probe-<host>`` (mids 901, 902) in ``live://probe``, for :mod:`.probe`.
- The backend (:mod:`.backend`): pushes by mid (mostly to one reliable user, sometimes to
  several users of both kinds), by key (goim and device keys), to the two rooms and to
  everyone, over HTTP and ZeroMQ, through any host.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench.chaos.backend import Backend, Pushers
from bench.chaos.ctx import OPS, PROBE_ROOM, ROOMS, Ctx
from bench.chaos.goim import GoimClient
from bench.chaos.probe import Prober
from bench.chaos.rawdevice import RawDevice
from bench.chaos.sdkdevice import SdkDevice

RELIABLE = [101, 102, 103]
GOIM = [201, 202, 203, 204, 205, 206]


class Workload:
    def __init__(self, ctx: Ctx, pushers: Pushers) -> None:
        self.ctx = ctx
        self.pushers = pushers
        labels = [h.label for h in ctx.hosts]
        self.goim = [
            GoimClient(
                ctx, f"goim:g{mid}", labels[i % len(labels)], f"g{mid}", mid, ROOMS[i % 2], ws=i % 3 == 2
            )
            for i, mid in enumerate(GOIM)
        ]
        self.probes = [
            GoimClient(ctx, f"probe:{label}", label, f"probe-{label}", 901 + i, PROBE_ROOM, ws=False)
            for i, label in enumerate(labels)
        ]
        self.sdk = [
            SdkDevice(ctx, f"sdk-{mid}", mid, [m for m in RELIABLE if m != mid] + [mid], ROOMS[i % 2])
            for i, mid in enumerate(RELIABLE)
        ]
        self.raw = [
            RawDevice(ctx, f"raw-{mid}", mid, [m for m in RELIABLE if m != mid], ROOMS[(i + 1) % 2])
            for i, mid in enumerate(RELIABLE)
        ]
        keys = [c.key for c in self.goim] + [d.key for d in self.sdk + self.raw]
        self.backend = Backend(ctx, pushers, RELIABLE, GOIM, keys)
        self.prober = Prober(ctx, pushers, self.probes)
        self.tasks: list[asyncio.Task[None]] = []

    def meta(self) -> dict[str, Any]:
        devices = {d.key: (d.mid, "sdk") for d in self.sdk}
        devices.update({d.key: (d.mid, "raw") for d in self.raw})
        return {
            "ops": OPS,
            "devices": devices,
            "rooms": [*ROOMS, PROBE_ROOM],
            "reliable": RELIABLE,
            "goim": GOIM,
        }

    def start_clients(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks += [loop.create_task(c.run()) for c in self.goim + self.probes]

    def start_load(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        self.tasks += [loop.create_task(d.run()) for d in self.sdk + self.raw]
        self.load = loop.create_task(self.backend.run(rate))

    async def stop_load(self) -> None:
        self.ctx.stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.load

    async def settle(self, timeout: float) -> None:
        """Every device online, answered (op 21) and caught up with its user's stream top; one
        ``final`` operation per device says whether it got there within ``timeout``."""
        self.ctx.final.set()
        history = self.ctx.history
        start = history.now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending: dict[str, Any] = {d.key: d for d in self.sdk + self.raw}
        state: dict[str, str] = {}
        while pending and loop.time() < deadline:
            for key, device in list(pending.items()):
                try:
                    top = await self._top(device.mid)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    state[key] = f"inbox top unknown: {exc}"
                    continue
                done, state[key] = self._caught_up(device, top)
                if done:
                    values = {"device": key, "epoch": top["epoch"], "top": top["top"], "state": state[key]}
                    history.record("harness", "final", "ok", values, time=start)
                    del pending[key]
            await asyncio.sleep(0.25)
        for key in pending:
            values = {"device": key, "state": state.get(key, ""), "waited": timeout}
            history.record("harness", "final", "fail", values, time=start)

    def _caught_up(self, device: Any, top: dict[str, Any]) -> tuple[bool, str]:
        epoch, seq = str(top["epoch"]), int(top["top"])
        if isinstance(device, SdkDevice):
            s = device.session
            state = f"ready={bool(s and s.ready.is_set())} epoch={s and s.epoch} seq={s and s.seq} top={seq}"
            return device.settled(epoch, seq), state
        assert isinstance(device, RawDevice)
        resumed = any(c.resumed for c in device.live)
        state = f"resumed={resumed} epoch={device.epoch} pos={device.pos} top={seq}"
        return resumed and device.epoch == epoch and (device.pos or 0) >= seq, state

    async def _top(self, mid: int) -> dict[str, Any]:
        answer = await self.pushers.get(self.ctx.hosts[0].label, f"/mpim/inbox?mid={mid}&after=0&limit=1")
        data = answer.get("data")
        if answer.get("code") != 0 or not isinstance(data, dict):
            raise ValueError(f"GET /mpim/inbox: {answer.get('code')} {answer.get('message')}")
        return data

    async def read_counts(self) -> None:
        """One ``counts`` operation per host: ``/goim/online/total`` and ``/goim/online/room``."""
        history = self.ctx.history
        query = "&".join(f"rooms={r.partition('://')[2]}" for r in [*ROOMS, PROBE_ROOM])
        for host in self.ctx.hosts:
            start = history.now()
            values: dict[str, Any] = {"host": host.label}
            try:
                total = await self.pushers.get(host.label, "/goim/online/total")
                rooms = await self.pushers.get(host.label, f"/goim/online/room?type=live&{query}")
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                values["error"] = str(exc)
                history.record("harness", "counts", "info", values, time=start, end=None)
                continue
            values["total"] = (total.get("data") or {}).get("conn_count")
            values["rooms"] = {f"live://{k}": v for k, v in (rooms.get("data") or {}).items()}
            ok = total.get("code") == 0 and rooms.get("code") == 0
            history.record("harness", "counts", "ok" if ok else "info", values, time=start)

    async def read_inboxes(self) -> None:
        """One ``inbox`` operation per reliable user: its whole stream as stored, at the end."""
        history = self.ctx.history
        for mid in RELIABLE:
            start = history.now()
            try:
                answer = await self.pushers.get(
                    self.ctx.hosts[0].label, f"/mpim/inbox?mid={mid}&after=0&limit=1000"
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                history.record(
                    "harness", "inbox", "info", {"mid": mid, "error": str(exc)}, time=start, end=None
                )
                continue
            data = answer.get("data") or {}
            messages = [[m["seq"], m["op"], m.get("body", "")] for m in data.get("messages", [])]
            values = {"mid": mid, "epoch": data.get("epoch"), "top": data.get("top"), "messages": messages}
            history.record(
                "harness", "inbox", "ok" if answer.get("code") == 0 else "info", values, time=start
            )

    async def close(self, timeout: float = 15.0) -> None:
        self.ctx.closing.set()
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
