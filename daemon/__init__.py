"""The daemon: the agent process that wires connectors, models and rules together.

Owns the wiring (app.py: one TaskGroup, ordered stop), the one settings tree assembled from
every part's section (settings.py), the command line (cli.py) and the demo (demo.py), and
the subpackages of the agent's own machinery:
- flow/: frames, gate, window statistics, the lanes and routing by profile, and the
  pipeline (a reading's path);
- learning/: assets that learn their own model on the gateway, and `edge-agent model`;
- outbox/: the bounded on-disk queue of everything sent upstream;
- retention/: raw rings, evidence around anomalies, compressed history;
- bundles/: signed bundles and fleet updates;
- service/: systemd notify and watchdog, metrics and health over HTTP, pressure, install.

May import: core, connectors, models, rules. Only app.py, cli.py and demo.py know all the
subpackages; demo.py (and only it, through the command line) imports the simulator.
"""

# First, before any module of the daemon imports structlog: core.logs imports it without rich.
from edge_agent.core import logs as _logs  # noqa: F401
