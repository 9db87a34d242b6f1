"""What `edge-agent demo` prints: incidents as they open, change and close, and a heartbeat.

The demo reads the agent the way an operator would: recommendations from the uplink broker,
the assets' states from the agent's page (`/api/state`). One incident is one fault of one
asset under one rule: a raise while it is open (an escalation, or a re-raise after a live
update restarted the rules) is printed as an update of the same incident, with its id kept.
Until the first alert a heartbeat says what is being watched, so a quiet terminal is never
mistaken for a stuck one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request

import structlog

from edge_agent.core import metrics

log = structlog.get_logger(__name__)

HEARTBEAT_S = 5.0


def clock(ts: float, start: float) -> str:
    """`T+05:20`: simulated time since the demo started."""
    return f"T+{int(ts - start) // 60:02d}:{int(ts - start) % 60:02d}"


def versions(rec: dict[str, object]) -> str:
    """`model X vA / rules vB`: what the recommendation came from (a live update changes it)."""
    model = rec.get("model")
    pack = rec.get("rule_pack")
    model = model if isinstance(model, dict) else {}
    pack = pack if isinstance(pack, dict) else {}
    return (
        f"model {model.get('name', '?')} v{model.get('version', '?')} / "
        f"rules v{pack.get('version', '?')}"
    )


def _object(payload: bytes, what: str) -> dict[str, object] | None:
    """The JSON object in `payload`; None (and a line saying so) when it is not one."""
    try:
        found = json.loads(payload)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        print(f"(unreadable {what}: {payload[:200]!r})", flush=True)
        return None
    return found


class Console:
    """The demo's terminal: recommendations as incidents, a heartbeat until the first alert."""

    def __init__(self, start_ts: float, page_url: str, state_dir: str) -> None:
        self.start_ts = start_ts
        self.page_url = page_url
        self.state_dir = state_dir
        self.alerted = False
        self._open: dict[tuple[str, str], str] = {}  # (asset, rule) -> incident id
        self._by_raise: dict[str, str] = {}  # raise id -> incident id

    def recommendation(self, payload: bytes) -> None:
        """Print one recommendation from the uplink."""
        rec = _object(payload, "recommendation")
        if rec is None:
            return
        self.alerted = True
        kind = str(rec.get("kind", "?"))
        asset, rule = str(rec.get("asset", "?")), str(rec.get("rule_id"))
        ts = rec.get("window_ts")
        when = clock(float(ts), self.start_ts) if isinstance(ts, int | float) else "T+?"
        incident, label, why = self._incident(kind, asset, rule, rec)
        severity = str(rec.get("severity", "?")).upper()
        print(f"\n[{when} simulated] {label} {severity} {asset}  incident {incident}")
        for key in ("title", "explanation"):
            if rec.get(key) and not (kind == "resolved" and key == "explanation"):
                print(f"  {rec[key]}")
        if why:
            print(f"  why: {why}")
        action = rec.get("action") or {}
        if kind != "resolved" and isinstance(action, dict) and action.get("text"):
            due = action.get("due_within_h")
            print(f"  action: {action['text']}" + (f" (within {due} h)" if due else ""))
        print(f"  {versions(rec)}")
        evidence = rec.get("evidence_id")
        if evidence:
            print(f"  report: {self.page_url}report/{evidence}")
            print(f"    offline: edge-agent report {evidence} --state-dir {self.state_dir}")
        print(f"  id {rec.get('id')}", flush=True)

    def _incident(
        self, kind: str, asset: str, rule: str, rec: dict[str, object]
    ) -> tuple[str, str, str]:
        """The incident id, the label to print and why (for updates and resolutions)."""
        rec_id = str(rec.get("id"))
        if kind == "raise":
            found = self._open.get((asset, rule))
            if found is None:
                self._open[(asset, rule)] = self._by_raise[rec_id] = rec_id
                return rec_id, "RAISE", ""
            self._by_raise[rec_id] = found
            if rec.get("escalated_from"):
                why = f"escalated from {rec['escalated_from']} to {rec.get('severity')}"
            else:
                why = f"raised again by {versions(rec)}: the live update restarted the rules"
            return found, "UPDATE", why
        if kind == "resolved":
            found = self._by_raise.pop(str(rec.get("resolves")), None) or self._open.get(
                (asset, rule), str(rec.get("resolves"))
            )
            self._open.pop((asset, rule), None)
            return found, "RESOLVED", str(rec.get("explanation") or rec.get("title") or "")
        return rec_id, kind.upper(), ""

    def job_state(self, payload: bytes) -> None:
        """Print one fleet-update job state."""
        state = _object(payload, "job state")
        if state is None:
            return
        status = str(state.get("status", "?"))
        line = f"[update] job {state.get('job_id')} bundle {state.get('bundle_version')}: {status}"
        if state.get("step"):
            line += f" {state['step']}"
        if state.get("reason"):
            line += f": {state['reason']}"
        if status in ("SUCCEEDED", "FAILED", "REJECTED"):
            line += f" (serving bundle {state.get('active_version', 0)})"
        print(line, flush=True)

    async def heartbeat(self, stop: asyncio.Event, every_s: float = HEARTBEAT_S) -> None:
        """Every `every_s` until the first alert: what is watched and how it looks."""
        while not self.alerted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set() or self.alerted:
                return
            try:
                state = await asyncio.to_thread(self._state)
            except (OSError, ValueError, TypeError) as exc:
                print(f"[heartbeat] the agent's page does not answer: {exc}", flush=True)
                continue
            if not self.alerted:
                print(self.heartbeat_line(state), flush=True)

    def _state(self) -> dict[str, object]:
        url = f"{self.page_url}api/state?since=1e300"  # the states only, no points
        with urllib.request.urlopen(url, timeout=2.0) as reply:  # noqa: S310 - our loopback URL
            state = json.loads(reply.read())
        if not isinstance(state, dict):
            raise TypeError("api/state is not an object")
        return state

    def heartbeat_line(self, state: dict[str, object]) -> str:
        """`[T+01:15 simulated] watching 4 pumps: 52 windows scored, all normal`."""
        listed = state.get("assets")
        rows = [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
        newest = max((float(r.get("last_ts", 0.0)) for r in rows), default=0.0)
        when = clock(newest, self.start_ts) if newest else "T+00:00"
        scored = metrics.REGISTRY.get_sample_value("edge_windows_total", {"outcome": "scored"})
        odd = [f"{r['asset']} {r['state']}" for r in rows if r.get("state") != "normal"]
        above = [
            str(r["asset"])
            for r in rows
            if r.get("state") == "normal"
            and float(r.get("last_score", 0.0)) > float(r.get("last_threshold", 1e300))
        ]
        if not rows:
            verdict = "no window scored yet"
        elif odd:
            verdict = ", ".join(odd)
        elif above:
            verdict = f"{', '.join(above)} above threshold, no rule holds yet; others normal"
        else:
            verdict = "all normal"
        return (
            f"[{when} simulated] watching {len(rows)} pumps: "
            f"{int(scored or 0)} windows scored, {verdict}"
        )
