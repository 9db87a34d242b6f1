"""Connectors: one module per protocol, turning the outside world into readings."""
