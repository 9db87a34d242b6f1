"""One settings tree for the whole agent: env prefix `EDGE_`, nesting with `__`.

Read from the environment and from env files (later files win, the environment wins over
all). Every field has a default and a description; unknown `EDGE_*` names are errors.
"""

from __future__ import annotations

import difflib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from edge_agent.connectors.settings import (
    IngestSettings,
    MqttSettings,
    OpcUaSettings,
    SourceName,
    SparkplugSettings,
    UnsSettings,
    UplinkSettings,
)
from edge_agent.core.assets import AssetSettings
from edge_agent.core.errors import ConfigError
from edge_agent.core.settings import DELIMITER, PREFIX, LogSettings, Section
from edge_agent.daemon.bundles.settings import UpdateSettings
from edge_agent.daemon.flow.settings import FrameSettings, GateSettings
from edge_agent.daemon.learning.settings import LearningSettings
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.daemon.retention.settings import RetentionSettings
from edge_agent.daemon.service.settings import ServiceSettings
from edge_agent.models.settings import ModelSettings
from edge_agent.rules.settings import RuleSettings


def _default_sources() -> list[SourceName]:
    return ["mqtt"]


class AgentSettings(Section):
    """Identity and lifetime of this agent."""

    gateway_id: str = Field(
        "", description="Name of this gateway in topics and messages; empty means the host name."
    )
    state_dir: Path = Field(
        Path("/var/lib/edge-agent"),
        description="Directory for the outbox, evidence and bundles (systemd StateDirectory).",
    )
    sources: list[SourceName] = Field(
        default_factory=_default_sources,
        description="Where readings come from (JSON list): mqtt, opcua, sparkplug (any of them).",
    )
    shutdown_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Seconds a clean stop may wait for the outbox to drain to a connected uplink "
        "(what is not delivered stays in the outbox file); the whole stop is bounded by this "
        "plus 4 s.",
    )


class Settings(BaseSettings):
    """The whole configuration of one agent."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_nested_delimiter=DELIMITER,
        extra="ignore",  # unknown EDGE_* names are caught by `load_settings` with a better message
        frozen=True,
    )

    agent: AgentSettings = Field(default_factory=AgentSettings, description="Agent identity.")
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Sensor broker.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Payload mapping.")
    uplink: UplinkSettings = Field(default_factory=UplinkSettings, description="Upstream broker.")
    frames: FrameSettings = Field(default_factory=FrameSettings, description="Frames.")
    gate: GateSettings = Field(default_factory=GateSettings, description="Gate.")
    model: ModelSettings = Field(default_factory=ModelSettings, description="Model.")
    rules: RuleSettings = Field(default_factory=RuleSettings, description="Rule packs.")
    assets: AssetSettings = Field(
        default_factory=AssetSettings, description="Assets: metadata and profiles."
    )
    learning: LearningSettings = Field(
        default_factory=LearningSettings, description="Learning on the gateway."
    )
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="Outbox.")
    updates: UpdateSettings = Field(default_factory=UpdateSettings, description="Fleet updates.")
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings, description="OPC UA source.")
    sparkplug: SparkplugSettings = Field(
        default_factory=SparkplugSettings, description="Sparkplug B source."
    )
    uns: UnsSettings = Field(default_factory=UnsSettings, description="Unified Namespace.")
    service: ServiceSettings = Field(
        default_factory=ServiceSettings, description="Service: metrics, watchdog, pressure."
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="Retention: rings, evidence, history."
    )


def env_names() -> dict[str, tuple[str, str]]:
    """Map every valid variable name to its (section, field)."""
    names: dict[str, tuple[str, str]] = {}
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        assert issubclass(model, Section)
        for field in model.model_fields:
            names[f"{PREFIX}{section}{DELIMITER}{field}".upper()] = (section, field)
    return names


def _read_env_files(files: Sequence[Path]) -> tuple[dict[str, str], list[str]]:
    merged: dict[str, str] = {}
    problems: list[str] = []
    for path in files:
        if not path.is_file():
            problems.append(f"--env-file {path}: no such file")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--env-file {path}: cannot be read ({exc})")
            continue
        # python-dotenv skips a line it cannot parse with a warning naming neither file nor
        # line, and the setting silently keeps its default: here it is an error.
        bad = [b.original for b in parse_stream(io.StringIO(text)) if b.error]
        for line in bad:
            start = line.string.strip()
            shown = start if len(start) <= 24 else f"{start[:24]}..."  # it may hold a secret
            problems.append(
                f"--env-file {path}:{line.line}: cannot parse {shown!r} "
                "(expected NAME=value; JSON in single quotes or unquoted)"
            )
        if bad:
            continue
        values = dotenv_values(stream=io.StringIO(text))
        merged.update({k: v for k, v in values.items() if v is not None})
    return merged, problems


def _unknown(names: Iterable[str]) -> Iterator[str]:
    valid = env_names()
    sections = {f"{PREFIX}{s}".upper() for s in Settings.model_fields}
    for name in sorted(names):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in valid or upper in sections:
            continue
        hint = difflib.get_close_matches(upper, list(valid), n=1)
        suffix = f"; did you mean {hint[0]}?" if hint else ""
        yield f"{name}: unknown setting{suffix}"


def _describe(error: Mapping[str, Any], source: Mapping[str, str]) -> str:
    loc = [str(p) for p in error["loc"]]
    name = f"{PREFIX}{DELIMITER.join(loc[:2])}".upper()
    value = source.get(name, source.get(name.lower(), error.get("input")))
    where = f" (at {'.'.join(loc[2:])})" if len(loc) > 2 else ""
    return f"{name}={value!s}: {error['msg']}{where}"


def _json_problems(seen: Mapping[str, str]) -> Iterator[str]:
    """Name the variable whose JSON value does not parse (pydantic-settings names the section)."""
    valid = env_names()
    for name, value in seen.items():
        key = valid.get(name.upper())
        if key is None:
            continue
        section, field = key
        model = Settings.model_fields[section].annotation
        assert isinstance(model, type)
        assert issubclass(model, Section)
        annotation = model.model_fields[field].annotation
        # A list or mapping, or one of them beside words (`Literal["auto"] | list[...]`).
        options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
        words = [w for o in options if get_origin(o) is Literal for w in get_args(o)]
        origin = next(
            (k for o in (annotation, *options) if (k := get_origin(o)) in (list, dict)), None
        )
        if origin is not None and value not in words:
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                kind = "list" if origin is list else "object"
                either = "".join(f"{w} or " for w in words)
                yield (
                    f"{name}={value}: expected {either}a JSON {kind} "
                    f"({exc.msg} at column {exc.colno})"
                )


def _credentials(seen: Mapping[str, str]) -> dict[str, Any]:
    """Secrets from systemd credentials: `$CREDENTIALS_DIRECTORY/EDGE_<SECTION>__<FIELD>`.

    Only secret fields are read this way, and only when the variable is not set otherwise.
    The unit's `LoadCredential=EDGE:/etc/edge-agent/credentials` names a file `MQTT__PASSWORD`
    there `EDGE_MQTT__PASSWORD`.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    upper = {k.upper() for k in seen}
    found: dict[str, dict[str, str]] = {}
    for name, (section, field) in env_names().items():
        model = Settings.model_fields[section].annotation
        assert isinstance(model, type)
        assert issubclass(model, Section)
        annotation = model.model_fields[field].annotation
        if not (annotation is SecretStr or SecretStr in get_args(annotation)) or name in upper:
            continue
        path = Path(directory) / name
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: credential {path} cannot be read ({exc})") from exc
        found.setdefault(section, {})[field] = value
    return found


def load_settings(env_files: Sequence[Path] = ()) -> Settings:
    """Read and validate the settings, raising ConfigError that lists every problem."""
    from_files, problems = _read_env_files(env_files)
    seen = {**from_files, **os.environ}
    problems += list(_unknown(seen))
    problems += list(_json_problems(seen))
    if problems:
        raise ConfigError("\n".join(problems))
    existing = tuple(p for p in env_files if p.is_file())
    try:
        return Settings(_env_file=existing or None, **_credentials(seen))
    except ValidationError as exc:
        upper = {k.upper(): v for k, v in seen.items()}
        raise ConfigError("\n".join(_describe(e, upper) for e in exc.errors())) from exc
    except SettingsError as exc:  # pragma: no cover - _json_problems catches the known causes
        raise ConfigError(str(exc)) from exc


def render_env_file() -> str:
    """Render the documented env file: every setting, its description and its default."""
    lines = [
        "# edge-agent settings. Every line is commented out at its default; uncomment to change.",
        "# Generated by `edge-agent config env`; tests fail when it drifts from the code.",
        "# Lists and mappings are JSON. Secrets may also come from systemd credentials.",
    ]
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        assert issubclass(model, Section)
        summary = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        lines += ["", f"## {section}: {summary}"]
        for field, finfo in model.model_fields.items():
            default = finfo.get_default(call_default_factory=True)
            if isinstance(default, BaseModel | list | dict):
                text = json.dumps(default, default=str)
            elif default is None:
                text = ""
            else:
                text = str(default)
            lines.append(f"# {finfo.description}")
            lines.append(f"#{PREFIX}{section.upper()}{DELIMITER}{field.upper()}={text}")
    return "\n".join(lines) + "\n"
