"""The advisor: rule packs over window results, with debounce, hysteresis and cooldown.

Per asset and rule a small state machine: idle → (raise held in n of m windows, cooldown
over) → active, one `raise`; active → (clear held in n of m windows) → idle, one `resolved`,
cooldown starts. While active a rule may escalate its severity (one more `raise`), never
step down. A rule does not raise while a rule that inhibits it is open on the asset: one
it names in `inhibited_by`, or another of its `group`; rules run in pack order, so in one
window the first rule of a group that raises is the one that speaks, and a group is one
open recommendation per episode. An anomaly no rule explains and the model cannot classify
with confidence gives one `needs_review` per episode. Time is the windows' time, so
replayed data behaves alike.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from edge_agent.core import metrics
from edge_agent.core.errors import RuleError
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import WindowResult
from edge_agent.rules.check import check_pack
from edge_agent.rules.conditions import Condition
from edge_agent.rules.pack import PackError, Rule, RulePack, Severity, load_pack
from edge_agent.rules.recommendation import Recommendation, Report
from edge_agent.rules.settings import AssetMeta, AssetSettings
from edge_agent.rules.state import RuleStore
from edge_agent.rules.window import Roles, Scope, Window

__all__ = ["Advisor", "AssetMeta", "Recommendation", "RulePack", "load_pack"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Active:
    """An open recommendation: what was sent, so `resolved` and escalations refer to it."""

    id: str
    since: float
    severity: Severity
    due_within_h: float
    # The raising window's values: clear and escalate conditions read them as `at_raise`
    # (every root they may name, whole, so a reloaded pack may read other paths of them).
    at_raise: dict[str, object]


@dataclass(slots=True)
class _RuleState:
    raised: deque[bool]
    cleared: deque[bool]
    active: _Active | None = None
    cooldown_until: float = -math.inf


@dataclass(slots=True)
class _ReviewState:
    hits: deque[bool]
    open: bool = False
    quiet: int = 0  # consecutive windows without an anomaly while open
    cooldown_until: float = -math.inf


@dataclass(slots=True)
class _AssetState:
    rules: dict[str, _RuleState]
    review: _ReviewState
    meta: dict[str, object] = field(default_factory=dict)
    last_ts: float = -math.inf


# Windows further apart than this (the frames' default max_gap_s: the asset's frame
# restarts) do not debounce together: "3 of the last 4" means recent windows.
GAP_S = 300.0


class Advisor:
    """Turns window results into recommendations with the rules of one pack (replaceable)."""

    def __init__(  # noqa: PLR0913 - keyword-only: the model, the gateway, the assets
        self,
        pack: RulePack,
        *,
        model_name: str,
        model_version: str,
        signals: Sequence[str],
        classes: Sequence[str],
        gateway_id: str,
        assets: Mapping[str, AssetMeta] | AssetSettings | None = None,
        max_assets: int = 1000,
        roles: Sequence[str] | None = None,
    ) -> None:
        """`roles`: each signal's role, in signal order (a learned model's manifest has them).

        ConfigError when they do not match the signals; PackError when the pack does not
        fit the model.
        """
        self._signals = tuple(signals)
        self._classes = tuple(classes)
        self._roles = Roles(self._signals, roles)
        self._role_list = None if roles is None else tuple(roles)
        self._meta_of = _meta_lookup(assets)
        self._max_assets = max_assets
        self._report = Report(
            gateway_id, model_name, model_version, time.time, roles=self._roles.of
        )
        self._states: OrderedDict[str, _AssetState] = OrderedDict()
        self._pending: list[Recommendation] = []
        self._errors = RateLimited(60.0)
        self._pack = self._checked(pack)
        self._rules = _with_inhibitors(pack)
        self._scope = Scope(pack.constants)

    @property
    def pack(self) -> RulePack:
        """The pack in use."""
        return self._pack

    _store: RuleStore | None = None

    def keep_state(self, store: RuleStore) -> None:
        """Persist open incidents and cooldowns in `store`, and take up those saved there."""
        self._store = store

    def _checked(self, pack: RulePack) -> RulePack:
        problems = check_pack(pack, self._signals, self._classes, self._role_list)
        if problems:
            raise PackError(problems)
        return pack

    def replace_pack(self, pack: RulePack) -> None:
        """Swap in a new pack (SIGHUP, bundle activation); PackError leaves the old one running.

        Rules kept by id keep their state (an open recommendation stays open, cooldowns
        run on) unless their debounce changed; open recommendations of rules that are gone
        are resolved with the next `evaluate`.
        """
        self._checked(pack)
        new = {r.id: r for r in pack.rules}
        old = {r.id: r for r in self._pack.rules}
        for asset, state in self._states.items():
            for rule_id in list(state.rules):
                rs = state.rules[rule_id]
                keep = new.get(rule_id)
                if keep is None:
                    if rs.active is not None:
                        self._pending.append(
                            self._report.resolved_by_reload(asset, old[rule_id], rs.active.id)
                        )
                    del state.rules[rule_id]
                elif (
                    keep.debounce != old[rule_id].debounce
                    or keep.clear_debounce != old[rule_id].clear_debounce
                ):
                    rs.raised = deque(maxlen=keep.debounce.m)
                    rs.cleared = deque(maxlen=keep.clear_debounce.m)
            if state.review.hits.maxlen != pack.review.debounce.m:
                state.review.hits = deque(maxlen=pack.review.debounce.m)
        self._pack = pack
        self._rules = _with_inhibitors(pack)
        self._scope = Scope(pack.constants)
        log.info("rule pack replaced", pack=pack.name, version=pack.version, rules=len(pack.rules))

    def evaluate(self, results: Sequence[WindowResult]) -> list[Recommendation]:
        """Evaluate every rule on each window in order; return what is to be published."""
        out, self._pending = self._pending, []
        for result in results:
            self._evaluate_one(result, out)
        if out and self._store is not None:
            self._store.save(self._states, (rec.asset for rec in out))
        return out  # counted (edge_recommendations_total) where they are published

    def _state(self, asset: str) -> _AssetState:
        state = self._states.get(asset)
        if state is not None:
            self._states.move_to_end(asset)
            return state
        if len(self._states) >= self._max_assets:
            dropped, _ = self._states.popitem(last=False)
            metrics.ADVISOR_ASSETS_EVICTED.inc()
            if (held := self._errors.allow("evict")) is not None:
                log.warning(
                    "rule state dropped: too many assets",
                    asset=dropped,
                    max_assets=self._max_assets,
                    suppressed=held,
                )
        meta = self._meta_of(asset)
        state = _AssetState(
            rules={
                r.id: _RuleState(deque(maxlen=r.debounce.m), deque(maxlen=r.clear_debounce.m))
                for r in self._pack.rules
            },
            review=_ReviewState(deque(maxlen=self._pack.review.debounce.m)),
            meta={"type": meta.type, "criticality": meta.criticality, "state": meta.state},
        )
        self._states[asset] = state
        if self._store is not None:
            self._store.restore(asset, state)
        return state

    def _evaluate_one(self, result: WindowResult, out: list[Recommendation]) -> None:
        state = self._state(result.asset)
        if result.ts - state.last_ts > GAP_S:
            for history in state.rules.values():
                history.raised.clear()
                history.cleared.clear()
            state.review.hits.clear()
        state.last_ts = max(state.last_ts, result.ts)
        w = Window(result, self._classes, state.meta, self._pack, self._scope, self._roles)
        w.flags = {
            f.name: self._check(f"flag:{f.name}", "when", f.when, w, result.asset)
            for f in self._pack.flags
        }
        any_active = False
        for rule, inhibitors in self._rules:
            rs = state.rules.get(rule.id)
            if rs is None:  # a rule added by a reload
                rs = state.rules[rule.id] = _RuleState(
                    deque(maxlen=rule.debounce.m), deque(maxlen=rule.clear_debounce.m)
                )
            rec = self._step(rule, rs, w, state.rules, inhibitors)
            if rec is not None:
                out.append(rec)
            any_active = any_active or rs.active is not None
        rec = self._review(state.review, w, any_active)
        if rec is not None:
            out.append(rec)

    def _check(
        self,
        rule_id: str,
        name: str,
        cond: Condition,
        w: Window,
        asset: str,
    ) -> bool:
        try:
            return cond.holds(w)
        except RuleError as exc:
            metrics.RULE_ERRORS.labels(rule_id).inc()
            if (held := self._errors.allow(f"{rule_id}:{name}")) is not None:
                log.warning(
                    "rule condition failed; taken as false",
                    asset=asset,
                    rule=rule_id,
                    part=name,
                    error=str(exc),
                    suppressed=held,
                )
            return False

    def _step(
        self,
        rule: Rule,
        rs: _RuleState,
        w: Window,
        others: Mapping[str, _RuleState],
        inhibitors: tuple[str, ...],
    ) -> Recommendation | None:
        if rs.active is None:
            if inhibitors and any(
                (o := others.get(i)) is not None and o.active for i in inhibitors
            ):
                rs.raised.clear()  # a related rule already speaks for this fault
                return None
            return self._idle(rule, rs, w)
        return self._active(rule, rs, w)

    def _idle(self, rule: Rule, rs: _RuleState, w: Window) -> Recommendation | None:
        result = w.result
        asset, ts = result.asset, result.ts
        hit = self._check(rule.id, "raise", rule.raise_when, w, asset)
        rs.raised.append(hit)
        # A count reaching n always empties the history below, so only a hit can reach it:
        # no need to sum up to `m` windows on every miss.
        if not hit or sum(rs.raised) < rule.debounce.n:
            return None
        rs.raised.clear()
        if ts < rs.cooldown_until:
            metrics.RECOMMENDATIONS_SUPPRESSED.labels("cooldown").inc()
            if (held := self._errors.allow(f"cooldown:{asset}:{rule.id}")) is not None:
                log.info(
                    "raise suppressed by cooldown",
                    asset=asset,
                    rule=rule.id,
                    until=rs.cooldown_until,
                    suppressed=held,
                )
            return None
        w.at_raise = raised = w.raised()
        severity, due = self._severity(rule, w, asset)
        rec = self._report.raised(rule, result, w, severity, due, escalated_from=None)
        rs.active = _Active(rec.id, ts, severity, due, raised)
        rs.cleared.clear()
        log.info(
            "recommendation raised", asset=asset, rule=rule.id, severity=severity.label, id=rec.id
        )
        return rec

    def _active(self, rule: Rule, rs: _RuleState, w: Window) -> Recommendation | None:
        result, active = w.result, rs.active
        asset, ts = result.asset, result.ts
        assert active is not None
        w.at_raise = active.at_raise
        rs.cleared.append(self._check(rule.id, "clear", rule.clear_when, w, asset))
        if sum(rs.cleared) >= rule.clear_debounce.n:
            rs.active = None
            rs.cleared.clear()
            rs.cooldown_until = ts + rule.cooldown_s
            log.info("recommendation resolved", asset=asset, rule=rule.id, id=active.id)
            return self._report.resolved(rule, result, w, active.id, active.since)
        severity, due = self._severity(rule, w, asset)
        if severity <= active.severity:
            return None
        rec = self._report.raised(rule, result, w, severity, due, escalated_from=active.severity)
        log.info(
            "recommendation escalated",
            asset=asset,
            rule=rule.id,
            severity=severity.label,
            id=rec.id,
        )
        rs.active = _Active(rec.id, active.since, severity, due, active.at_raise)
        return rec

    def _severity(self, rule: Rule, w: Window, asset: str) -> tuple[Severity, float]:
        severity, due = rule.severity, rule.due_within_h
        for esc in rule.escalate:
            if esc.severity > severity and self._check(rule.id, "escalate", esc.when, w, asset):
                severity = esc.severity
                due = esc.due_within_h if esc.due_within_h is not None else due
        return severity, due

    def _review(self, rv: _ReviewState, w: Window, any_active: bool) -> Recommendation | None:
        policy, result = self._pack.review, w.result
        if rv.open:
            rv.quiet = 0 if result.anomalous else rv.quiet + 1
            if rv.quiet >= policy.clear_windows:
                rv.open, rv.quiet = False, 0
                rv.cooldown_until = result.ts + policy.cooldown_s
            return None
        # A rule that already explains the anomaly makes a review pointless.
        hit = not any_active and self._check("needs_review", "when", policy.when, w, result.asset)
        rv.hits.append(hit)
        if sum(rv.hits) < policy.debounce.n or result.ts < rv.cooldown_until:
            return None
        rv.hits.clear()
        rv.open, rv.quiet = True, 0
        rec = self._report.review(policy, result, w)
        log.info("needs review", asset=result.asset, id=rec.id, top_class=w["top_class"])
        return rec


def _with_inhibitors(pack: RulePack) -> tuple[tuple[Rule, tuple[str, ...]], ...]:
    inhibitors = pack.inhibitors()
    return tuple((rule, inhibitors[rule.id]) for rule in pack.rules)


def _meta_lookup(
    assets: Mapping[str, AssetMeta] | AssetSettings | None,
) -> Callable[[str], AssetMeta]:
    if isinstance(assets, AssetSettings):
        return assets.of
    table = dict(assets or {})
    default = AssetMeta()
    return lambda asset: table.get(asset, default)
