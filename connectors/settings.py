"""Settings of the connectors: the sensor broker, MQTT ingest, the uplink and OPC UA."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from edge_agent.core.settings import Section, TlsSection

SourceName = Literal["mqtt", "opcua", "sparkplug"]  # connectors/registry.py opens each

# What an MQTT session is tuned by, the same for the sensor broker and the uplink; each
# section sets its own default.
SessionExpiry = Annotated[
    int,
    Field(
        ge=0,
        description="MQTT session kept by the broker after a disconnect, in seconds (MQTT 5 "
        "session expiry; under 3.1.1 any value > 0 means a persistent session); 0: a clean "
        "session.",
    ),
]
MaxInflight = Annotated[
    int,
    Field(ge=1, le=65535, description="QoS 1 messages sent and not yet acknowledged, at most."),
]
# What the MQTT sources (JSON ingest, Sparkplug) share: where rejects go, how much may wait.
DeadletterTopic = Annotated[
    str,
    Field(
        description="Prefix for rejected payloads, republished unchanged to "
        "<prefix>/<reason>/<original topic>; empty disables republishing."
    ),
]
MaxBuffered = Annotated[
    int,
    Field(
        ge=1000,
        description="Readings held between the connector and the frames; when full, new "
        "readings are dropped and counted (reason buffer_full).",
    ),
]


class MqttSettings(TlsSection):
    """The broker the sensors publish to."""

    env: ClassVar[str] = "EDGE_MQTT__"  # what errors about this section name

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
    session_expiry_s: SessionExpiry = 0
    max_inflight: MaxInflight = 100


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
        65536,
        ge=64,
        description="Larger payloads are rejected to the dead-letter topic (which carries at "
        "most this many bytes of a payload).",
    )
    max_name_bytes: int = Field(
        128,
        ge=8,
        le=4096,
        description="Longest asset or signal name (UTF-8 bytes); a message naming a longer one "
        "is rejected (name_too_long): names become topic levels, rows and file names.",
    )
    ts_max_ahead_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="A reading further ahead of the gateway's clock than this is rejected "
        "(implausible_ts); the log says when it looks like milliseconds.",
    )
    ts_max_age_s: float = Field(
        0.0,
        ge=0,
        description="A reading further behind the gateway's clock than this is rejected "
        "(implausible_ts); 0: any age (old data may be replayed).",
    )
    ts_max_jump_s: float = Field(
        300.0,
        gt=0,
        description="A message this far ahead of its asset's newest reading is rejected "
        "(implausible_ts) until another message near its time confirms the jump: one message "
        "cannot move an asset's clock.",
    )
    deadletter_topic: DeadletterTopic = "edge-agent/{gateway}/deadletter"
    max_buffered: MaxBuffered = 200_000
    log_interval_s: float = Field(
        10.0, gt=0, description="At most one log line per rejection reason per interval."
    )


class UplinkSettings(TlsSection):
    """The upstream broker that receives recommendations.

    With `host` empty the uplink is the sensor broker, and an empty `tls_ca` means
    EDGE_MQTT__TLS_CA; the client key is looked up in $CREDENTIALS_DIRECTORY first.
    """

    env: ClassVar[str] = "EDGE_UPLINK__"  # what errors about this section name

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
    session_expiry_s: SessionExpiry = 3600
    max_inflight: MaxInflight = 100


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
        description="subscription: the server sends data changes; polling: batched reads.",
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


class SparkplugSettings(Section):
    """Sparkplug B ingest (used when `sparkplug` is in EDGE_AGENT__SOURCES).

    Reads spBv1.0/<group>/{N,D}{BIRTH,DATA,DEATH}/<node>[/<device>] from the sensor broker
    (EDGE_MQTT) over a client of its own.
    """

    env: ClassVar[str] = "EDGE_SPARKPLUG__"  # what errors about this section name

    groups: list[str] = Field(
        default_factory=lambda: ["+"],
        description='Sparkplug group ids to read (JSON list); "+" means every group.',
    )
    qos: int = Field(0, ge=0, le=2, description="Subscription QoS for Sparkplug topics.")
    asset: str = Field(
        "{device}",
        description="Asset of a device's metrics: a template of {group}, {node} and {device}.",
    )
    node_asset: str = Field(
        "",
        description="Asset of a node's own metrics (NBIRTH/NDATA): a template of {group} and "
        "{node}; empty means node metrics are not read.",
    )
    signals: dict[str, str] = Field(
        default_factory=dict,
        description="Metric name -> signal name (JSON object); empty means every numeric metric "
        "under its own name. Asset profiles map and scale signals after this.",
    )
    ignore: list[str] = Field(
        default_factory=lambda: ["bdSeq", "Node Control/", "Device Control/", "Properties/"],
        description="Metric names (a trailing / means a whole folder) that are never readings.",
    )
    rebirth_interval_s: float = Field(
        30.0,
        gt=0,
        description="At most one rebirth request (NCMD Node Control/Rebirth) per node in this "
        "many seconds, sent on data before a birth, an unknown alias or a seq gap.",
    )
    host_id: str = Field(
        "",
        description="Primary host id: when set, the agent publishes its STATE as a Sparkplug "
        "3.0 primary host application (spBv1.0/STATE/<host_id>, retained, Will offline).",
    )
    max_payload_bytes: int = Field(
        262_144, ge=64, description="Larger payloads are rejected to the dead-letter topic."
    )
    deadletter_topic: DeadletterTopic = "edge-agent/{gateway}/deadletter"
    max_metrics: int = Field(
        100_000,
        ge=10,
        description="Metrics learned from births, over all nodes and devices; a birth past it "
        "is refused (counted) and its data is not read.",
    )
    max_buffered: MaxBuffered = 200_000
    log_interval_s: float = Field(
        10.0, gt=0, description="At most one log line per problem kind per interval."
    )

    @model_validator(mode="after")
    def _valid_names(self) -> SparkplugSettings:
        for group in self.groups:
            if not group or (group != "+" and any(c in group for c in "/+#")):
                raise ValueError(f"EDGE_SPARKPLUG__GROUPS: {group!r} is neither a group id nor '+'")
        _check_template("EDGE_SPARKPLUG__ASSET", self.asset, ("group", "node", "device"))
        _check_template("EDGE_SPARKPLUG__NODE_ASSET", self.node_asset, ("group", "node"))
        if self.host_id and any(c in self.host_id for c in "/+#"):
            raise ValueError(f"EDGE_SPARKPLUG__HOST_ID={self.host_id!r}: one topic level")
        return self


UNS_PLACEHOLDERS = ("enterprise", "site", "area", "line", "asset", "gateway")


class UnsPlace(Section):
    """Where one asset stands in the site's hierarchy."""

    area: str = Field(..., min_length=1, description="ISA-95 area of the asset.")
    line: str = Field(..., min_length=1, description="ISA-95 line (or work cell) of the asset.")


class UnsSettings(Section):
    """Publishing into the site's Unified Namespace (off while `enterprise` is empty).

    Recommendations go to <path>/recommendation (not retained) and each asset's state to
    <path>/state (retained), through the outbox like every uplink message.
    """

    enterprise: str = Field("", description="Enterprise level of the namespace; empty: off.")
    site: str = Field("", description="Site level of the namespace.")
    area: str = Field("default", description="Area of an asset not listed in `assets`.")
    line: str = Field("default", description="Line of an asset not listed in `assets`.")
    assets: dict[str, UnsPlace] = Field(
        default_factory=dict,
        description='Asset -> {"area", "line"} (JSON object); others get area and line above.',
    )
    path: str = Field(
        "{enterprise}/{site}/{area}/{line}/{asset}/edge-agent",
        description="Where an asset's messages go below the broker's root: a template of "
        "{enterprise}, {site}, {area}, {line}, {asset} and {gateway}.",
    )
    qos: int = Field(1, ge=0, le=2, description="QoS of the namespace's messages.")
    max_assets: int = Field(
        10_000,
        ge=1,
        description="Assets whose open recommendations are tracked for their state; past it "
        "the least recently seen is forgotten (counted).",
    )

    @property
    def enabled(self) -> bool:
        """Whether recommendations also go into the namespace."""
        return bool(self.enterprise)

    @model_validator(mode="after")
    def _complete(self) -> UnsSettings:
        if not self.enabled:
            return self
        checks = [
            ("ENTERPRISE", self.enterprise),
            ("SITE", self.site),
            ("AREA", self.area),
            ("LINE", self.line),
        ]
        for asset, place in self.assets.items():
            checks += [
                (f"ASSETS ({asset}.area)", place.area),
                (f"ASSETS ({asset}.line)", place.line),
            ]
        for name, value in checks:
            if not value or any(c in value for c in "/+#"):
                raise ValueError(
                    f"EDGE_UNS__{name}={value!r}: must be one non-empty topic level (no /, + "
                    "or #) when EDGE_UNS__ENTERPRISE is set"
                )
        _check_template("EDGE_UNS__PATH", self.path, UNS_PLACEHOLDERS)
        return self


def _check_template(name: str, template: str, known: tuple[str, ...]) -> None:
    """Raise ValueError naming the variable when `template` uses a placeholder not in `known`."""
    try:
        template.format(**dict.fromkeys(known, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        allowed = ", ".join("{" + k + "}" for k in known)
        raise ValueError(f"{name}={template!r}: only {allowed} may be used ({exc!r})") from None
