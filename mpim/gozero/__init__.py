"""The go-zero chat server's protocol (JSON text frames), sans-I/O: :mod:`.frames` and :mod:`.chat`."""
