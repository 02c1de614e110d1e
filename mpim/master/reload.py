"""Which processes a configuration change concerns (SIGHUP reload).

Every valid reload starts a new generation of workers, so every worker setting
applies to new connections. When a section the router reads changed, the master
sends it SIGHUP and it applies the new settings in place (it is never restarted
by a reload, so its tables never have a gap). The bus is never restarted, and its
endpoints (``[server] run_dir``, ``[bus] in_endpoint`` / ``out_endpoint``,
``[router] endpoint``) cannot change while the master runs: a reload keeps the
running values and says so.
"""

from __future__ import annotations

import dataclasses

from mpim.config import Config

# Sections the router process reads; a change is applied in place. Names that are not
# sections (yet) compare equal, so new router settings only need adding here.
# The router also reads the client ports, whether WSS listens and the heartbeat
# settings (nodes/weighted, session expiry) and the server name.
ROUTER_SECTIONS = ("http", "router", "ingress", "nodes", "bus", "tcp", "websocket", "protocol", "log", "tls")
# (section, key) pairs that locate the bus and the router's report socket: pinned
# to their running values (retiring workers keep using them).
BUS_KEYS = (
    ("server", "run_dir"),
    ("bus", "in_endpoint"),
    ("bus", "out_endpoint"),
    ("router", "endpoint"),
)


def changed_sections(old: Config, new: Config) -> list[str]:
    """``["[auth]", "[tcp]"]``: the sections whose values differ."""
    return [
        f"[{f.name}]"
        for f in dataclasses.fields(Config)
        if f.name != "source" and getattr(old, f.name) != getattr(new, f.name)
    ]


def router_changed(old: Config, new: Config) -> bool:
    if old.server.name != new.server.name:
        return True
    return any(getattr(old, name, None) != getattr(new, name, None) for name in ROUTER_SECTIONS)


def pin_bus_keys(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the bus location of ``old``, and the keys that were put back (``[bus] in_endpoint``)."""
    pinned: list[str] = []
    for section, key in BUS_KEYS:
        old_section, new_section = getattr(old, section, None), getattr(new, section, None)
        if old_section is None or new_section is None:
            continue
        if getattr(old_section, key) != getattr(new_section, key):
            pinned.append(f"[{section}] {key}")
            new_section = dataclasses.replace(new_section, **{key: getattr(old_section, key)})
            new = dataclasses.replace(new, **{section: new_section})
    return new, pinned
