"""Lanes: frames, gate, scorer and advisor for the assets one model serves.

The shipped model's lane serves every asset no profile sends elsewhere; a profile naming a
fitted manifest has a lane of its own; each asset that learned its own model on the gateway
has its own lane. A lane scores its pending windows as one batch.

A learned model's lane keeps, per asset, the baseline its windows are normalised with
(`Baselines`): it starts at the manifest's mean and, while no recommendation is open on the
asset and the window's score / threshold is under the manifest's `adapt.below`, follows the
asset by EWMA (`adapt.alpha` per window), so slow healthy wander does not alarm; it is
frozen while a recommendation is open, so a fault is never learnt as normal. Windows of the
same asset are scored in order, each with the baseline the previous one left (one batch per
"round" of one window per asset), so a backlog or a replay gives the verdicts a live feed
gives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_agent.core import metrics
from edge_agent.core.assets import AssetSettings
from edge_agent.core.errors import ConfigError, ModelError
from edge_agent.core.readings import WindowResult
from edge_agent.daemon.flow.frames import FrameBuilder, Window
from edge_agent.daemon.flow.gate import Gate
from edge_agent.daemon.flow.settings import FrameSettings, GateSettings
from edge_agent.daemon.flow.stats import window_stats
from edge_agent.models.manifest import Adapt, Manifest, load_manifest
from edge_agent.models.scorer import Scorer
from edge_agent.models.settings import ModelSettings
from edge_agent.rules.engine import Advisor, Recommendation, RulePack, load_pack
from edge_agent.rules.pack import default_pack_path
from edge_agent.rules.settings import RuleSettings


class LaneConfig(Protocol):
    """The settings sections a lane is built from (the daemon's Settings has them)."""

    @property
    def model(self) -> ModelSettings:
        """Backends and precision."""
        ...

    @property
    def rules(self) -> RuleSettings:
        """The classifier's rule packs and the advisor's bounds."""
        ...

    @property
    def assets(self) -> AssetSettings:
        """Asset metadata for the rules."""
        ...

    @property
    def frames(self) -> FrameSettings:
        """Frame bounds."""
        ...

    @property
    def gate(self) -> GateSettings:
        """The gate."""
        ...


_PACKS: OrderedDict[tuple[tuple[str, int, int], ...], RulePack] = OrderedDict()
_PACKS_LOCK = threading.Lock()
MAX_PACKS = 8  # distinct rule pack sets kept compiled for lanes built later


def shared_pack(files: Sequence[Path]) -> RulePack:
    """The rule packs of `files`, compiled once for every lane that uses the same files.

    Lanes of learned assets all read one pack: parsing it again for each is most of what
    building a lane costs. Keyed by path, size and modification time, so an edited file is
    read again; a reload (SIGHUP) reads the files afresh in any case.
    """
    paths = tuple(files) or (default_pack_path(),)
    key = tuple((str(p), *_stamp(p)) for p in paths)
    with _PACKS_LOCK:
        found = _PACKS.get(key)
        if found is not None:
            _PACKS.move_to_end(key)
            return found
    pack = load_pack(paths)
    with _PACKS_LOCK:
        _PACKS[key] = pack
        while len(_PACKS) > MAX_PACKS:
            _PACKS.popitem(last=False)
    return pack


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)  # load_pack names the missing file
    return (st.st_mtime_ns, st.st_size)


def default_packs(manifest: Manifest, config: LaneConfig) -> list[Path]:
    """The rule packs of a model whose profile names none: by the model's kind."""
    if manifest.kind == "learned":
        return [default_pack_path("learned")]
    return list(config.rules.packs)


class Baselines:
    """Each asset's baseline of a learned model: the centre its windows are normalised with."""

    def __init__(self, mean: Sequence[float], adapt: Adapt) -> None:
        self.start = np.asarray(mean, np.float32)
        self.alpha = np.float32(adapt.alpha)
        self.below = adapt.below
        self._of: dict[str, np.ndarray] = {}

    def of(self, asset: str) -> np.ndarray:
        """The asset's current baseline [S] (the manifest's mean until it has adapted)."""
        found = self._of.get(asset)
        return self.start if found is None else found

    def follow(self, asset: str, window_mean: np.ndarray) -> None:
        """One EWMA step towards a healthy window's mean."""
        base = self.of(asset)
        self._of[asset] = base + self.alpha * (window_mean - base)

    def forget(self, asset: str) -> None:
        """Back to the manifest's mean."""
        self._of.pop(asset, None)


class Episodes:
    """Which recommendations are open on each asset, from what the advisor emitted."""

    def __init__(self) -> None:
        self._open: dict[str, set[str]] = {}

    def update(self, recs: Sequence[Recommendation]) -> None:
        """Open on a raise, close on its resolution."""
        for rec in recs:
            rule = str(rec.payload.get("rule_id"))
            if rec.kind == "raise":
                self._open.setdefault(rec.asset, set()).add(rule)
            elif rec.kind == "resolved":
                held = self._open.get(rec.asset)
                if held is not None:
                    held.discard(rule)
                    if not held:
                        del self._open[rec.asset]

    def is_open(self, asset: str) -> bool:
        """Whether a recommendation is open on `asset`."""
        return asset in self._open

    def count(self) -> int:
        """Assets with an open recommendation."""
        return len(self._open)


def _rounds(windows: Sequence[Window]) -> list[list[Window]]:
    """Split a batch into rounds holding at most one window per asset, in order."""
    rounds: list[list[Window]] = []
    seen: dict[str, int] = {}
    for w in windows:
        k = seen.get(w.asset, 0)
        seen[w.asset] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(w)
    return rounds


@dataclass(eq=False)
class Lane:
    """The assets served by one model: their frames, gate, scorer and advisor."""

    name: str
    frames: FrameBuilder
    gate: Gate
    scorer: Scorer
    advisor: Advisor
    packs: tuple[Path, ...] = ()  # the rule pack files (re-read on SIGHUP); () the default
    baselines: Baselines | None = None  # a learned model's per-asset baselines
    episodes: Episodes | None = None  # open recommendations, read by the baselines

    @property
    def manifest(self) -> Manifest:
        """The model's manifest."""
        return self.scorer.manifest

    @property
    def pending(self) -> int:
        """Windows waiting to be scored."""
        return self.frames.pending

    def reload_rules(self) -> None:
        """Re-read the lane's rule packs; PackError leaves the old pack running."""
        self.advisor.replace_pack(load_pack(self.packs))

    def step(self) -> list[Recommendation]:
        """Score the pending windows (one batch per round) and advise on them."""
        backlog = self.frames.pending
        chosen = self.gate.select(self.frames.take(), backlog)
        if not chosen:
            return []
        if self.baselines is None:
            return self.advisor.evaluate(self.score(chosen))
        recs: list[Recommendation] = []
        for batch in _rounds(chosen):
            recs += self._step_learned(batch)
        return recs

    def score(
        self, windows: Sequence[Window], centre: np.ndarray | None = None
    ) -> list[WindowResult]:
        """Score raw windows; `centre` [N, S] is each window's baseline (learned models)."""
        manifest = self.scorer.manifest
        signals = manifest.signals
        x = np.stack([w.values for w in windows])
        out = self.scorer.score(x, centre)
        base = self.gate.baselines(windows) if centre is None else centre
        stats = window_stats(x, signals, manifest.rate_hz, base)
        scores = out.score.tolist()
        contrib = out.contrib.tolist()
        probs = out.probs.tolist()
        classes = manifest.classes
        threshold = self.scorer.threshold  # each artifact has its own calibration
        results = [
            WindowResult(
                w.asset,
                w.ts,
                scores[i],
                threshold,
                dict(zip(signals, contrib[i], strict=True)),
                dict(zip(classes, probs[i], strict=True)),
                stats[i],
            )
            for i, w in enumerate(windows)
        ]
        self.gate.learn(windows, [not r.anomalous for r in results])
        metrics.WINDOWS.labels("scored").inc(len(windows))
        return results

    def _step_learned(self, windows: Sequence[Window]) -> list[Recommendation]:
        """One round (one window per asset): each against its baseline, then the advice.

        A baseline follows its asset only where no recommendation was open before the window
        nor is after it, and the window is well under the threshold.
        """
        baselines, episodes = self.baselines, self.episodes
        assert baselines is not None
        assert episodes is not None
        centre = np.stack([baselines.of(w.asset) for w in windows])
        results = self.score(windows, centre)
        was_open = [episodes.is_open(w.asset) for w in windows]
        recs = self.advisor.evaluate(results)
        episodes.update(recs)
        below = baselines.below
        for w, result, before in zip(windows, results, was_open, strict=True):
            if before or episodes.is_open(w.asset) or result.score >= below * result.threshold:
                continue
            baselines.follow(w.asset, w.values.mean(axis=0))
        return recs


def build_lane(
    name: str,
    manifest: Manifest,
    config: LaneConfig,
    *,
    gateway_id: str,
    packs: Sequence[Path] = (),
    advisor_class: type[Advisor] = Advisor,
) -> Lane:
    """Load a model and its rule packs into a lane (blocking: run it off the event loop).

    `packs` empty means the default for the model's kind. A learned model is scored by the
    configured backends, with ONNX last when they do not name it (it always has ONNX files).
    """
    model = config.model
    backends = list(model.order)
    if manifest.kind == "learned":
        if manifest.adapt is None:  # load_manifest refuses this; a hand-made Manifest may not
            raise ConfigError(f"model {manifest.name}: a learned model needs `adapt`")
        if "onnx" not in backends:
            backends.append("onnx")
    scorer = Scorer(
        manifest,
        backends=backends,
        onnx_providers=model.onnx_providers,
        max_batch=model.max_batch,
        litert_delegates=model.litert_delegates,
        precision=model.precision,
    )
    files = tuple(packs) or tuple(default_packs(manifest, config))
    advisor = advisor_class(
        shared_pack(files),
        model_name=manifest.name,
        model_version=manifest.version,
        signals=manifest.signals,
        classes=manifest.classes,
        gateway_id=gateway_id,
        assets=config.assets,
        max_assets=config.rules.max_assets,
        roles=manifest.roles,
    )
    learned = manifest.kind == "learned" and manifest.adapt is not None
    return Lane(
        name,
        FrameBuilder(
            manifest.signals, manifest.rate_hz, manifest.window, manifest.hop, config.frames
        ),
        Gate(config.gate, len(manifest.signals)),
        scorer,
        advisor,
        files,
        Baselines(manifest.normalisation.mean, manifest.adapt)
        if learned and manifest.adapt
        else None,
        Episodes() if learned else None,
    )


def profile_lanes(config: LaneConfig, gateway_id: str, shipped: Manifest) -> dict[str, Lane]:
    """The lanes of profiles that do not learn per asset (blocking: loads their models).

    A profile naming a fitted manifest gets that model; a `shipped` profile shares the
    shipped lane unless it names rule packs of its own. Its signals must be the model's.
    """
    lanes: dict[str, Lane] = {}
    for i, profile in enumerate(config.assets.profiles):
        if profile.learns:
            continue
        where = f"EDGE_ASSETS__PROFILES[{i}] ({profile.name})"
        path = profile.manifest_path
        try:
            manifest = shipped if path is None else load_manifest(path)
        except ModelError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        extra = [s for s in profile.signal_names if s not in manifest.signals]
        if extra:
            raise ConfigError(
                f"{where}: signal {', '.join(extra)} is not an input of the model "
                f"{manifest.name} (it reads {', '.join(manifest.signals)})"
            )
        if path is None and not profile.rules:
            continue  # served by the shipped lane itself
        lanes[profile.name] = build_lane(
            f"profile:{profile.name}", manifest, config, gateway_id=gateway_id, packs=profile.rules
        )
    return lanes
