"""Router process: session tables, the workers' links, the bus port and the push ingress.

One asyncio loop (uvloop) serves everything: the stream server the workers link
to, the XPUB socket on the bus, the ZeroMQ ROUTER ingress, the HTTP server, and
the timers. Signals: SIGTERM/SIGINT/SIGQUIT stop it; SIGUSR2 (sent by the master
when the host starts to drain) makes it refuse pushes from then on; SIGHUP
re-reads the configuration file and applies it in place, so a reload never
restarts the router and never opens a gap in its tables.

Shards. With ``[router] shards`` = N > 1 the master forks N of these, shard K owning the
users of its slot range (:mod:`mpim.slots`): K's workers link at ``endpoints.router_of(K)``;
the push API and the ZeroMQ ingress are served by every shard on the same ports
(SO_REUSEPORT: the kernel spreads the connections; the ingress's listening socket is made
here and handed to libzmq with ZMQ_USE_FD); shard 0 alone trims the inbox by age.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import uvloop
import zmq
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mpim import config as config_mod
from mpim import log as mlog
from mpim import signals, stream
from mpim.bus import SocketReader
from mpim.cluster import ClusterError, connect_redis
from mpim.config import Config, ConfigError, is_loopback, parse_address
from mpim.inbox import Inbox, InboxError, open_inbox
from mpim.inbox.redis import open_redis_inbox
from mpim.listen import BindError, listen_socket, zmq_tcp_address
from mpim.master.reload import pin_bus_keys
from mpim.master.status import EXIT_BOOT_ERROR
from mpim.master.statusfile import StatusReader, path_in
from mpim.router.api import PushApi
from mpim.router.backend import Backend
from mpim.router.busport import BusPort
from mpim.router.cluster import HostCluster
from mpim.router.console import Console, install
from mpim.router.core import Router
from mpim.router.hook import HookError, Receiver, load_hook
from mpim.router.http import HttpProtocol, HttpState
from mpim.router.links import WorkerConn
from mpim.router.metrics import Sources
from mpim.router.redisfabric import RedisFabric
from mpim.router.shardfabric import ShardFabric
from mpim.router.shardlink import ShardPeers
from mpim.router.shardredis import ShardRedisFabric
from mpim.router.tables import SessionTable
from mpim.router.totals import WorkerTotals
from mpim.router.zingress import Ingress
from mpim.runtime import Endpoints, server_name

log = logging.getLogger("mpim.router")

TICK = 0.1  # fence requests, push timeouts
TRIM_EVERY = 60.0  # drop inbox messages older than [inbox] max_age


class _Every:
    """Run ``fn`` every ``interval`` seconds of loop time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, fn: Callable[[], None]) -> None:
        self._loop = loop
        self.interval = interval
        self._fn = fn
        self._handle = loop.call_later(interval, self._run)

    def _run(self) -> None:
        self._handle = self._loop.call_later(self.interval, self._run)
        try:
            self._fn()
        except Exception:
            log.exception("router timer failed")

    def cancel(self) -> None:
        self._handle.cancel()


def warn_if_open(cfg: Config) -> None:
    """``insecure_open``: one loud line per start (and reload) while anyone may push."""
    host = parse_address(cfg.http.bind)[0]
    if cfg.http.insecure_open and not cfg.http.api_key and not is_loopback(host):
        log.warning(
            "INSECURE: the push API on %s has no api_key ([http] insecure_open = true): "
            "anyone who can reach it can push to every client",
            cfg.http.bind,
        )
    zmq = zmq_tcp_address(cfg.ingress.zmq_bind)
    if (
        cfg.ingress.insecure_open
        and not cfg.ingress.api_key
        and zmq
        and not is_loopback(parse_address(zmq)[0])
    ):
        log.warning(
            "INSECURE: the ZeroMQ ingress on %s has no api_key ([ingress] insecure_open = true): "
            "anyone who can reach it can push to every client",
            cfg.ingress.zmq_bind,
        )


class RouterProcess:
    """start -> serve -> stop, like :class:`~mpim.worker.server.Worker`."""

    def __init__(
        self, cfg: Config, endpoints: Endpoints, path: str | None = None, expect: int = 0, shard: int = 0
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.endpoints = endpoints.configured(cfg)
        self.expect = expect
        self.shard = shard  # this process's shard, 0..shards-1
        self.shards = cfg.router.shards  # fixed while the master runs (a reload cannot change it)
        self.loop = asyncio.get_running_loop()
        self.ctx = zmq.Context()
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.zin = self.ctx.socket(zmq.ROUTER)
        self._stop = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._http_server: asyncio.AbstractServer | None = None
        self._timers: list[_Every] = []
        self._readers: list[SocketReader[Any]] = []
        self.receiver: Receiver | None = None
        self.inbox: Inbox | None = None
        self.redis: Redis | None = None
        self.cluster: HostCluster | None = None
        self.backend: Backend | None = None
        self.router: Router | None = None
        self.busport: BusPort | None = None
        self.http: HttpState | None = None
        self.ingress: Ingress | None = None
        self.console: Console | None = None
        self._lease_timer: _Every | None = None
        self.peers: ShardPeers | None = None

    # -- start --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind everything; raises :class:`BindError` / :class:`HookError` with a clear message."""
        cfg, loop = self.cfg, self.loop
        self.receiver = Receiver(load_hook(cfg.router.receive_hook))
        if cfg.cluster.redis:
            try:
                self.redis = await connect_redis(cfg.cluster)
                if cfg.inbox.enabled:
                    self.inbox = await open_redis_inbox(cfg.cluster, cfg.inbox)
            except (ClusterError, InboxError) as exc:
                raise BindError(str(exc)) from None
        elif cfg.inbox.enabled:
            try:
                self.inbox = open_inbox(cfg.inbox, shared=self.shards > 1)
            except InboxError as exc:
                raise BindError(f"cannot open the inbox: {exc}") from None
        http_sock = listen_socket(cfg.http.bind, reuse_port=self.shards > 1)
        for sock in (self.xpub, self.zin):
            sock.setsockopt(zmq.LINGER, 0)
        self.xpub.setsockopt(zmq.SNDHWM, cfg.bus.hwm)
        self.zin.setsockopt(zmq.MAXMSGSIZE, cfg.http.max_body + 65536)
        # (the port's monitor must exist before the connect, or the first handshake is missed)
        self.busport = BusPort(loop, self.xpub, self._on_fence, self._on_bus, shard=self.shard)
        try:
            self.xpub.connect(self.endpoints.bus_in)
            if cfg.ingress.zmq_bind:
                self._bind_ingress(cfg.ingress.zmq_bind)
        except zmq.ZMQError as exc:
            http_sock.close()
            raise BindError(f"cannot bind a ZeroMQ endpoint: {exc}") from None
        except BindError:
            http_sock.close()
            raise
        store = SessionTable(Router.ttl(cfg), cfg.router.sweep_interval, loop.time())
        self.backend = Backend(cfg, self.receiver)
        router = self.router = Router(
            cfg,
            store,
            self.busport,
            self.receiver,
            loop,
            host=server_name(cfg),
            expect=self.expect,
            inbox=self.inbox,
            backend=self.backend,
        )
        hosts: RedisFabric | None = None
        if self.redis is not None:
            cluster = self.cluster = HostCluster(
                cfg,
                router,
                self.redis,
                server_name(cfg),
                self.endpoints.incarnation,
                shard=self.shard,
                shards=self.shards,
            )
            hosts = RedisFabric(cluster, cluster.crosshost, store, router.streams, loop)
            router.fabric = hosts
        if self.shards > 1:
            try:
                await self._link_shards(router, hosts)
            except OSError as exc:
                http_sock.close()
                raise BindError(f"cannot listen for the other router shards: {exc}") from None
        if self.cluster is not None:
            try:
                await self.cluster.start()
            except (ClusterError, RedisError, OSError) as exc:
                http_sock.close()
                raise BindError(str(exc)) from None
        api = PushApi(cfg, router)
        self.http = HttpState(cfg, api, loop)
        self.ingress = Ingress(router, cfg.http.max_body, cfg.ingress.api_key)
        console = self.console = self._observe(api)
        link = self.endpoints.router_of(self.shard)
        try:
            self._servers.append(await stream.serve(loop, link, lambda: WorkerConn(router)))
        except OSError as exc:
            http_sock.close()
            raise BindError(f"cannot listen for workers on {link}: {exc}") from None
        self._http_server = await loop.create_server(self._http_protocol, sock=http_sock, backlog=4096)
        self.busport.start()
        pushes = SocketReader(loop, self.zin, self.zin.recv_multipart, self._on_ingress)
        pushes.start()
        self._readers.append(pushes)
        rc = cfg.router
        self._timers = [
            _Every(loop, rc.sweep_interval, router.sweep),
            _Every(loop, rc.online_interval, router.send_room_counts),
            _Every(loop, TICK, router.tick),
            _Every(loop, 1.0, self.http.tick),
            _Every(loop, 1.0, console.tick),
        ]
        if self.peers is not None:
            peers = self.peers
            self._timers.append(_Every(loop, TICK, lambda: peers.tick(loop.time())))
        if self.shard == 0:  # (one trim per host: the inbox is shared by the shards)
            self._timers.append(
                _Every(loop, TRIM_EVERY, lambda: router.requests.spawn(router.streams.trim()))
            )
        if self.cluster is not None:
            cluster = self.cluster
            self._timers.append(_Every(loop, max(1.0, router.session_ttl / 3), cluster.heartbeat))
            self._timers.append(_Every(loop, rc.online_interval, cluster.refresh_online))
            self._lease_timer = _Every(loop, cfg.cluster.lease_interval, cluster.renew_lease)
            self._timers.append(self._lease_timer)
        signals.install(loop, self._stop.set, self._stop.set, SIGHUP=self.reload, SIGUSR2=router.push.stop)
        log.info(
            "%s up: http %s, zmq ingress %s, workers link at %s",
            self.name,
            cfg.http.bind,
            cfg.ingress.zmq_bind or "off",
            link,
        )
        warn_if_open(cfg)

    async def _link_shards(self, router: Router, hosts: RedisFabric | None) -> None:
        shards = ShardFabric(router, self.shard, self.shards)
        fabric: ShardFabric | ShardRedisFabric = shards
        if hosts is not None:
            assert self.cluster is not None
            fabric = ShardRedisFabric(shards, hosts, self.cluster)
        router.fabric = fabric
        peers = self.peers = ShardPeers(
            self.shard,
            self.shards,
            self.endpoints,
            self.loop,
            fabric.serve,
            self.cfg.router.push_timeout,
            linked=fabric.refile,
            gone=fabric.shard_gone,
        )
        fabric.peers = peers
        await peers.start()

    @property
    def name(self) -> str:
        """``router``, or ``router 2`` when there are several shards (log lines)."""
        return f"router {self.shard}" if self.shards > 1 else "router"

    def _bind_ingress(self, endpoint: str) -> None:
        """Bind the ZeroMQ ingress. Several shards share its tcp port: each makes its own
        SO_REUSEPORT listening socket and hands it to libzmq (ZMQ_USE_FD, libzmq >= 4.2), which
        accepts on it (and closes it with the ZeroMQ socket). ``[ingress] zmq_bind`` is tcp://
        then (the config refuses anything else with shards > 1)."""
        addr = zmq_tcp_address(endpoint)
        if self.shards <= 1 or addr is None:
            self.zin.bind(endpoint)
            return
        fd = listen_socket(addr, reuse_port=True).detach()
        try:
            self.zin.setsockopt(zmq.USE_FD, fd)
            self.zin.bind(endpoint)
        except zmq.ZMQError:
            os.close(fd)
            raise
        finally:
            self.zin.setsockopt(zmq.USE_FD, -1)  # (a later bind makes its own socket again)

    def _observe(self, api: PushApi) -> Console:
        """``/metrics`` and ``/console``, served (and protected) like the push API."""
        assert self.router is not None
        sources = Sources(
            self.router,
            WorkerTotals(self.router),
            self.http,
            self.busport,
            self.ingress,
            StatusReader(path_in(self.endpoints.run_dir)),
        )
        fabric = self.router.fabric
        if not isinstance(fabric, ShardFabric | ShardRedisFabric):
            return install(api, sources)
        views = fabric.views
        console = install(api, sources, self.shard, views.metrics, views.host_pushes)
        fabric.views.exposition = console.exposition
        return console

    def _http_protocol(self) -> HttpProtocol:
        assert self.http is not None
        return HttpProtocol(self.http)

    def _on_fence(self, worker: str, fence: int) -> None:
        assert self.router is not None
        self.router.on_bus_fence(worker, fence)

    def _on_bus(self, connected: bool) -> None:
        assert self.router is not None
        self.router.bus_changed(connected)

    def _on_ingress(self, frames: list[bytes]) -> None:
        assert self.ingress is not None
        self.ingress.on_message(frames, self._reply)

    def _reply(self, frames: list[bytes]) -> None:
        try:
            self.zin.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.info("cannot answer a ZeroMQ push client: %s", exc)

    # -- reload ---------------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP from the master: apply the re-read configuration in place."""
        try:
            new = config_mod.load(self.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        if new.router.shards != self.shards:
            log.error(
                "reload refused, keeping the running config: [router] shards %d -> %d needs a restart",
                self.shards,
                new.router.shards,
            )
            return
        new, _ = pin_bus_keys(self.cfg, new)
        old, self.cfg = self.cfg, new
        assert self.router is not None and self.http is not None and self.ingress is not None
        if new.router.receive_hook != old.router.receive_hook:
            try:
                old_receiver, self.receiver = self.receiver, Receiver(load_hook(new.router.receive_hook))
                if old_receiver is not None:  # its counts go on (metrics)
                    self.receiver.calls, self.receiver.failed = old_receiver.calls, old_receiver.failed
                self.router.requests.receive = self.receiver
                if self.backend is not None:
                    self.backend.receiver = self.receiver
            except HookError as exc:
                log.error("reload keeps the old receive hook: %s", exc)
        if new.http.bind != old.http.bind:
            self._rebind_http(old, new)
        if new.ingress.zmq_bind != old.ingress.zmq_bind:
            self._rebind_ingress(old, new)
        self.router.reconfigure(new)
        self.router.workers.host = server_name(new)
        self.http.reconfigure(new)
        self.http.api.cfg = new
        self.ingress.max_body = new.http.max_body
        self.ingress.api_key = new.ingress.api_key
        warn_if_open(new)
        rc = new.router
        for timer, interval in zip(self._timers, (rc.sweep_interval, rc.online_interval), strict=False):
            timer.interval = interval
        if self.cluster is not None and self._lease_timer is not None:
            self.cluster.reconfigure(new)
            self._lease_timer.interval = new.cluster.lease_interval
        mlog.set_level(new.log.level)
        log.info("%s reloaded %s in place", self.name, new.source)

    def _rebind_http(self, old: Config, new: Config) -> None:
        try:
            sock = listen_socket(new.http.bind, reuse_port=self.shards > 1)
        except BindError as exc:
            log.error("reload keeps the push API on %s: %s", old.http.bind, exc)
            self.cfg = dataclasses.replace(new, http=dataclasses.replace(new.http, bind=old.http.bind))
            return
        self.loop.create_task(self._serve_http(sock))
        log.info("push API moved from %s to %s", old.http.bind, new.http.bind)

    async def _serve_http(self, sock: socket.socket) -> None:
        old, self._http_server = self._http_server, None
        if old is not None:
            old.close()
        self._http_server = await self.loop.create_server(self._http_protocol, sock=sock, backlog=4096)

    def _rebind_ingress(self, old: Config, new: Config) -> None:
        try:
            if old.ingress.zmq_bind:
                self.zin.unbind(old.ingress.zmq_bind)
            if new.ingress.zmq_bind:
                self._bind_ingress(new.ingress.zmq_bind)
        except (zmq.ZMQError, BindError) as exc:
            log.error("reload cannot move the ZeroMQ ingress to %s: %s", new.ingress.zmq_bind, exc)
            return
        log.info(
            "ZeroMQ ingress moved from %s to %s", old.ingress.zmq_bind or "off", new.ingress.zmq_bind or "off"
        )

    # -- serve and stop ------------------------------------------------------------------------------
    async def serve(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        for server in [*self._servers, self._http_server]:
            if server is not None:
                server.close()
        if self.http is not None:
            self.http.close_all()
        for timer in self._timers:
            timer.cancel()
        for reader in self._readers:
            reader.stop()
        if self.busport is not None:
            self.busport.close()
        if self.peers is not None:
            await self.peers.close()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.backend is not None:
            await self.backend.close()
        elif self.receiver is not None:
            await self.receiver.close()
        if self.inbox is not None:
            await self.inbox.close()
        if self.redis is not None:
            await self.redis.aclose()
        requests = self.http.requests if self.http is not None else 0
        zmq_requests = self.ingress.requests if self.ingress is not None else 0
        log.info("%s stopped (%d http requests, %d zmq pushes)", self.name, requests, zmq_requests)

    def close(self) -> None:
        for sock in (self.xpub, self.zin):
            sock.close(linger=0)
        self.ctx.destroy(linger=0)


async def _main(cfg: Config, endpoints: Endpoints, path: str | None, expect: int, shard: int) -> int:
    process = RouterProcess(cfg, endpoints, path, expect, shard)
    try:
        try:
            await process.start()
        except (HookError, BindError) as exc:
            log.error("%s cannot start: %s", process.name, exc)
            return EXIT_BOOT_ERROR
        await process.serve()
        await process.stop()
        return 0
    finally:
        process.close()


def run_router(
    cfg: Config, endpoints: Endpoints, path: str | None = None, expect: int = 0, shard: int = 0
) -> int:
    """Process entry (forked by the master): router shard ``shard`` of ``[router] shards``."""
    return uvloop.run(_main(cfg, endpoints, path, expect, shard))
