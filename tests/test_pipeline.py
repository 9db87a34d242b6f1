"""The pipeline's own bounds, on the real model and rule pack."""

from __future__ import annotations

from pathlib import Path

from edge_agent.core import metrics
from edge_agent.daemon.app import build_pipeline
from edge_agent.daemon.flow.pipeline import MAX_PENDING_REPLIES
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.settings import AgentSettings, Settings


def test_evidence_replies_waiting_for_the_outbox_are_bounded(tmp_path: Path) -> None:
    settings = Settings(agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"))
    retention = Retention.from_settings(settings, "gw")
    pipeline = build_pipeline(settings, retention)
    dropped = metrics.EVIDENCE_REQUESTS_DROPPED._value.get()
    for i in range(MAX_PENDING_REPLIES + 44):
        pipeline.answer_evidence_request(b'{"id": "no-such-id", "request": "%d"}' % i)
    assert len(pipeline._replies) == MAX_PENDING_REPLIES
    assert metrics.EVIDENCE_REQUESTS_DROPPED._value.get() == dropped + 44
    # Every reply kept answers its request on the response topic (an error: unknown id).
    assert {r.topic for r in pipeline._replies} == {retention.response_topic}
    retention.close()
