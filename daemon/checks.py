"""What `edge-agent check-config` checks beyond the settings' types.

All that `run` checks before it serves, and what `run` would take without a word but cannot
work with.

Each check returns the problems it found, one line each, naming the setting
(`EDGE_SECTION__FIELD=value: what is wrong`). `check_all` runs every check, so one run of
check-config lists every problem, not only the first. Checks read files and build the model
and the rule packs as `run` does (a few seconds); they connect to nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable

from edge_agent.connectors.mapping import PayloadMapper
from edge_agent.connectors.mqtt_tls import ssl_context
from edge_agent.connectors.uplink import uplink_tls
from edge_agent.core.errors import EdgeAgentError
from edge_agent.daemon.settings import Settings
from edge_agent.models.manifest import Manifest, load_manifest

Check = Callable[[Settings], list[str]]


def check_all(settings: Settings) -> list[str]:
    """Every problem found, in the order of the checks."""
    problems: list[str] = []
    for check in CHECKS:
        problems += check(settings)
    return problems


def _errors(fn: Callable[[], object], setting: str = "") -> list[str]:
    """[] when `fn` runs, else its error (prefixed with `setting` unless it names one)."""
    try:
        fn()
    except (EdgeAgentError, OSError, ValueError) as exc:
        text = str(exc)
        return [text if not setting or "EDGE_" in text else f"{setting}: {text}"]
    return []


def _manifest(settings: Settings) -> Manifest | None:
    try:
        return load_manifest(settings.model.manifest)
    except (EdgeAgentError, OSError, ValueError):
        return None


def model_and_rules(settings: Settings) -> list[str]:
    """The model manifest and its files, the rule packs, and the profiles' lanes load."""
    from edge_agent.daemon.app import build_shipped_lane, gateway_id  # noqa: PLC0415 - heavy
    from edge_agent.daemon.flow.lanes import profile_lanes  # noqa: PLC0415

    problems = _errors(lambda: load_manifest(settings.model.manifest), "EDGE_MODEL__MANIFEST")
    if problems:
        return problems
    packs = "EDGE_RULES__PACKS=" + ",".join(str(p) for p in settings.rules.packs)
    problems = [
        f"{packs}: {path}: no such file" for path in settings.rules.packs if not path.is_file()
    ]
    if problems:
        return problems

    def lanes() -> None:
        shipped = build_shipped_lane(settings)
        profile_lanes(settings, gateway_id(settings), shipped.manifest)

    return _errors(lanes, packs if settings.rules.packs else "EDGE_MODEL__MANIFEST")


def files(settings: Settings) -> list[str]:
    """Trusted bundle keys and TLS files (CA, client certificate and key) can be read."""
    from edge_agent.daemon.bundles.bundle import TrustedKeys  # noqa: PLC0415

    problems: list[str] = []
    keys = settings.updates.trusted_keys
    if keys is not None:
        problems += _errors(lambda: TrustedKeys.load(keys), f"EDGE_UPDATES__TRUSTED_KEYS={keys}")
    for section in dict.fromkeys((settings.mqtt, uplink_tls(settings))):
        if section.tls_ca is not None or section.tls_cert is not None:
            problems += _errors(lambda s=section: ssl_context(s))  # type: ignore[misc]
    return problems


def sources(settings: Settings) -> list[str]:
    """Each configured source can start: topics with {asset}, OPC UA nodes and security files."""
    problems: list[str] = []
    if "mqtt" in settings.agent.sources:
        problems += _errors(lambda: PayloadMapper(settings.ingest), "EDGE_INGEST__TOPICS")
    if "opcua" in settings.agent.sources:
        from edge_agent.connectors.opcua_nodes import parse_node_map  # noqa: PLC0415 - asyncua
        from edge_agent.connectors.opcua_security import check_files  # noqa: PLC0415

        opcua = settings.opcua
        if not opcua.nodes:
            problems.append(
                "EDGE_OPCUA__NODES=[]: the opcua source (EDGE_AGENT__SOURCES) needs at least "
                "one node to read"
            )
        problems += _errors(lambda: parse_node_map(opcua.nodes))
        problems += _errors(lambda: check_files(opcua))
    return problems


def signals(settings: Settings) -> list[str]:
    """Every signal the settings name is one a model reads (else its readings are dropped)."""
    manifest = _manifest(settings)
    if manifest is None:
        return []  # model_and_rules says why
    known = set(manifest.signals)
    for profile in settings.assets.profiles:
        known |= set(profile.signal_names)
        known |= {s.source_name for s in profile.signals}
    problems = [
        f"EDGE_INGEST__SIGNALS: field {field!r} is mapped to {name!r}, which no model reads "
        f"({_listed(known)}): its readings would be dropped"
        for field, name in settings.ingest.signals.items()
        if name not in known
    ]
    if "opcua" in settings.agent.sources:
        problems += [
            f"EDGE_OPCUA__NODES[{i}] ({node.asset}/{node.signal}): signal {node.signal!r} is "
            f"one no model reads ({_listed(known)}): its readings would be dropped"
            for i, node in enumerate(settings.opcua.nodes)
            if node.signal not in known
        ]
    return problems


def state_dir(settings: Settings) -> list[str]:
    """The state directory exists (or can be made) and a file can be written in it."""
    path = settings.agent.state_dir
    setting = f"EDGE_AGENT__STATE_DIR={path}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-config-"):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        text = f"{setting}: cannot write there ({why}): the outbox would run from memory, and "
        return [text + "evidence and rule state would not be kept"]
    return []


def _listed(names: Iterable[str]) -> str:
    return "model signals: " + ", ".join(sorted(names))


CHECKS: tuple[Check, ...] = (state_dir, files, sources, model_and_rules, signals)
