"""Assets and their profiles: what a kind of machine looks like, as configuration.

An asset is one machine (the `{asset}` of a topic, the `asset` of an OPC UA node). A profile
says, for the assets whose names match one of its patterns (fnmatch, first profile wins):
which signals they have (1 to 16, any names), where each comes from (`source`: the signal
name a connector delivers), its unit, the `scale` and `offset` that turn what arrives into
that unit (value * scale + offset), its role (what it measures: a learned model's tolerance
and the learned rule pack read it), and which model serves them: the model shipped with the
agent, a model learned on the gateway from each asset's own normal operation, or a model
fitted offline (the path of its manifest.json). An asset no profile matches is served as if
no profile existed: by the shipped model, its readings untouched.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from edge_agent.core.settings import Section

# What a signal measures; a learned model's tolerances and the learned rule pack read it.
Role = Literal[
    "vibration", "current", "voltage", "pressure", "flow", "temperature", "speed", "other"
]
MAX_SIGNALS = 16
SHIPPED = "shipped"
LEARN = "learn"


class SignalSpec(Section):
    """One signal of a profile: its name, where it comes from, its unit and role."""

    name: str = Field(min_length=1, description="Signal name inside the agent and its models.")
    source: str | None = Field(
        None, description="Signal name as the connector delivers it; null means `name`."
    )
    unit: str = Field("", description="Unit after scaling, e.g. bar, degC, A, l/min, g.")
    scale: float = Field(1.0, description="Multiplies each value as it arrives ...")
    offset: float = Field(0.0, description="... then this is added: value * scale + offset.")
    role: Role = Field(
        "other",
        description="What it measures: vibration, current, voltage, pressure, flow, "
        "temperature, speed or other.",
    )
    tolerance_pct: float | None = Field(
        None,
        gt=0,
        description="A learned model's tolerance floor in percent of the signal's level; "
        "null means its role's.",
    )

    @property
    def source_name(self) -> str:
        """The name readings of this signal arrive under."""
        return self.name if self.source is None else self.source

    @property
    def identity(self) -> bool:
        """Whether readings pass unchanged (same name, scale 1, offset 0)."""
        return self.source_name == self.name and self.scale == 1.0 and self.offset == 0.0


class Profile(Section):
    """A kind of machine: its signals and the model and rule packs that serve it."""

    name: str = Field(min_length=1, description="Profile name (in logs, state and metrics).")
    match: list[str] = Field(
        min_length=1, description="Asset name patterns (fnmatch: `pump-*`, `line?/p*`)."
    )
    signals: list[SignalSpec] = Field(
        min_length=1, max_length=MAX_SIGNALS, description="The signals, 1 to 16."
    )
    model: str = Field(
        LEARN,
        min_length=1,
        description="`shipped` (the simulator-trained model), `learn` (each asset learns its "
        "own model on the gateway) or the path of a fitted model's manifest.json.",
    )
    rules: list[Path] = Field(
        default_factory=list,
        description="Rule pack files; empty means the default pack for the model's kind "
        "(default.yaml for classifiers, learned.yaml for learned models).",
    )
    learn_period_s: float = Field(
        3600.0, gt=0, description="Event-time seconds of normal operation a `learn` asset records."
    )
    rate_hz: float = Field(
        1.0, gt=0, description="Grid rate a `learn` asset records and is scored at."
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for what, names in (
            ("signal name", [s.name for s in self.signals]),
            ("signal source", [s.source_name for s in self.signals]),
        ):
            seen: set[str] = set()
            for n in names:
                if n in seen:
                    raise ValueError(f"profile {self.name!r}: {what} {n!r} given twice")
                seen.add(n)
        return self

    @property
    def learns(self) -> bool:
        """Whether each asset of this profile learns its own model."""
        return self.model == LEARN

    @property
    def manifest_path(self) -> Path | None:
        """The fitted model's manifest, for a profile that names one."""
        return None if self.model in (SHIPPED, LEARN) else Path(self.model)

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The signals' names, in order."""
        return tuple(s.name for s in self.signals)

    def matches(self, asset: str) -> bool:
        """Whether `asset` is of this profile."""
        return any(fnmatch.fnmatchcase(asset, p) for p in self.match)


Criticality = Literal["low", "medium", "high"]


class AssetMeta(Section):
    """What rule packs know about one asset (meta.type, meta.criticality, meta.state)."""

    type: str = Field("pump", description="Kind of machine, e.g. pump, motor, fan.")
    criticality: Criticality = Field(
        "medium", description="How much the process depends on it: low, medium, high."
    )
    state: str = Field("running", description="Operating state as the site reports it.")


class AssetSettings(Section):
    """Assets: metadata for rule packs, and the profiles that say what each asset is."""

    meta: dict[str, AssetMeta] = Field(
        default_factory=dict,
        description='Asset -> {"type", "criticality", "state"} (JSON object); '
        "assets not listed get the defaults below.",
    )
    default_type: str = Field("pump", description="Type of an asset not listed in `meta`.")
    default_criticality: Criticality = Field(
        "medium", description="Criticality of an asset not listed in `meta`."
    )
    profiles: list[Profile] = Field(
        default_factory=list,
        description='Profiles (JSON list of {"name", "match", "signals": [{"name", "source", '
        '"unit", "scale", "offset", "role", "tolerance_pct"}], "model", "rules", '
        '"learn_period_s", "rate_hz"}); an asset takes the first profile that matches it. '
        "Empty: every asset is served by the shipped model, readings as they arrive.",
    )

    @model_validator(mode="after")
    def _unique_profiles(self) -> Self:
        seen: set[str] = set()
        for p in self.profiles:
            if p.name in seen:
                raise ValueError(f"profile name {p.name!r} given twice")
            seen.add(p.name)
        return self

    def of(self, asset: str) -> AssetMeta:
        """The metadata of one asset."""
        found = self.meta.get(asset)
        if found is not None:
            return found
        return AssetMeta(type=self.default_type, criticality=self.default_criticality)

    def profile_of(self, asset: str) -> Profile | None:
        """The first profile matching `asset`; None when none does."""
        for p in self.profiles:
            if p.matches(asset):
                return p
        return None


# Words that name what a measurement is, as instrument tags and historian columns spell them
# (ISA-5.1 letters aside): the first role whose word starts a word of the name wins.
_ROLE_WORDS: tuple[tuple[Role, tuple[str, ...]], ...] = (
    ("vibration", ("vib", "accel", "velocity")),
    ("temperature", ("temp", "thermo", "pt100", "rtd", "winding")),
    ("pressure", ("press", "suction", "discharge")),
    ("flow", ("flow",)),
    ("current", ("current", "amps", "ampere")),
    ("voltage", ("volt",)),
    ("speed", ("speed", "rpm", "freq")),
)


def _words(name: str) -> list[str]:
    spaced = "".join(
        f" {c}" if c.isupper() and i and name[i - 1].islower() else c for i, c in enumerate(name)
    )
    cleaned = "".join(c.lower() if c.isalpha() else " " for c in spaced)
    return cleaned.split()


def guess_role(name: str) -> Role:
    """The role a signal's name suggests (`Accelerometer1RMS` -> vibration), else `other`.

    Only for commissioning from files whose roles nobody gave; every guess is shown to the
    person, and `--roles` or a profile's `role` overrides it.
    """
    words = _words(name)
    for role, stems in _ROLE_WORDS:
        if any(w.startswith(stem) for w in words for stem in stems):
            return role
    return "other"
