"""Recommendations and their JSON form (`schemas/recommendation-v1.schema.json`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

import msgspec

from edge_agent.core.readings import WindowResult, new_id
from edge_agent.rules.parts import ReviewPolicy, Rule, Severity
from edge_agent.rules.templates import lookup

SCHEMA_ID = "edge-agent/recommendation/v1"
SCHEMA_FILE = "recommendation-v1.schema.json"
TOP_SIGNALS = 3
CANDIDATES = 3

Kind = Literal["raise", "resolved", "needs_review"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One message for the uplink: a raise, its resolution, or a request for review."""

    kind: Kind
    asset: str
    severity: str
    id: str
    payload: dict[str, object]

    def to_json(self) -> bytes:
        """The payload as compact UTF-8 JSON."""
        return msgspec.json.encode(self.payload)


def recommendation_schema() -> dict[str, Any]:
    """The JSON Schema every recommendation payload satisfies."""
    text = (resources.files("edge_agent.rules") / "schemas" / SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: object) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class Report:
    """Builds recommendation payloads; holds what every message of this agent carries."""

    def __init__(
        self,
        gateway_id: str,
        model_name: str,
        model_version: str,
        clock: Callable[[], float],
        roles: Mapping[str, str] | None = None,
    ) -> None:
        self._gateway = gateway_id
        self._model = {"name": model_name, "version": model_version}
        self._clock = clock
        self._roles = dict(roles or {})  # signal -> role, where the model states them

    def _signals(self, result: WindowResult) -> list[dict[str, object]]:
        ranked = sorted(result.contrib.items(), key=lambda kv: abs(kv[1]), reverse=True)
        out: list[dict[str, object]] = []
        for signal, contribution in ranked[:TOP_SIGNALS]:
            st = result.stats.get(signal)
            entry: dict[str, object] = {
                "signal": signal,
                "direction": "up" if contribution >= 0 else "down",
                "contribution": _num(contribution),
                "change_pct": _num(st.change_pct) if st else None,
                "mean": _num(st.mean) if st else None,
                "baseline": _num(st.baseline) if st else None,
            }
            if signal in self._roles:
                entry["role"] = self._roles[signal]
            out.append(entry)
        return out

    def _base(
        self, kind: Kind, result: WindowResult, severity: Severity, values: Mapping[str, object]
    ) -> dict[str, object]:
        probs = values["probs"]
        assert isinstance(probs, dict)
        ranked = sorted(probs.items(), key=lambda kv: kv[1], reverse=True)[:CANDIDATES]
        return {
            "schema": SCHEMA_ID,
            "id": new_id(),
            "kind": kind,
            "asset": result.asset,
            "gateway": self._gateway,
            "detected_at": _iso(self._clock()),
            "window_ts": result.ts,
            "window_end": _iso(result.ts),
            "anomaly": {"score": _num(result.score), "threshold": _num(result.threshold)},
            "signals": self._signals(result),
            "candidates": [{"class": c, "probability": p} for c, p in ranked],
            "severity": severity.label,
            "model": self._model,
            "asset_meta": values["meta"],
        }

    def raised(
        self,
        rule: Rule,
        result: WindowResult,
        values: Mapping[str, object],
        severity: Severity,
        due_within_h: float,
        escalated_from: Severity | None,
    ) -> Recommendation:
        """A rule fired (or escalated).

        Its cause is the rule's fault: a class of the model with its probability, or a
        mechanism a pack for learned models names (probability null: the model has no class).
        """
        probs = values["probs"]
        assert isinstance(probs, dict)
        prob = float(probs.get(rule.fault, 0.0))
        text = {
            **values,
            "fault": rule.fault.replace("_", " "),
            "prob": prob,
            "severity": severity.label,
            "due_within_h": due_within_h,
            "due": due_text(due_within_h),
        }
        payload = self._base("raise", result, severity, values)
        payload |= {
            "cause": {"class": rule.fault, "probability": _prob(values, rule.fault)},
            "title": rule.title.render(text),
            "explanation": rule.explanation.render(text),
            "action": {"text": rule.advice.render(text), "due_within_h": due_within_h},
            "rule_pack": {"name": rule.pack_name, "version": rule.pack_version},
            "rule_id": rule.id,
            "evidence": {e: _json_value(lookup(values, e.split("."))) for e in rule.evidence},
        }
        if escalated_from is not None:
            payload["escalated_from"] = escalated_from.label
        return Recommendation("raise", result.asset, severity.label, str(payload["id"]), payload)

    def resolved(
        self,
        rule: Rule,
        result: WindowResult,
        values: Mapping[str, object],
        raise_id: str,
        since: float,
    ) -> Recommendation:
        """A rule's clear condition held long enough: the fault is over."""
        payload = self._base("resolved", result, Severity.INFO, values)
        fault = rule.fault.replace("_", " ")
        minutes = max(0.0, result.ts - since) / 60.0
        payload |= {
            "cause": {"class": rule.fault, "probability": _prob(values, rule.fault)},
            "title": f"resolved: {fault} on {result.asset}",
            "explanation": f"The condition of rule {rule.id} has cleared after {minutes:.0f} min "
            f"(cleared in {rule.clear_debounce.n} of the last {rule.clear_debounce.m} windows).",
            "action": {"text": "No further action from this alert.", "due_within_h": 0.0},
            "rule_pack": {"name": rule.pack_name, "version": rule.pack_version},
            "rule_id": rule.id,
            "resolves": raise_id,
            "active_since": _iso(since),
            "evidence": {e: _json_value(lookup(values, e.split("."))) for e in rule.evidence},
        }
        return Recommendation("resolved", result.asset, "info", str(payload["id"]), payload)

    def resolved_by_reload(self, asset: str, rule: Rule, raise_id: str) -> Recommendation:
        """A pack reload removed a rule whose recommendation was open: close it, saying why."""
        now = self._clock()
        payload: dict[str, object] = {
            "schema": SCHEMA_ID,
            "id": new_id(),
            "kind": "resolved",
            "asset": asset,
            "gateway": self._gateway,
            "detected_at": _iso(now),
            "window_ts": now,
            "window_end": _iso(now),
            "anomaly": {"score": None, "threshold": None},
            "signals": [],
            "candidates": [],
            "severity": "info",
            "model": self._model,
            "cause": {"class": rule.fault, "probability": None},
            "title": f"withdrawn: {rule.fault.replace('_', ' ')} on {asset}",
            "explanation": f"Rule {rule.id} is not in the reloaded rule pack; its open "
            "recommendation is closed without a verdict.",
            "action": {"text": "Check the open work order by hand.", "due_within_h": 0.0},
            "rule_pack": {"name": rule.pack_name, "version": rule.pack_version},
            "rule_id": rule.id,
            "resolves": raise_id,
            "evidence": {},
        }
        return Recommendation("resolved", asset, "info", str(payload["id"]), payload)

    def review(
        self, policy: ReviewPolicy, result: WindowResult, values: Mapping[str, object]
    ) -> Recommendation:
        """An anomaly the model cannot classify: ask for a larger model or a person."""
        text = {
            **values,
            "severity": policy.severity.label,
            "due_within_h": policy.due_within_h,
            "due": due_text(policy.due_within_h),
        }
        payload = self._base("needs_review", result, policy.severity, values)
        payload |= {
            "cause": None,
            "title": policy.title.render(text),
            "explanation": policy.explanation.render(text),
            "action": {"text": policy.advice.render(text), "due_within_h": policy.due_within_h},
            "rule_pack": {"name": policy.pack_name, "version": policy.pack_version},
            "rule_id": None,
            "evidence": {
                "stats": {
                    s: {k: _num(v) for k, v in st._asdict().items()}
                    for s, st in result.stats.items()
                },
                "contrib": {s: _num(v) for s, v in result.contrib.items()},
                "probs": values["probs"],
            },
        }
        return Recommendation(
            "needs_review", result.asset, policy.severity.label, str(payload["id"]), payload
        )


def due_text(hours: float) -> str:
    """`168` -> "7 days", `36` -> "36 h": what a person reads on a phone."""
    if hours >= 48 and hours % 24 == 0:
        return f"{hours / 24:.0f} days"
    return f"{hours:.0f} h"


def _prob(values: Mapping[str, object], cls: str) -> float | None:
    probs = values["probs"]
    assert isinstance(probs, dict)
    return _num(probs.get(cls))


def _json_value(value: object) -> object:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | float):
        return _num(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)
