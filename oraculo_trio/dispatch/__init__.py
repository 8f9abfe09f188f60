"""Notification delivery: sinks (stdout, log, webhook) and the dispatcher task."""
