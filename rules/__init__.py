"""Rules: the advisor, turning window results into maintenance recommendations with rule packs.

Owns the rule pack format and its loading (pack.py: reading a file in packfile.py, building
its parts in build.py, what they are in parts.py, the JSON Schema in schemas/, the shipped
packs in packs/: default.yaml for the simulator's classifier, learned.yaml for learned
models, which reason over signal roles), conditions (conditions.py: a guard Python checks,
guards.py, AND a CEL expression), the window as conditions read it (window.py), checking a
pack against a model (check.py and the `edge-agent rules check` command, cli.py), the
advisor's state machine (engine.py), recommendations and their JSON form
(recommendation.py), safe text templates (templates.py) and the settings sections of rules
and assets (settings.py).

May import: `edge_agent.core`, and `edge_agent.models.manifest` (the command line reads a
model's signals, classes and roles from it; the window takes the role vocabulary); never
the daemon, connectors or simulator (tests/test_layers.py).
"""
