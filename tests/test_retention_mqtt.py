"""Evidence requests over a real mosquitto: the record, or an error reply, never silence (5).

The test plays the integrator: one paho client subscribes to the request topic and hands
each payload to `Retention.handle_request` (on the test's thread: Retention is not
thread-safe), then publishes the reply; another plays the engineer asking for evidence.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings
from edge_agent.simulator.broker import Broker


class Client:
    """A paho client on its own thread that queues what arrives on one filter."""

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(bytes(msg.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def next(self) -> bytes:
        return self.inbox.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_requests_over_a_real_broker_get_replies(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    settings = RetentionSettings(
        ring_seconds=60,
        ring_rate_hz=1,
        evidence_pre_s=10,
        evidence_post_s=10,
        evidence_ttl_s=600,
        request_topic=f"{topic_root}/{{gateway}}/evidence/request",
        response_topic=f"{topic_root}/{{gateway}}/evidence/response",
    )
    now = [1.0e6]
    ret = Retention(settings, tmp_path, gateway="gw9", clock=lambda: now[0])
    ts = 1.7e9 + np.arange(60.0)
    ret.ingest_frame("pump-1", ["flow"], ts, np.linspace(10, 20, 60)[:, None])
    eid = ret.trigger("pump-1", float(ts[30]), "test")

    agent = Client(broker, ret.request_topic)
    engineer = Client(broker, ret.response_topic)
    try:

        def ask(body: dict[str, Any]) -> dict[str, Any]:
            engineer.publish(ret.request_topic, json.dumps(body).encode())
            reply = ret.handle_request(agent.next())
            agent.publish(reply.topic, reply.payload)
            answer: dict[str, Any] = json.loads(engineer.next())
            return answer

        unknown = ask({"id": "no-such-id", "correlation": "1"})
        assert (unknown["status"], unknown["error"], unknown["correlation"]) == (
            "error",
            "unknown",
            "1",
        )
        found = ask({"id": eid, "correlation": "2"})
        assert found["status"] == "ok"
        assert found["evidence"]["signals"]["flow"]["ts"] == ts[20:41].tolist()
        now[0] += 601
        expired = ask({"id": eid, "correlation": "3"})
        assert (expired["status"], expired["error"]) == ("error", "expired")
    finally:
        agent.close()
        engineer.close()
