"""Which of a worker's reported stats (``Alive.stats``) is which Prometheus metric.

The worker's keys are its own short names (:meth:`mpim.worker.hub.Hub.counters`,
:mod:`mpim.worker.meter`); each table row gives the metric, its help text, the
extra label and, per label value, the worker key it reads.
"""

from __future__ import annotations

# Worker stats that are levels, not counts: never carried over from a worker that left.
GAUGE_KEYS = frozenset(
    {
        "connections",
        "online",
        "rooms",
        "conns_tcp",
        "conns_ws",
        "conns_gozero",
        "link_buffer",
        "now_ms",
        "room_window_us",
        "room_busy_pct",
    }
)

# (metric, help, label, [(worker stat key, label value)]) -- the worker's counters
WORKER_COUNTERS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        "mpim_connects",
        "Client connections accepted, by transport (those refused over the limit included)",
        "transport",
        [("opened_tcp", "tcp"), ("opened_ws", "ws")],
    ),
    (
        "mpim_gozero_upgrades",
        "WebSocket connections that upgraded on [gozero] path (also in mpim_connects, transport ws)",
        "",
        [("opened_gozero", "")],
    ),
    (
        "mpim_gozero_frames",
        "Frames from go-zero clients, by frameType (bad: not a go-zero frame, closed)",
        "type",
        [("gozero_data", "data"), ("gozero_pings", "ping"), ("gozero_acks", "ack"), ("gozero_bad", "bad")],
    ),
    (
        "mpim_gozero_error_frames",
        "Error frames (frameType 9) sent to go-zero clients",
        "",
        [("gozero_errors", "")],
    ),
    (
        "mpim_disconnects",
        "Client connections closed, by reason (client = the client closed it)",
        "reason",
        [
            ("client_closed", "client"),
            ("auth_fail", "auth_failed"),
            ("auth_denied", "auth_denied"),
            ("handshake_timeout", "handshake_timeout"),
            ("register_timeout", "register_timeout"),
            ("heartbeat_timeout", "heartbeat_timeout"),
            ("slow_cut", "slow_consumer"),
            ("kicked", "kicked"),
            ("drained", "drained"),
            ("rejected", "protocol_error"),
            ("limit_closed", "limit"),
            ("ip_closed", "ip_limit"),
            ("ack_cut", "ack_timeout"),
            ("rate_cut", "upstream_rate"),
            ("replay_cut", "upstream_seq"),
        ],
    ),
    (
        "mpim_auth",
        "Auth frames, by result (denied: the router refused the key)",
        "result",
        [("auth_ok", "ok"), ("auth_fail", "failed"), ("auth_denied", "denied")],
    ),
    (
        "mpim_connections_refused",
        "Connections refused over [server] max_connections (on every listener, before or after TLS)",
        "",
        [("refused", "")],
    ),
    (
        "mpim_ip_limit",
        "Connections refused by the per-IP limits, by limit",
        "limit",
        [("limit_conns", "connections"), ("limit_rate", "rate"), ("limit_banned", "banned")],
    ),
    ("mpim_ip_bans", "Client IPs banned after repeated auth failures", "", [("bans", "")]),
    (
        "mpim_handshake_failures",
        "TLS handshakes that failed, PROXY protocol headers refused",
        "kind",
        [("tls_failed", "tls"), ("proxy_refused", "proxy")],
    ),
    (
        "mpim_reliable_pushes",
        "Pushes written to ack clients with their stream seq",
        "",
        [("reliable_sent", "")],
    ),
    ("mpim_worker_resumes", "Resumes (op 20) the workers answered", "", [("resumes", "")]),
    (
        "mpim_reliable_catchups",
        "Catch-up reads of a resumed client's stream (pushes left in the inbox while its window was full)",
        "",
        [("catchups", "")],
    ),
    (
        "mpim_acks_clamped",
        "Acks (op 18) above what the connection was sent (clamped), or before anything was sent (ignored)",
        "",
        [("acks_clamped", "")],
    ),
    (
        "mpim_router_calls_failed",
        "Messages and resumes the router did not answer: link down, or past [upstream] timeout",
        "reason",
        [("link_chat_refused", "link_down"), ("link_call_timeouts", "timeout")],
    ),
    (
        "mpim_upstream_frames",
        "Client messages handled by the workers' upstream service; unconfirmed: rigor acks that expired",
        "result",
        [("messages", "handled"), ("unconfirmed", "unconfirmed")],
    ),
    (
        "mpim_bad_input",
        "Bad client input (protocol errors, malformed Sub/Unsub lists)",
        "",
        [("bad_input", "")],
    ),
    (
        "mpim_worker_pushes",
        "Pushes the workers took, by kind (room: frames flushed to a room's members)",
        "kind",
        [("room_frames", "room"), ("keys_pushes", "keys"), ("all_pushes", "all")],
    ),
    (
        "mpim_deliveries",
        "Pushed frames written to client connections, by kind",
        "kind",
        [("room_deliveries", "room"), ("keys_deliveries", "keys"), ("all_deliveries", "all")],
    ),
    ("mpim_bytes_received", "Bytes read from client connections", "", [("bytes_in", "")]),
    (
        "mpim_bytes_sent",
        "Pushed bytes written to client connections, framing included (protocol replies are not counted)",
        "kind",
        [("room_bytes", "room"), ("keys_bytes", "keys"), ("all_bytes", "all")],
    ),
    (
        "mpim_frames_dropped",
        "Pushed frames not written, by reason",
        "reason",
        [
            ("keys_offline", "offline"),
            ("keys_not_watching", "not_watching"),
            ("room_absent", "no_member"),
            ("room_gone", "room_emptied"),
            ("link_bad_messages", "bad_bus_message"),
        ],
    ),
    (
        "mpim_slow_consumer_dropped_bytes",
        "Bytes that were queued for slow consumers when they were cut",
        "",
        [("slow_cut_bytes", "")],
    ),
    ("mpim_link_syncs", "Full session lists the workers sent the router", "", [("link_syncs", "")]),
    (
        "mpim_link_dropped_reports",
        "Session events a worker could not send (link down; the next full list repairs it)",
        "",
        [("link_dropped_reports", "")],
    ),
    ("mpim_bus_received", "Bus messages the workers received", "", [("link_bus_messages", "")]),
]

WORKER_GAUGES: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        "mpim_connections",
        "Open client connections, by transport (gozero: on [gozero] path; ws: the other WebSocket ones)",
        "transport",
        [("conns_tcp", "tcp"), ("conns_ws", "ws"), ("conns_gozero", "gozero")],
    ),
    ("mpim_online", "Authenticated client connections", "", [("online", "")]),
    ("mpim_worker_rooms", "Rooms with members on the worker", "", [("rooms", "")]),
    (
        "mpim_room_window_microseconds",
        "The room batcher's current window (adaptive: widened while room writes keep the worker busy)",
        "",
        [("room_window_us", "")],
    ),
    (
        "mpim_room_busy_percent",
        "Share of the last period the worker spent writing room flushes (smoothed), percent",
        "",
        [("room_busy_pct", "")],
    ),
]

# The router's reliable-delivery numbers (UserStreams.stats): (metric, help, stat key)
STREAM_COUNTERS = [
    ("mpim_inbox_appends", "Messages appended to user inboxes", "appends"),
    ("mpim_acks", "Client acks the router applied to device cursors", "acks"),
    ("mpim_replays", "Messages replayed on resume", "replays"),
    ("mpim_resumes_unrecovered", "Resumes that could not recover every message", "unrecovered"),
    ("mpim_chats", "Private chat messages stored", "chats"),
    ("mpim_chat_duplicates", "Private chat messages recognized as retries (not delivered twice)", "dups"),
    (
        "mpim_inbox_write_failures",
        "Inbox writes that failed (the push or message was refused, -503)",
        "write_failures",
    ),
    (
        "mpim_inbox_ack_failures",
        "Acks the inbox could not apply (the device cursor did not move)",
        "ack_failures",
    ),
]
# The embedded inbox store's own numbers (SqliteInbox.stats; absent with Redis): (metric, help, stat key)
INBOX_COUNTERS = [
    ("mpim_inbox_commits", "Inbox write transactions committed (group commit: many writes each)", "commits"),
    ("mpim_inbox_checkpoints", "Inbox log checkpoints run on the checkpoint thread", "checkpoints"),
    (
        "mpim_inbox_checkpoint_failures",
        "Inbox log checkpoints that failed (the log grows until one works)",
        "checkpoint_failures",
    ),
]
# The router's multi-host numbers (HostCluster.stats, all 0 on one host): (metric, help, stat key)
CLUSTER_COUNTERS = [
    ("mpim_redis_errors", "Redis failures seen by the router (the host then serves alone)", "errors"),
    ("mpim_cluster_published", "Pushes published to other hosts over Redis", "published"),
    ("mpim_cluster_received", "Pushes received from other hosts over Redis", "received"),
    ("mpim_cluster_rebuilds", "Directory rebuilds after Redis came back", "rebuilds"),
    (
        "mpim_cluster_lease_lapses",
        "Times this host found its lease lapsed (it was dead to the others)",
        "lapses",
    ),
]
