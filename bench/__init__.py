"""mpim's benchmark suite: ``python -m bench <scenario> ...`` (see bench/README.md)."""
