"""Counters shared by the processes of one host and the pieces that read them.

Workers count in plain integers on objects they already hold and report the
totals to the router with their liveness reports; the router adds them up
(keeping what a worker that left had counted) and renders the Prometheus text
format and the console's snapshots. Nothing here runs on a per-delivery path.
"""
