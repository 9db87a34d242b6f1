"""The Grafana dashboard: every query names a metric, and only labels, the agent exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import edge_agent.daemon.app  # noqa: F401 - every module that defines a metric is loaded
from edge_agent.core import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "edge-agent.json"
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"(edge_[a-z0-9_]+)\{([^}]*)\}")
_PROMQL_LABELS = {"le", "instance", "job"}


def _exported() -> dict[str, set[str]]:
    """Sample name -> its label names, for every metric the agent registers."""
    out: dict[str, set[str]] = {}
    for collector, names in metrics.REGISTRY._collector_to_names.items():
        labels = set(getattr(collector, "_labelnames", ()))
        for family in getattr(collector, "describe", list)():
            for suffix in _SUFFIXES[family.type]:
                out[family.name + suffix] = labels
        for name in names:
            out.setdefault(name, labels)
    return out


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            found.append((f"variable {var['name']}", query["query"]))
    return found


def test_the_dashboard_has_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel.get("targets"), panel["title"]


@pytest.mark.parametrize(("where", "expr"), _queries())
def test_every_query_names_an_exported_metric_and_its_labels(where: str, expr: str) -> None:
    exported = _exported()
    names = re.findall(r"\bedge_[a-z0-9_]+\b", expr)
    assert names, f"{where}: {expr} names no edge_ metric"
    for name in names:
        assert name in exported, f"{where}: {name} is not exported by the agent"
    labels = set().union(*(exported[n] for n in names)) | _PROMQL_LABELS
    for group in _GROUPING.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in labels, f"{where}: label {label!r} is not on {names}"
    for name, matchers in _MATCHERS.findall(expr):
        for label in re.findall(r"([a-zA-Z_]+)\s*=~?", matchers):
            assert label in exported[name] | _PROMQL_LABELS, f"{where}: {name} has no {label!r}"
