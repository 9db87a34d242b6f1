"""One settings tree for the whole agent: env prefix `EDGE_`, nesting with `__`.

Read from the environment and from env files (later files win, the environment wins over
all). Every field has a default and a description; unknown `EDGE_*` names are errors.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from edge_agent.daemon.errors import ConfigError

PREFIX = "EDGE_"
DELIMITER = "__"


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SourceName = Literal["mqtt", "opcua"]


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
        description="Where readings come from (JSON list): mqtt, opcua, or both.",
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a clean stop may take before work in flight is abandoned."
    )


class LogSettings(Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="json lines, readable console, or auto (console on a terminal)."
    )


class MqttSettings(Section):
    """The broker the sensors publish to."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str = Field("", description="MQTT client id; empty means edge-agent-<gateway_id>.")
    username: str | None = Field(None, description="User name, if the broker asks for one.")
    password: SecretStr | None = Field(None, description="Password for `username` (secret).")
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1",
        description="MQTT protocol version of the sensor client. 3.1.1 by default: paho parses "
        "the MQTT 5 properties of every incoming message, which halves ingest speed; "
        "$share/ subscriptions work with 3.1.1 on mosquitto, EMQX and HiveMQ.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="Keep-alive interval in seconds.")
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay (jittered).")
    reconnect_max_s: float = Field(30.0, gt=0, description="Cap on the reconnect delay.")
    connect_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a TCP connect and TLS handshake may take."
    )
    session_expiry_s: int = Field(
        0,
        ge=0,
        description="MQTT session kept by the broker after a disconnect (MQTT 5 session expiry; "
        "under 3.1.1 any value > 0 means a persistent session); 0: a clean session.",
    )
    max_inflight: int = Field(
        100, ge=1, le=65535, description="QoS 1 messages sent and not yet acknowledged, at most."
    )
    tls_ca: Path | None = Field(
        None, description="CA certificate file (PEM) that signs the broker's; set to use TLS."
    )
    tls_cert: Path | None = Field(None, description="Client certificate file (PEM), optional.")
    tls_key: Path | None = Field(
        None,
        description="Client private key file (PEM); a relative name is looked up in systemd's "
        "$CREDENTIALS_DIRECTORY first.",
    )
    tls_key_password: SecretStr | None = Field(
        None, description="Passphrase of `tls_key`, if it is encrypted (secret)."
    )


class IngestSettings(Section):
    """How MQTT messages become readings: topics and payload mapping are data, not code."""

    topics: list[str] = Field(
        default_factory=lambda: ["plant/{asset}/telemetry"],
        description="Topic patterns (JSON list); `{asset}` (and optionally `{signal}`) name a "
        "whole topic level and are subscribed to as `+`; `$share/<group>/` is kept as given.",
    )
    qos: int = Field(0, ge=0, le=2, description="Subscription QoS for sensor topics.")
    ts_field: str = Field("ts", description="JSON field holding the reading's timestamp.")
    ts_unit: Literal["s", "ms"] = Field("s", description="Unit of the timestamp field.")
    value_field: str = Field(
        "value", description="JSON field holding the value when the topic names the signal."
    )
    batch_field: str = Field(
        "readings",
        description="JSON field holding a list of readings; a top-level list is a batch too.",
    )
    signals: dict[str, str] = Field(
        default_factory=dict,
        description="JSON field -> signal name (JSON object); empty means every numeric field "
        "other than the timestamp, under its own name.",
    )
    max_payload_bytes: int = Field(
        65536, ge=64, description="Larger payloads are rejected to the dead-letter topic."
    )
    deadletter_topic: str = Field(
        "edge-agent/{gateway}/deadletter",
        description="Prefix for rejected payloads, republished unchanged to "
        "<prefix>/<reason>/<original topic>; empty disables republishing.",
    )
    max_buffered: int = Field(
        200_000,
        ge=1000,
        description="Readings held between the connector and the frames; when full, new "
        "readings are dropped and counted (reason buffer_full).",
    )
    log_interval_s: float = Field(
        10.0, gt=0, description="At most one log line per rejection reason per interval."
    )


class UplinkSettings(Section):
    """The upstream broker that receives recommendations."""

    host: str = Field("", description="Upstream broker host; empty means the same as EDGE_MQTT.")
    port: int = Field(0, ge=0, le=65535, description="Upstream port; 0 means EDGE_MQTT__PORT.")
    topic_prefix: str = Field(
        "edge-agent/{gateway}",
        description="Prefix of every upstream topic; `{gateway}` is the gateway id.",
    )
    qos: int = Field(1, ge=0, le=2, description="QoS of recommendations (1: at least once).")
    protocol: Literal["3.1.1", "5"] = Field(
        "5",
        description="MQTT protocol version upstream; 5 carries the message id as a user "
        "property and the session expiry.",
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        description="Upstream MQTT session kept by the broker after a disconnect (seconds); "
        "0: a clean session.",
    )
    max_inflight: int = Field(
        100, ge=1, le=65535, description="Upstream messages sent and not yet acknowledged."
    )
    tls_ca: Path | None = Field(
        None,
        description="Upstream CA file (PEM); empty means EDGE_MQTT__TLS_CA when host is empty.",
    )
    tls_cert: Path | None = Field(None, description="Upstream client certificate (PEM).")
    tls_key: Path | None = Field(
        None, description="Upstream client key (PEM); relative: in $CREDENTIALS_DIRECTORY first."
    )
    tls_key_password: SecretStr | None = Field(
        None, description="Passphrase of the upstream client key (secret)."
    )


class FrameSettings(Section):
    """Per-asset frames on a fixed-rate grid (rate and window come from the model)."""

    stale_after_s: float = Field(
        10.0, gt=0, description="A signal not updated for this long makes its windows incomplete."
    )
    max_assets: int = Field(
        1000, ge=1, description="Assets tracked at once; readings of further assets are dropped."
    )
    max_gap_s: float = Field(
        300.0, gt=0, description="A jump in time longer than this restarts the asset's frame."
    )
    max_pending_windows: int = Field(
        4096, ge=16, description="Windows waiting for the scorer; when full the oldest is dropped."
    )


class GateSettings(Section):
    """The cheap statistical stage ahead of the model."""

    mode: Literal["all", "adaptive"] = Field(
        "adaptive",
        description="all: every window is scored; adaptive: normal windows are skipped when the "
        "backlog passes `backlog_high`, except every `sample_every`-th.",
    )
    ewma_alpha: float = Field(
        0.02, gt=0, le=1, description="Weight of a new window in the per-signal baseline."
    )
    z_limit: float = Field(
        4.0, gt=0, description="Window mean z-score that always needs the model."
    )
    sample_every: int = Field(
        10, ge=1, description="Under load, one normal window in this many is still scored."
    )
    backlog_high: int = Field(
        512, ge=1, description="Pending windows above which the gate skips normal windows."
    )


BackendName = Literal["onnx", "litert"]


def _default_backends() -> list[BackendName]:
    return ["onnx"]


class ModelSettings(Section):
    """The anomaly model and its runtimes."""

    manifest: Path | None = Field(
        None, description="Model manifest.json; empty means the model shipped with the agent."
    )
    backends: list[BackendName] = Field(
        default_factory=_default_backends,
        description="Backends to try, in order (JSON list); the first that loads is used and "
        "the next takes over if it fails.",
    )
    onnx_providers: list[str] = Field(
        default_factory=lambda: [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ],
        description="ONNX Runtime execution providers to try, in order (JSON list).",
    )
    max_batch: int = Field(64, ge=1, le=4096, description="Windows scored in one model call.")
    litert_delegates: list[str] = Field(
        default_factory=list,
        description="LiteRT delegate libraries to try before the CPU (JSON list), e.g. "
        '["libedgetpu.so.1"] for a Coral Edge TPU; one that cannot load is logged and skipped.',
    )
    precision: Literal["fp32", "int8"] = Field(
        "fp32", description="Model precision to load: fp32, or int8 (smaller and faster)."
    )


class RuleSettings(Section):
    """Rule packs that turn scores into recommendations."""

    packs: list[Path] = Field(
        default_factory=list,
        description="Rule pack files (JSON list); empty means the pack shipped with the agent.",
    )
    review_topic: str = Field(
        "needs_review",
        description="Topic level under the uplink prefix for anomalies the model cannot "
        "classify: <prefix>/<review_topic>/<asset>.",
    )
    max_assets: int = Field(
        1000,
        ge=1,
        description="Assets whose rule state is kept; past it the least recently seen asset's "
        "state is dropped (counted).",
    )


Criticality = Literal["low", "medium", "high"]


class AssetMeta(Section):
    """What rule packs know about one asset (meta.type, meta.criticality, meta.state)."""

    type: str = Field("pump", description="Kind of machine, e.g. pump, motor, fan.")
    criticality: Criticality = Field(
        "medium", description="How much the process depends on it: low, medium, high."
    )
    state: str = Field("running", description="Operating state as the site reports it.")


class AssetSettings(Section):
    """Asset metadata for rule packs."""

    meta: dict[str, AssetMeta] = Field(
        default_factory=dict,
        description='Asset -> {"type", "criticality", "state"} (JSON object); '
        "assets not listed get the defaults below.",
    )
    default_type: str = Field("pump", description="Type of an asset not listed in `meta`.")
    default_criticality: Criticality = Field(
        "medium", description="Criticality of an asset not listed in `meta`."
    )

    def of(self, asset: str) -> AssetMeta:
        """The metadata of one asset."""
        found = self.meta.get(asset)
        if found is not None:
            return found
        return AssetMeta(type=self.default_type, criticality=self.default_criticality)


class OpcUaNode(Section):
    """One entry of the OPC UA node map: where a value lives and what it means."""

    node_id: str = Field(
        "", description="Node id, e.g. ns=2;s=pump-1.temperature; empty when browse_path is used."
    )
    browse_path: str = Field(
        "",
        description="Browse path from the Objects folder, e.g. 2:pump-1/2:temperature "
        "(namespace index:browse name per level); used when node_id is empty.",
    )
    asset: str = Field(..., min_length=1, description="Asset the value belongs to.")
    signal: str = Field(..., min_length=1, description="Signal name within the asset.")
    scale: float = Field(1.0, description="Reading value = raw value * scale + offset.")
    offset: float = Field(0.0, description="Added after scaling.")
    unit: str = Field("", description="Unit of the reading after scaling (documentation only).")

    @property
    def name(self) -> str:
        """The configured node id or browse path, as a person wrote it."""
        return self.node_id or self.browse_path

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaNode:
        if bool(self.node_id) == bool(self.browse_path):
            raise ValueError(
                f"node map entry for {self.asset}/{self.signal}: give exactly one of node_id "
                "and browse_path"
            )
        return self


class OpcUaSettings(Section):
    """The OPC UA server the agent reads (used when `opcua` is in EDGE_AGENT__SOURCES)."""

    endpoint: str = Field("opc.tcp://127.0.0.1:4840", description="Server endpoint URL.")
    nodes: list[OpcUaNode] = Field(
        default_factory=list,
        description="Node map (JSON list of objects): node_id or browse_path, asset, signal, "
        "and optional scale, offset, unit.",
    )
    mode: Literal["subscription", "polling"] = Field(
        "subscription",
        description="subscription: the server sends data changes; polling: batched reads "
        "every poll_interval_s, within the server's OperationLimits.",
    )
    publishing_interval_ms: float = Field(
        1000.0, gt=0, description="Subscription publishing interval (how often data is sent)."
    )
    sampling_interval_ms: float = Field(
        1000.0, ge=0, description="Monitored item sampling interval; 0 means as fast as possible."
    )
    queue_size: int = Field(
        10, ge=1, description="Values the server queues per item between two publishes."
    )
    deadband: Literal["none", "absolute", "percent"] = Field(
        "none", description="Data change filter: none, absolute, or percent of the EU range."
    )
    deadband_value: float = Field(0.0, ge=0, description="Deadband size for `deadband`.")
    poll_interval_s: float = Field(1.0, gt=0, description="Polling mode: seconds between reads.")
    max_nodes_per_read: int = Field(
        1000,
        ge=1,
        description="Polling mode: nodes per Read call; a lower server MaxNodesPerRead wins.",
    )
    security_policy: Literal["None", "Basic256Sha256"] = Field(
        "Basic256Sha256", description="Security policy of the secure channel."
    )
    security_mode: Literal["Sign", "SignAndEncrypt"] = Field(
        "SignAndEncrypt", description="Message security mode with Basic256Sha256."
    )
    allow_insecure: bool = Field(
        default=False, description="Allow security_policy None (no signing, no encryption)."
    )
    certificate: Path | None = Field(
        None, description="Client application certificate (PEM or DER) for Basic256Sha256."
    )
    private_key: Path | None = Field(None, description="Private key of `certificate` (PEM or DER).")
    private_key_password: SecretStr | None = Field(
        None, description="Password of `private_key`, if it is encrypted (secret)."
    )
    application_uri: str = Field(
        "urn:edge-agent:client",
        description="Client application URI; must match the URI in the certificate's SAN.",
    )
    pki_dir: Path = Field(
        Path("/var/lib/edge-agent/opcua-pki"),
        description="Trusted server certificates or CAs in <pki_dir>/trusted; an untrusted "
        "server certificate is saved to <pki_dir>/rejected for review.",
    )
    username: str | None = Field(None, description="User name, if the server asks for one.")
    password: SecretStr | None = Field(None, description="Password for `username` (secret).")
    timeout_s: float = Field(4.0, gt=0, description="Seconds to wait for one server response.")
    watchdog_s: float = Field(
        1.0, gt=0, description="Seconds between liveness probes of the server."
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay (jittered).")
    reconnect_max_s: float = Field(5.0, gt=0, description="Cap on the reconnect delay.")
    max_buffered: int = Field(
        100_000,
        ge=100,
        description="Readings held between the connector and the frames; when full the oldest "
        "is dropped and counted (reason opcua_buffer_full): fresh values matter most.",
    )
    max_batch: int = Field(1000, ge=1, description="Readings handed on in one batch at most.")
    log_interval_s: float = Field(
        10.0, gt=0, description="At most one log line per problem kind per interval."
    )

    @model_validator(mode="after")
    def _insecure_needs_consent(self) -> OpcUaSettings:
        if self.security_policy == "None" and not self.allow_insecure:
            raise ValueError(
                "EDGE_OPCUA__SECURITY_POLICY=None sends everything unsigned and in clear; "
                "set EDGE_OPCUA__ALLOW_INSECURE=true to allow it"
            )
        return self


class OutboxSettings(Section):
    """Messages waiting for the uplink."""

    max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        description="Size cap of the outbox file in bytes (SQLite pages); when full the lowest "
        "priority class, oldest first, is dropped.",
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="normal: a message survives a crash of the agent once put() returns, the "
        "last ones may be lost on power loss; full: fsync per put(), survives power loss.",
    )
    memory_max_messages: int = Field(
        10_000,
        ge=10,
        description="Messages buffered in memory while the disk cannot be written (disk full, "
        "read-only); when full the lowest priority class, oldest first, is dropped.",
    )


class ServiceSettings(Section):
    """Running as a service: metrics and health endpoint, systemd watchdog, pressure."""

    http_enabled: bool = Field(
        default=True, description="Serve /metrics (Prometheus text) and /health (JSON); false: off."
    )
    http_host: str = Field(
        "127.0.0.1", description="Address the metrics/health endpoint binds to (local only)."
    )
    http_port: int = Field(
        9108, ge=0, le=65535, description="Port of the metrics/health endpoint; 0: any free port."
    )
    http_max_connections: int = Field(
        16, ge=1, le=1024, description="Open scrape connections; further ones are refused."
    )
    watchdog: bool = Field(
        default=True, description="Send WATCHDOG=1 to systemd when it asks for it (WATCHDOG_USEC)."
    )
    watchdog_ratio: float = Field(
        0.5, gt=0, le=0.9, description="Ping interval as a fraction of systemd's WatchdogSec."
    )
    status_interval_s: float = Field(
        30.0, gt=0, description="Seconds between STATUS= lines sent to systemd."
    )
    lag_interval_s: float = Field(
        0.25, gt=0, description="Period of the event-loop lag probe in seconds."
    )
    lag_high_s: float = Field(
        0.5, gt=0, description="Event-loop lag (seconds) above which degraded mode engages."
    )
    lag_low_s: float = Field(
        0.1, ge=0, description="Event-loop lag (seconds) below which degraded mode may clear."
    )
    backlog_high: int = Field(
        2048, ge=1, description="Windows waiting for the scorer above which degraded mode engages."
    )
    backlog_low: int = Field(
        256, ge=0, description="Windows waiting below which degraded mode may clear."
    )
    clear_after_s: float = Field(
        10.0, ge=0, description="Lag and backlog must stay low this long before the mode clears."
    )
    debug_stall_s: float = Field(
        0.0,
        ge=0,
        description="Debug only: when > 0, SIGUSR2 blocks the event loop this many seconds "
        "(to test the watchdog); 0: off.",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> ServiceSettings:
        """The clear bounds must sit below the engage bounds, or the mode would flap."""
        if self.lag_low_s >= self.lag_high_s:
            raise ValueError(
                f"EDGE_SERVICE__LAG_LOW_S={self.lag_low_s} must be below "
                f"EDGE_SERVICE__LAG_HIGH_S={self.lag_high_s}"
            )
        if self.backlog_low >= self.backlog_high:
            raise ValueError(
                f"EDGE_SERVICE__BACKLOG_LOW={self.backlog_low} must be below "
                f"EDGE_SERVICE__BACKLOG_HIGH={self.backlog_high}"
            )
        return self


class UpdateSettings(Section):
    """Fleet updates: signed bundles delivered as jobs over MQTT."""

    trusted_keys: Path | None = Field(
        None,
        description="File of Ed25519 public keys (`ed25519 <base64> [comment]` per line) that "
        "may sign bundles; several keys allow rotation; empty disables fleet updates.",
    )
    groups: list[str] = Field(
        default_factory=list,
        description="Fleet groups this gateway belongs to (JSON list); each adds a job topic.",
    )
    gateway_topic: str = Field(
        "edge-agent/{gateway}/jobs/notify",
        description="Topic on which jobs for this gateway arrive; `{gateway}` is the gateway id.",
    )
    group_topic: str = Field(
        "edge-agent/groups/{group}/jobs/notify",
        description="Topic on which jobs for a group arrive; `{group}` is each of `groups`.",
    )
    state_topic: str = Field(
        "edge-agent/{gateway}/jobs/state",
        description="Retained topic where this gateway reports each job's state.",
    )
    qos: int = Field(1, ge=0, le=2, description="QoS of job subscriptions and state reports.")
    probation_s: float = Field(
        30.0,
        ge=0,
        description="Seconds a new bundle must run without a scoring error before it is kept.",
    )
    max_job_bytes: int = Field(
        16 << 20,
        ge=1024,
        description="Larger job messages (inline files included) are refused and counted.",
    )
    max_bundle_bytes: int = Field(
        512 << 20,
        ge=1024,
        description="A bundle whose files add up to more than this is rejected before download.",
    )
    max_pending_jobs: int = Field(
        16,
        ge=1,
        description="Jobs waiting while one installs; further jobs are dropped and counted.",
    )
    download_timeout_s: float = Field(
        300.0, gt=0, description="Seconds one download attempt of a whole bundle may take."
    )


class RetentionSettings(Section):
    """Raw rings, evidence windows around anomalies, and compressed history, in byte budgets."""

    ring_seconds: float = Field(
        300.0, gt=0, description="Seconds of every signal kept at full resolution in memory."
    )
    ring_rate_hz: float = Field(
        10.0,
        gt=0,
        description="Fastest planned rate of one signal; a ring holds ring_seconds at this "
        "rate, and faster signals overwrite young samples (counted, class ring).",
    )
    ring_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        description="Bytes for all rings together (17 per sample); signals beyond what fits "
        "are not retained, and their readings counted as dropped (retention_no_ring).",
    )
    evidence_pre_s: float = Field(
        60.0, ge=0, description="Seconds before a trigger frozen into its evidence record."
    )
    evidence_post_s: float = Field(
        60.0, ge=0, description="Seconds after a trigger (event time) frozen into the record."
    )
    evidence_ttl_s: float = Field(
        7 * 86400.0, gt=0, description="Seconds an evidence record is kept on disk."
    )
    evidence_max_pending: int = Field(
        64,
        ge=1,
        description="Records waiting for their post-trigger window; when full the oldest is "
        "frozen early, marked incomplete, and counted (outcome cut).",
    )
    store_bytes: int = Field(
        256 * 2**20,
        ge=65536,
        description="Bytes for evidence (on disk) and compressed history (in memory) together; "
        "evidence outranks history, oldest first within a class, every eviction counted.",
    )
    history_bytes: int = Field(
        16 * 2**20,
        ge=4096,
        description="Cap on the compressed history inside store_bytes.",
    )
    history_ttl_s: float = Field(
        86400.0, gt=0, description="Seconds compressed history is kept locally."
    )
    deviation_pct: float = Field(
        1.0,
        gt=0,
        description="Allowed reconstruction error as percent of span, for signals without an "
        "absolute deviation; the span is `spans` or else the range seen so far.",
    )
    deviations: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute allowed error by signal or asset/signal (JSON object).",
    )
    spans: dict[str, float] = Field(
        # Instrument ranges (zero to full scale of the transmitter), as PI-style historians
        # take "span", for the simulator's pumps; each is a standard range a controls engineer
        # would pick for that duty:
        # - temperature 0-150 degC: motor winding Pt100 transmitter, covering insulation
        #   class F (155 degC);
        # - vibration 0-25 mm/s RMS: the common range of 4-20 mA velocity transmitters,
        #   reaching well into ISO 20816 zone D;
        # - current 0-50 A: a 50/5 A current transformer for a motor of ~30 A full load;
        # - pressure 0-10 bar: discharge transmitter, ~1.8 x the highest discharge pressure;
        # - flow 0-200 m3/h: magnetic flowmeter ranged at ~2 x the design flow (~85 m3/h).
        default_factory=lambda: {
            "temperature": 150.0,
            "vibration": 25.0,
            "current": 50.0,
            "pressure": 10.0,
            "flow": 200.0,
        },
        description="Engineering span (instrument range, zero to full scale) by signal or "
        "asset/signal (JSON object), for deviation_pct; the defaults are the simulator "
        "pumps' transmitter ranges.",
    )
    exception_share: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of the deviation given to the deadband ahead of the swinging door "
        "(half of it each way, as the deadband keeps the value before each exception); the "
        "rest is the door's. Larger: cheaper on steady signals, fewer points kept on noisy ones.",
    )
    max_interval_s: float = Field(
        600.0, gt=0, description="Longest time between two retained history points."
    )
    digest_topic: str = Field(
        "edge-agent/{gateway}/digest/{asset}",
        description="Topic of history digests (priority DIGEST); `{gateway}`, `{asset}`.",
    )
    digest_max_points: int = Field(
        20_000, ge=100, description="Points in one digest message at most."
    )
    request_topic: str = Field(
        "edge-agent/{gateway}/evidence/request",
        description='Topic on which evidence is requested: JSON {"id", "correlation"}.',
    )
    response_topic: str = Field(
        "edge-agent/{gateway}/evidence/response",
        description="Topic of evidence replies and errors (unknown, expired, pending).",
    )
    log_interval_s: float = Field(
        10.0, gt=0, description="At most one log line per retention problem per interval."
    )

    @model_validator(mode="after")
    def _windows_fit(self) -> RetentionSettings:
        if self.evidence_pre_s + self.evidence_post_s > self.ring_seconds:
            raise ValueError(
                "EDGE_RETENTION__EVIDENCE_PRE_S + EVIDENCE_POST_S must not exceed "
                "EDGE_RETENTION__RING_SECONDS: the ring must still hold the window when it freezes"
            )
        if self.history_bytes > self.store_bytes:
            raise ValueError(
                "EDGE_RETENTION__HISTORY_BYTES must not exceed EDGE_RETENTION__STORE_BYTES"
            )
        return self


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
    assets: AssetSettings = Field(default_factory=AssetSettings, description="Asset metadata.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="Outbox.")
    updates: UpdateSettings = Field(default_factory=UpdateSettings, description="Fleet updates.")
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings, description="OPC UA source.")
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
            values = dotenv_values(path)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--env-file {path}: cannot be read ({exc})")
            continue
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
        origin = getattr(model.model_fields[field].annotation, "__origin__", None)
        if origin in (list, dict):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                kind = "list" if origin is list else "object"
                yield f"{name}={value}: expected a JSON {kind} ({exc.msg} at column {exc.colno})"


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
        lines += ["", f"## {section}: {(model.__doc__ or '').strip()}"]
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
