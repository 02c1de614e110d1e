"""The master: a gunicorn-style arbiter that forks, supervises, reloads and drains.

How this works:

- ``run_master`` checks that the client ports are free (exit 3 naming the port if
  not), picks the run directory, then forks the bus, the router (one process per
  ``[router] shards``) and one worker per slot. The master itself never creates an
  event loop, a thread or a ZeroMQ context, before or after forking: every child
  starts clean.
- Signal handlers only queue the signal and write a byte to a wake-up pipe. One
  synchronous loop (:mod:`mpim.master.run`) sleeps in ``select`` on that pipe and on
  each worker's status pipe, then feeds the :class:`~mpim.master.arbiter.Arbiter`:
  status lines (``ready``, ``beat``, ``told N``), queued signals (``handle_hup``,
  ``handle_term``...), reaped children, and a tick for deadlines.
- The arbiter decides; a host object forks and signals. A dead child is restarted
  in its slot with exponential backoff for repeated quick deaths; a worker that
  stops beating is SIGKILLed and replaced; a worker that exits 3 during the first
  boot stops the master instead of fork-looping.
- SIGHUP starts a new generation of workers with the re-read config; once all are
  bound, the old generation retires (SIGUSR2: stop accepting, keep serving until
  the clients leave or ``reload_drain_timeout``). SIGTERM drains workers, then the
  router, then the bus.
"""

from __future__ import annotations

from mpim.config import Config


def run_master(cfg: Config, path: str | None) -> int:
    """``mpim master``: runs until stopped; returns the exit code."""
    from mpim.master.run import run

    return run(cfg, path)
