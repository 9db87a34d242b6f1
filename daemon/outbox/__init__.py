"""The outbox: every message bound upstream waits here until the broker acknowledged it.

Owns the bounded queue and its delivery loop (queue.py: priority classes, drop policy,
counters, replay after reconnect or restart), the window of messages in flight while the
file is healthy (window.py), the SQLite file under it (store.py: WAL, bounded in pages, one
thread at a time), the bounded memory queue of the degraded mode and its drops (memory.py),
what is moved aside (aside.py) and the section that configures them (settings.py).

May import: core (readings, errors, metrics, logs, the `Sink` Protocol), and connectors only
where a connector's error must be told apart. Never models, rules, the other daemon
subpackages, the app or the CLI.
"""
