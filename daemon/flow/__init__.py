"""The flow of a reading: frames, gate, window statistics, and the pipeline that runs them.

Owns the fixed-rate frames and windows of each asset (frames.py), the cheap statistical gate
ahead of the model (gate.py), the statistics rules read from a window (stats.py), the
lanes (lanes.py: frames, gate, scorer and advisor for the assets one model serves, with a
learned model's per-asset baselines), the routing of each asset to its lane through its
profile (routing.py), the pipeline from ingest to outbox (pipeline.py: frames -> gate ->
scorer -> advisor -> outbox, with retention beside it) and the sections that configure
frames and gate (settings.py).

May import: core, models and rules. Of the other daemon subpackages only the outbox's
`Outbox` Protocol (for typing, as the app reads the pipeline's outbox); retention is reached
through the pipeline's own `Retention` Protocol. Never the app, the CLI or the simulator.
"""
