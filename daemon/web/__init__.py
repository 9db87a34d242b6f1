"""What the operator sees: the agent's live page and its incident reports.

Owns the read-only observer the pipeline feeds (observer.py: per-asset rings of scores,
the recommendations as they are published, incidents and their timelines), the incident
journal on disk (journal.py), the page's routes (page.py), the self-contained incident
report (report.py), the `edge-agent report` command (cli.py), and the page's static files
(static/, with uPlot vendored under its MIT licence: no build step, nothing fetched at run
time).

May import: core, rules' recommendation schema id, retention's evidence records, and the
service's HTTP response type. The app wires it; nothing in the flow imports it.
"""
