"""Retention on simulator data: evidence windows (3), restart, TTL, error replies (5), digests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.core.metrics import REGISTRY
from edge_agent.core.readings import Priority, Quality, Reading
from edge_agent.daemon.retention.compression import reconstruct
from edge_agent.daemon.retention.evidence import EvidencePendingError
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings
from edge_agent.simulator.plant import SIGNALS, SPAN, FaultSpec, Trace, simulate

PRE, POST = 45.0, 30.0


class Clock:
    def __init__(self, now: float = 1.0e6) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(**kw: Any) -> RetentionSettings:
    base: dict[str, Any] = {
        "ring_seconds": 120.0,
        "ring_rate_hz": 1.0,
        "evidence_pre_s": PRE,
        "evidence_post_s": POST,
        "evidence_ttl_s": 3600.0,
        "spans": dict(zip(SIGNALS, SPAN, strict=True)),
        "max_interval_s": 300.0,
    }
    return RetentionSettings(**(base | kw))


def _batches(traces: list[Trace], step: int = 20) -> list[list[Reading]]:
    """The readings as a connector would hand them on: several assets, interleaved."""
    out = []
    for k in range(0, traces[0].ts.size, step):
        batch = [
            Reading(tr.asset, sig, float(tr.ts[i]), float(tr.values[i, j]))
            for tr in traces
            for i in range(k, min(k + step, tr.ts.size))
            for j, sig in enumerate(SIGNALS)
        ]
        out.append(batch[::-1])  # order inside a batch must not matter
    return out


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("edge_readings_dropped_total", {"reason": reason}) or 0.0


def _reply(ret: Retention, payload: dict[str, Any] | bytes) -> dict[str, Any]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg = ret.handle_request(raw)
    assert msg.topic == ret.response_topic == "edge-agent/gw1/evidence/response"
    body: dict[str, Any] = json.loads(msg.payload)
    return body


@pytest.fixture
def fault_run(tmp_path: Path) -> tuple[Retention, Clock, Trace, str, float]:
    onset = 900.0
    fault = simulate("pump-7", 7, 1500, fault=FaultSpec("bearing_wear", onset))
    other = simulate("pump-8", 8, 1500)
    clock = Clock()
    ret = Retention(_settings(), tmp_path, gateway="gw1", clock=clock)
    t_fault = float(fault.ts[int(onset)])
    eid = ""
    for batch in _batches([fault, other]):
        ret.ingest(batch)
        if not eid and max(r.ts for r in batch) >= t_fault + 10:
            eid = ret.trigger("pump-7", t_fault, "bearing_wear score 7.2")
            with pytest.raises(EvidencePendingError, match="still recording"):
                ret.get(eid)
    return ret, clock, fault, eid, t_fault


def test_evidence_holds_every_raw_sample_of_its_window(
    fault_run: tuple[Retention, Clock, Trace, str, float],
) -> None:
    ret, _, fault, eid, t_fault = fault_run
    body = _reply(ret, {"id": eid, "correlation": "c-1"})
    assert body["status"] == "ok"
    assert body["correlation"] == "c-1"
    ev = body["evidence"]
    assert ev["asset"] == "pump-7"
    assert ev["complete"] is True
    assert set(ev["signals"]) == set(SIGNALS)
    window = (fault.ts >= t_fault - PRE) & (fault.ts <= t_fault + POST)
    assert window.sum() == PRE + POST + 1
    for j, sig in enumerate(SIGNALS):
        got = ev["signals"][sig]
        assert got["ts"] == fault.ts[window].tolist()
        assert got["value"] == fault.values[window, j].tolist()  # exact, not approximate
        assert got["quality"] == [0] * int(window.sum())


def test_evidence_survives_a_restart_then_expires(
    fault_run: tuple[Retention, Clock, Trace, str, float], tmp_path: Path
) -> None:
    ret, clock, _, eid, _ = fault_run
    before = ret.get(eid)
    ret.close()
    again = Retention(_settings(), tmp_path, gateway="gw1", clock=clock)
    after = again.get(eid)
    assert after._replace(signals={}) == before._replace(signals={})
    for sig, s in before.signals.items():
        assert np.array_equal(after.signals[sig].values, s.values)
    clock.now += 3600.0
    body = _reply(again, {"id": eid})
    assert body["status"] == "error"
    assert body["error"] == "expired"
    assert body["id"] == eid
    assert again.usage.evidence == 0


def test_unknown_pending_and_bad_requests_get_error_replies(tmp_path: Path) -> None:
    ret = Retention(_settings(), tmp_path, gateway="gw1", clock=Clock())
    body = _reply(ret, {"id": "0190-nope", "correlation": "q"})
    assert (body["status"], body["error"], body["correlation"]) == ("error", "unknown", "q")
    eid = ret.trigger("pump-1", 1.7e9, "test")
    assert _reply(ret, {"id": eid})["error"] == "pending"
    for bad in (b"not json", b'{"correlation": "x"}', b"[1, 2]"):
        body = _reply(ret, bad)
        assert (body["status"], body["error"]) == ("error", "bad_request")


def test_published_evidence_and_cut_records(tmp_path: Path) -> None:
    clock = Clock()
    ret = Retention(_settings(evidence_max_pending=1), tmp_path, gateway="gw1", clock=clock)
    trace = simulate("pump-2", 2, 400)
    first = ret.trigger("pump-2", float(trace.ts[100]), "first", publish=True)
    second = ret.trigger("pump-2", float(trace.ts[200]), "second", publish=True)
    assert ret.get(first).complete is False  # cut: only one record may wait
    for batch in _batches([trace]):
        ret.ingest(batch)
    assert ret.get(second).complete is True
    msgs = ret.take_evidence()
    assert [json.loads(m.payload)["id"] for m in msgs] == [first, second]
    assert all(m.priority == Priority.RECOMMENDATION for m in msgs)
    assert ret.take_evidence() == []


def test_a_trigger_after_its_window_freezes_at_once(tmp_path: Path) -> None:
    ret = Retention(_settings(), tmp_path, clock=Clock())
    trace = simulate("pump-3", 3, 300)
    ret.ingest_frame("pump-3", SIGNALS, trace.ts, trace.values)
    eid = ret.trigger("pump-3", float(trace.ts[250]), "late flag")
    ev = ret.get(eid)
    assert ev.complete
    assert ev.signals["flow"].ts.size == PRE + POST + 1


def test_digests_reconstruct_the_stream_within_the_deviation(tmp_path: Path) -> None:
    trace = simulate("pump-4", 4, 3 * 3600)
    ret = Retention(_settings(), tmp_path, gateway="gw1", clock=Clock())
    for k in range(0, trace.ts.size, 600):
        ret.ingest_frame("pump-4", SIGNALS, trace.ts[k : k + 600], trace.values[k : k + 600])
    partial = ret.take_digests()
    ret.close()
    msgs = partial + ret.take_digests()
    assert msgs
    assert all(m.priority == Priority.DIGEST for m in msgs)
    assert {m.topic for m in msgs} == {"edge-agent/gw1/digest/pump-4"}
    kept = 0
    for j, sig in enumerate(SIGNALS):
        parts = [json.loads(m.payload)["signals"].get(sig) for m in msgs]
        ts = np.concatenate([p["ts"] for p in parts if p])
        vs = np.concatenate([p["value"] for p in parts if p])
        deviation = SPAN[j] / 100
        assert all(p["deviation"] == pytest.approx(deviation) for p in parts if p)
        err = np.abs(reconstruct(ts, vs, trace.ts) - trace.values[:, j])
        assert err.max() <= deviation * (1 + 1e-9)
        assert np.diff(ts).max() <= 300.0
        kept += ts.size
    assert kept < trace.values.size  # it did compress


def test_learned_span_bounds_by_the_deviation_it_reports(tmp_path: Path) -> None:
    trace = simulate("pump-5", 5, 3600)
    ret = Retention(_settings(spans={}), tmp_path, clock=Clock())
    for k in range(0, trace.ts.size, 100):
        ret.ingest_frame("pump-5", SIGNALS, trace.ts[k : k + 100], trace.values[k : k + 100])
    ret.close()
    (msg,) = ret.take_digests()
    sig = json.loads(msg.payload)["signals"]["temperature"]
    err = np.abs(
        reconstruct(np.array(sig["ts"]), np.array(sig["value"]), trace.ts) - trace.values[:, 0]
    )
    assert 0 < sig["deviation"] <= np.ptp(trace.values[:, 0]) / 100 * (1 + 1e-9)
    assert err.max() <= sig["deviation"] * (1 + 1e-9)


def test_bad_quality_goes_to_the_ring_but_not_the_history(tmp_path: Path) -> None:
    ret = Retention(_settings(), tmp_path, clock=Clock())
    readings = [Reading("p", "flow", 1.0 + i, 50.0 + (i % 2) * 40, Quality.BAD) for i in range(60)]
    ret.ingest(readings)
    eid = ret.trigger("p", 30.0, "bad sensor")
    ret.close()
    assert ret.get(eid).signals["flow"].quality.tolist() == [2] * 60
    assert ret.take_digests() == []


def test_late_readings_and_signals_without_a_ring_are_counted(tmp_path: Path) -> None:
    # Room for one ring of 121 samples (120 s at 1 Hz, both ends), not two.
    ret = Retention(_settings(ring_bytes=2 * 121 * 17 - 1), tmp_path, clock=Clock())
    late, no_ring = _dropped("retention_not_increasing"), _dropped("retention_no_ring")
    ret.ingest([Reading("p", "flow", 10.0, 1.0), Reading("p", "flow", 10.0, 2.0)])
    ret.ingest([Reading("p", "flow", 9.0, 1.0), Reading("p", "vibration", 11.0, 1.0)])
    assert _dropped("retention_not_increasing") - late == 2
    assert _dropped("retention_no_ring") - no_ring == 1
    assert ret.usage.ring == 121 * 17


def test_settings_refuse_windows_the_ring_cannot_hold() -> None:
    with pytest.raises(ValueError, match="RING_SECONDS"):
        RetentionSettings(ring_seconds=100, evidence_pre_s=60, evidence_post_s=60)


def test_one_sample_batches_keep_what_one_block_keeps(tmp_path: Path) -> None:
    # The hot path buffers small batches per series; nothing a reader sees may depend on it.
    trace = simulate("pump-6", 6, 900)
    t_flag = float(trace.ts[500])
    block = Retention(_settings(), tmp_path / "block", clock=Clock())
    ids = [block.trigger("pump-6", t_flag, "flag")]
    block.ingest_frame("pump-6", SIGNALS, trace.ts, trace.values)
    small = Retention(_settings(), tmp_path / "small", clock=Clock())
    for i, t in enumerate(trace.ts.tolist()):
        values = trace.values[i].tolist()
        small.ingest([Reading("pump-6", s, t, values[j]) for j, s in enumerate(SIGNALS)])
        if i == 510:
            ids.append(small.trigger("pump-6", t_flag, "flag"))
        if i == 530:  # the window's last sample is in, none after it yet
            with pytest.raises(EvidencePendingError):
                small.get(ids[1])
        if i == 531:  # frozen by the first sample after the window, as with one block
            assert small.get(ids[1]).complete
    for ret in (small, block):
        ret.close()
    first, second = block.get(ids[0]), small.get(ids[1])
    assert first.complete
    assert second.complete
    for sig in SIGNALS:
        assert first.signals[sig].ts.size == PRE + POST + 1
        assert np.array_equal(first.signals[sig].ts, second.signals[sig].ts)
        assert np.array_equal(first.signals[sig].values, second.signals[sig].values)
        kept = block.history.series("pump-6", sig)
        assert 1 < kept[0].size < trace.ts.size
        for x, y in zip(kept, small.history.series("pump-6", sig), strict=True):
            assert np.array_equal(x, y)
