"""Learning on the gateway: each asset of a `learn` profile learns its own model.

Owns the recording of an asset's rows of normal operation on its grid while it learns
(recorder.py), the fit in a worker process of its own, outside the event loop, with lowered
priority and capped memory (fitter.py), the learned models and recordings kept in the state
directory and loaded at start (store.py), the per-asset states, the relearn command and the
retained state topic (learner.py, state.py), how the app connects them (wiring.py), the
`edge-agent model` commands and what they print (cli.py, report.py) and the offline
evaluation that replays CSV files through the agent's own lanes (evaluate.py, scoring.py).

May import: core, connectors, models (the worker only as a process, except in cli.py and
evaluate.py, which fit in-process), rules, and daemon.flow (frames and lanes). The app wires
the learner to the pipeline and the uplink; only cli.py reads the app (the topic prefix a
relearn command goes to, as the agent computes it).
"""
