"""Pure logic: no trio, no I/O. Functions take events and ``now`` and return values."""
