"""The bus: a ZeroMQ XSUB/XPUB forwarder in its own process.

How this works: publishers (the router and its ingress) connect PUB sockets to
the XSUB side; workers connect SUB sockets to the XPUB side. ``zmq.proxy``
forwards messages down and subscriptions up, so a message on a room topic only
travels to workers that subscribed to that room. (Envelope and topic codec: to
be added with the router/bus work.)
"""

from __future__ import annotations

import logging
import signal

import zmq

from mpim.config import Config
from mpim.runtime import Endpoints

log = logging.getLogger("mpim.bus")


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def run_bus(cfg: Config, endpoints: Endpoints) -> int:
    """Process entry: bind both sides and forward until SIGTERM."""
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    try:
        xsub.bind(endpoints.bus_in)
        xpub.bind(endpoints.bus_out)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, _stop)
        log.info("bus forwarding %s -> %s", endpoints.bus_in, endpoints.bus_out)
        try:
            zmq.proxy(xsub, xpub)
        except _Stop:
            log.info("bus stopped")
        return 0
    finally:
        xsub.close(linger=0)
        xpub.close(linger=0)
        ctx.destroy(linger=0)
