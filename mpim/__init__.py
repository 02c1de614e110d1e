"""mpim: a multiprocess, shared-nothing long-connection push server speaking goim's protocol."""

__version__ = "0.1.0"
