"""Moved to edge_agent.simulator.broker (the demo uses it too); kept while helpers migrate."""

from edge_agent.simulator.broker import LIMITS, MOSQUITTO, Broker, free_port, running_broker

__all__ = ["LIMITS", "MOSQUITTO", "Broker", "free_port", "running_broker"]
