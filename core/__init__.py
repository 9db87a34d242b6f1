"""The core: the vocabulary every other part speaks.

Owns `Reading` and `Outgoing` (readings.py), the error tree (errors.py), the Prometheus
metrics (metrics.py), structured logging (logs.py), the settings base and the sections
shared by several parts (settings.py), and the `Source`/`Sink` protocols (ports.py).

May import: nothing of edge_agent outside `edge_agent.core`. Connectors, models, rules and
the daemon import the core; the core never imports them back (tests/test_layers.py).
"""
