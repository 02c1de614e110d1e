"""The per-process server: adapters for TCP and WebSocket, buckets, rooms, channels."""
