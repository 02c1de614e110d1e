"""Which processes a configuration change concerns (SIGHUP reload).

Every valid reload starts a new generation of workers, so every worker setting
applies to new connections. The router is restarted only when a section it reads
changed. The bus is never restarted: its endpoints live in ``[server] run_dir``,
which cannot change while the master runs.
"""

from __future__ import annotations

import dataclasses

from mpim.config import Config

# Sections the router process reads; a change restarts it. Sections that do not
# exist (yet) compare equal, so the router/ingress work can list its own here.
ROUTER_SECTIONS = ("http", "router", "ingress", "redis")


def changed_sections(old: Config, new: Config) -> list[str]:
    """``["[auth]", "[tcp]"]``: the sections whose values differ."""
    return [
        f"[{f.name}]"
        for f in dataclasses.fields(Config)
        if f.name != "source" and getattr(old, f.name) != getattr(new, f.name)
    ]


def router_changed(old: Config, new: Config) -> bool:
    return any(getattr(old, name, None) != getattr(new, name, None) for name in ROUTER_SECTIONS)


def run_dir_changed(old: Config, new: Config) -> bool:
    return old.server.run_dir != new.server.run_dir
