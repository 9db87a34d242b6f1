"""The plant simulator: pumps and motors with injected faults, for the demo, tests and training.

Owns the pump model with its signals and faults (plant.py), the scenario sets for training and
evaluation (scenarios.py), an OPC UA server that serves a simulated plant (opcua_server.py)
and a real mosquitto on a free port (broker.py).

May import: core only (today it needs none of it). Nothing of the agent's runtime imports
the simulator; only the demo, the training code, tests and benchmarks do.
"""
