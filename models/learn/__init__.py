"""Learned models: fit one machine's normal operation and write a model the agent runs.

Owns reading CSV files of normal operation onto a fixed-rate grid (csvdata.py), the fit
itself, numpy only: per-signal baseline, spread, tolerance floors by role and thresholds
(fit.py), writing the ONNX/TFLite artifacts and the manifest (export.py), one fitting job
from files or rows to a model directory (job.py) and the worker process the agent starts
per asset (worker.py). Writing a model needs the `learn` extra (onnx); fitting needs numpy.

May import: core and models only. The agent's event loop never imports this package; it
starts `python -m edge_agent.models.learn.worker` instead.
"""
