"""Retention: raw history kept selectively, inside fixed byte budgets.

Owns the per-signal raw rings (ring.py) and per-signal state (series.py), the evidence
records frozen around anomalies and their store on disk (evidence.py), deadband and
swinging-door compression (compression.py), the compressed history in memory (history.py),
the wire formats of evidence requests, replies and digests (messages.py), the keeper that
holds them to the budgets and TTLs (keeper.py) and its section (settings.py).

May import: core only. Never the other daemon subpackages, connectors, models, rules, the
app or the CLI; the pipeline reaches it through a Protocol and the app wires it.
"""
