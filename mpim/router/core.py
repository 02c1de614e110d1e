"""The router's logic: apply worker reports to the tables, resolve and publish pushes.

No sockets here: :class:`Router` is given a ``publish(topic, envelope)`` callable
and a clock, so tests drive it with plain values.

Recovery (the router's epoch): each router process picks a random epoch and
publishes it with its status every ``report_interval``. A worker that sees an
epoch it has not synced with sends its complete session list (``EV_SYNC``), so a
restarted router is whole again within a report interval or two. A worker's
liveness report carries its connection count and, every ``online_interval``,
its per-room counts; because one worker's reports arrive in order, a difference
from the tables is real drift, and twice in a row makes the router ask for a
resync. Ghosts: a worker that stops reporting for ``worker_expiry`` is dropped
whole, a new pid in the same slot whose predecessor is dead on this host
replaces it at once, and single connections expire when their heartbeats stop.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

from mpim import bus
from mpim.config import Config
from mpim.router.tables import Kick, SessionTable, WorkerInfo

log = logging.getLogger("mpim.router")

Publish = Callable[[bytes, bytes], None]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BadReport(ValueError):
    pass


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise BadReport(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadReport(f"expected an integer, got {type(value).__name__}")
    return value


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise BadReport(f"expected bytes, got {type(value).__name__}")
    return value


def _entry(item: Any) -> tuple[str, int, str, str]:
    key, mid, room, ip = item
    return _str(key), _int(mid), _str(room), _str(ip)


class Router:
    def __init__(
        self,
        cfg: Config,
        publish: Publish,
        receive: Callable[[int, str, int, bytes], None],
        now: float,
        *,
        host: str = "",
        epoch: int = 0,
        is_alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        rc = cfg.router
        self.cfg = cfg
        self.publish = publish
        self.receive = receive
        self.host = host
        self.epoch = epoch or secrets.randbits(62) + 1
        self.is_alive = is_alive
        # the worker closes a silent client itself; this is the safety net behind it
        self.session_ttl = cfg.heartbeat_timeout + 2 * rc.report_interval + 1.0
        self.table = SessionTable(self.session_ttl, rc.sweep_interval, now)
        self.now = now
        self.stats = {"reports": 0, "bad_reports": 0, "resyncs": 0, "expired": 0, "ghost_workers": 0}

    # -- worker reports ---------------------------------------------------------------------
    def on_report(self, data: bytes, now: float) -> None:
        self.now = now
        self.stats["reports"] += 1
        try:
            host, name, pid, events = bus.unpack(data)
            info, new = self.table.worker(_str(host), _str(name), _int(pid), now)
        except (ValueError, TypeError) as exc:
            self.stats["bad_reports"] += 1
            log.warning("ignoring a malformed worker report (%d bytes): %s", len(data), exc)
            return
        if new:
            self._joined(info)
        for event in events if isinstance(events, list) else ():
            try:
                self._apply(info, event, now)
            except (ValueError, TypeError, IndexError) as exc:
                self.stats["bad_reports"] += 1
                log.warning("ignoring a malformed event from %s: %s", info.id, exc)

    def _joined(self, info: WorkerInfo) -> None:
        log.info("worker %s reporting", info.id)
        for old in self.table.predecessors(info):
            if old.host == self.host and not self.is_alive(old.pid):
                self._drop(old, f"replaced by pid {info.pid}")

    def _drop(self, info: WorkerInfo, why: str) -> None:
        n = self.table.drop_worker(info)
        self.stats["ghost_workers"] += 1
        log.warning("worker %s gone (%s): dropped its %d sessions", info.id, why, n)

    def _apply(self, info: WorkerInfo, event: Any, now: float) -> None:
        kind = event[0]
        table = self.table
        if kind == bus.EV_CONNECT:
            key, mid, room, ip = _entry(event[1:5])
            self._kick(table.put(info, key, mid, room, ip, now))
        elif kind == bus.EV_DISCONNECT:
            table.remove(info, _str(event[1]))
        elif kind == bus.EV_ROOM:
            table.change_room(info, _str(event[1]), _str(event[2]))
        elif kind == bus.EV_UPSTREAM:
            _, key, mid, op, body = event
            self.receive(_int(mid), _str(key), _int(op), _bytes(body))
        elif kind == bus.EV_ALIVE:
            _, conns, epoch, beats, rooms = event
            table.renew(info, beats, now)
            self._check(info, _int(conns), _int(epoch), rooms, now)
        elif kind == bus.EV_SYNC:
            entries = [_entry(item) for item in event[2]]
            for kick in table.sync(info, entries, now):
                self._kick(kick)
            info.epoch = _int(event[1])
            info.mismatches = 0
            log.info("worker %s synced %d sessions", info.id, len(entries))
        elif kind == bus.EV_BYE:
            n = table.drop_worker(info)
            log.info("worker %s left (%d sessions dropped)", info.id, n)
        else:
            raise BadReport(f"unknown event kind {kind!r}")

    def _kick(self, kick: Kick | None) -> None:
        if kick is not None:
            self.publish(bus.worker_topic(kick.worker.id), bus.pack([bus.KICK, [kick.key]]))

    def _check(self, info: WorkerInfo, conns: int, epoch: int, rooms: Any, now: float) -> None:
        """Compare a worker's own counts with the tables; ask for a resync on drift."""
        if epoch != self.epoch:
            return  # it has not seen this router yet and will sync when it does
        if info.epoch != self.epoch:
            drift = True  # it synced with an older table (we dropped it, or restarted)
        else:
            drift = conns != len(info.conns) or (isinstance(rooms, dict) and rooms != info.room_count)
            info.mismatches = info.mismatches + 1 if drift else 0
            drift = info.mismatches >= 2
        if drift and now - info.resync_at >= 2 * self.cfg.router.report_interval:
            info.resync_at = now
            info.mismatches = 0
            self.stats["resyncs"] += 1
            log.info("asking worker %s to report its sessions again", info.id)
            self.publish(bus.worker_topic(info.id), bus.pack([bus.RESYNC]))

    # -- timers -----------------------------------------------------------------------------
    def sweep(self, now: float) -> None:
        self.now = now
        expired = self.table.sweep(now)
        if expired:
            self.stats["expired"] += len(expired)
            log.info("expired %d sessions with no heartbeat", len(expired))
        for info in self.table.silent_workers(now, self.cfg.router.worker_expiry):
            self._drop(info, f"silent for {now - info.last_seen:.1f}s")

    def publish_status(self, with_rooms: bool) -> None:
        rooms = self.table.room_count if with_rooms else None
        self.publish(bus.CONTROL, bus.status(self.epoch, rooms))

    # -- pushes -----------------------------------------------------------------------------
    def push_keys(self, op: int, keys: list[str], body: bytes) -> int:
        """Publish to the workers holding these keys; returns how many keys are online."""
        found = 0
        for info, group in self.table.group_keys(dict.fromkeys(keys)).items():
            self.publish(bus.worker_topic(info.id), bus.push_keys(op, group, body))
            found += len(group)
        return found

    def push_mids(self, op: int, mids: list[int], body: bytes) -> int:
        """Publish to every connection of these users; returns how many connections."""
        found = 0
        for info, group in self.table.group_mids(mids).items():
            self.publish(bus.worker_topic(info.id), bus.push_keys(op, group, body))
            found += len(group)
        return found

    def push_room(self, op: int, room: str, body: bytes) -> None:
        self.publish(bus.room_topic(room), bus.push_room(op, body))

    def push_all(self, op: int, speed: int, body: bytes) -> None:
        """``speed`` is for the whole cluster (goim); each worker gets its share."""
        workers = max(1, len(self.table.workers))
        share = -(-speed // workers) if speed > 0 else 0
        self.publish(bus.BROADCAST, bus.push_all(op, share, body))
