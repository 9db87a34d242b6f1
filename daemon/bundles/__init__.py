"""Bundles and fleet updates: what the agent thinks with, signed, verified, installed.

Owns the bundle manifest and its one validator (manifest.py), signatures and checks of a
bundle directory (bundle.py), laying a bundle out (build.py), the state directory with its
`current` link, journal and rollback (store.py), reading job messages (jobs.py), downloads
(fetch.py), probation (probation.py: rule packs compile, every model artifact reproduces its
golden output in a bounded child process, probe.py), the update service that runs jobs from
MQTT (updates.py), the operator's `edge-agent bundle` commands (cli.py) and the section that
configures updates (settings.py).

May import: core; the model and rules settings sections (a bundle replaces them); models
(manifests and backends) and rules (packs) for checks and probation, imported where used.
cli.py, being part of the command line, also reads the whole settings tree and opens an
MQTT client for `bundle publish`. Never the other daemon subpackages, the app or the
simulator.
"""
