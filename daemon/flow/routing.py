"""Routing: each asset to its lane (or to learning), each reading through its profile.

An asset's route is looked up once and kept in a bounded cache (least recently used goes
first; a route is cheap to find again): the first profile whose pattern matches the asset,
the profile's transform (source name -> signal name, value * scale + offset), and where its
readings go: the shipped lane (no profile, or a `shipped` profile), the lane of a profile's
fitted model, the asset's own learned lane, or learning while it has none. A reading whose
signal is not in the asset's profile passes unchanged; the lane's frames count it as an
unknown signal, as they do without profiles.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_agent.core import metrics
from edge_agent.core.assets import AssetSettings, Profile
from edge_agent.core.readings import Reading
from edge_agent.daemon.flow.lanes import Lane

MAX_ROUTES = 4096  # cached asset routes; past it the least recently used is looked up again

Transform = dict[str, tuple[str, float, float]]  # source -> (signal, scale, offset)


class LearningSink(Protocol):
    """Where the readings of an asset that is learning its model go."""

    def ingest(self, asset: str, profile: Profile, readings: Sequence[Reading]) -> None:
        """Take a batch of one asset's readings (already through its profile)."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where one asset's readings go, and how they are transformed on the way."""

    profile: Profile | None
    transform: Transform | None  # None: readings pass unchanged
    lane: Lane | None  # None: the asset is learning


def transform_of(profile: Profile) -> Transform | None:
    """A profile's transform table; None when every signal passes unchanged."""
    if all(s.identity for s in profile.signals):
        return None
    return {s.source_name: (s.name, s.scale, s.offset) for s in profile.signals}


class Router:
    """The lanes of one agent and the route of each asset to one of them."""

    def __init__(
        self,
        assets: AssetSettings,
        shipped: Lane,
        profile_lanes: dict[str, Lane] | None = None,
    ) -> None:
        self.assets = assets
        self.shipped = shipped
        self.profile_lanes = dict(profile_lanes or {})
        self.learned: dict[str, Lane] = {}
        self.learning: LearningSink | None = None
        self.pressure = False
        self._routes: OrderedDict[str, Route] = OrderedDict()
        self._transforms = {p.name: transform_of(p) for p in assets.profiles}
        self._no_model = metrics.READINGS_DROPPED.labels("no_model")

    @property
    def profiled(self) -> bool:
        """Whether any profile is configured (else every reading goes to the shipped lane)."""
        return bool(self.assets.profiles)

    def lanes(self) -> list[Lane]:
        """Every lane: shipped, the profiles', the learned ones."""
        return [self.shipped, *self.profile_lanes.values(), *self.learned.values()]

    def route(self, asset: str) -> Route:
        """The asset's route (cached)."""
        found = self._routes.get(asset)
        if found is not None:
            self._routes.move_to_end(asset)
            return found
        profile = self.assets.profile_of(asset)
        if profile is None:
            route = Route(None, None, self.shipped)
        else:
            transform = self._transforms[profile.name]
            if profile.learns:
                route = Route(profile, transform, self.learned.get(asset))
            else:
                route = Route(
                    profile, transform, self.profile_lanes.get(profile.name, self.shipped)
                )
        if len(self._routes) >= MAX_ROUTES:
            self._routes.popitem(last=False)
        self._routes[asset] = route
        return route

    def replace_shipped(self, lane: Lane) -> None:
        """A bundle brought another shipped model: routes to the old lane are forgotten."""
        old, self.shipped = self.shipped, lane
        for asset in [a for a, r in self._routes.items() if r.lane is old]:
            del self._routes[asset]
        for name, found in self.profile_lanes.items():
            if found is old:
                self.profile_lanes[name] = lane

    def add_learned(self, asset: str, lane: Lane) -> None:
        """The asset now scores with its own learned lane."""
        lane.gate.pressure = self.pressure
        self.learned[asset] = lane
        self._routes.pop(asset, None)

    def drop_learned(self, asset: str) -> Lane | None:
        """The asset learns again: its lane goes."""
        self._routes.pop(asset, None)
        return self.learned.pop(asset, None)

    def set_pressure(self, engaged: bool) -> None:
        """Degraded mode for every lane's gate."""
        self.pressure = engaged
        for lane in self.lanes():
            lane.gate.pressure = engaged

    def dispatch(self, readings: Iterable[Reading]) -> tuple[list[Reading], set[Lane]]:
        """Transform and hand every reading to its lane or to learning.

        Returns the readings as transformed (what retention keeps) and the lanes that took some.
        """
        out: list[Reading] = []
        to_lanes: dict[Lane, list[Reading]] = {}
        to_learning: dict[str, tuple[Profile, list[Reading]]] = {}
        asset: str | None = None
        route: Route | None = None
        bucket: list[Reading] = []
        for r in readings:
            if r.asset != asset or route is None:
                asset = r.asset
                route = self.route(asset)
                if route.lane is not None:
                    bucket = to_lanes.setdefault(route.lane, [])
                else:
                    assert route.profile is not None
                    bucket = to_learning.setdefault(asset, (route.profile, []))[1]
            table = route.transform
            if table is not None:
                spec = table.get(r.signal)
                if spec is not None:
                    name, scale, offset = spec
                    r = Reading(r.asset, name, r.ts, r.value * scale + offset, r.quality)  # noqa: PLW2901
            bucket.append(r)
            out.append(r)
        for lane, batch in to_lanes.items():
            lane.frames.ingest(batch)
        for name, (profile, batch) in to_learning.items():
            if self.learning is not None:
                self.learning.ingest(name, profile, batch)
            else:  # an agent built without learning (a tool, a test): nothing to score them
                self._no_model.inc(len(batch))
        return out, set(to_lanes)
