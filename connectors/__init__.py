"""Connectors: one module per protocol, turning the outside world into readings and back.

Owns the MQTT client (mqtt.py, with its socket driving in mqtt_socket.py and TLS in
mqtt_tls.py), MQTT ingest (mqtt_source.py, mapping.py), Sparkplug B ingest (sparkplug.py
over sparkplug_session.py; sparkplug_b_pb2.py is generated from sparkplug_b.proto), the
uplink and its sink (uplink.py), the Unified Namespace messages (uns.py), the OPC UA source
(opcua*.py), the registry of sources (registry.py) and the settings sections of all of them
(settings.py). Each source is a `core.ports.Source`, the uplink's sink a `core.ports.Sink`.

May import: `edge_agent.core` only; never the daemon, models or rules (tests/test_layers.py).
"""
