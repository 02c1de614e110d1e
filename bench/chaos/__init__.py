"""``python -m bench chaos``: mpim's guarantees proven the Jepsen way.

A workload (:mod:`.workload`: reliable devices on the SDK and on a raw socket, goim clients
in rooms, a backend pushing over HTTP and ZeroMQ, private chat) and a nemesis
(:mod:`.nemesis`: kills, pauses, reloads, restarts, Redis and network faults through
:mod:`.proxy`) run together against real ``mpim master`` processes (:mod:`.topology`,
:mod:`.servers`); every operation is one line of the history (:mod:`.history`); the checker
(:mod:`.checker`, pure) judges the whole history against the contract of ARCHITECTURE.md
and the README, and :mod:`.report` writes the summary and the plot.
"""
