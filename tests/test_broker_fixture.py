import socket

from edge_agent.simulator.broker import Broker


def test_broker_restarts_on_same_port(broker: Broker) -> None:
    port = broker.port
    broker.stop()
    broker.start()
    assert broker.port == port
    with socket.create_connection((broker.host, port), 1):
        pass
