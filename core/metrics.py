"""The agent's self-metrics: every queue, drop and stage is counted here.

One registry per process (prometheus-client's default would leak between test agents).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

READINGS_IN = Counter(
    "edge_readings_total", "Readings accepted from connectors.", ["connector"], registry=REGISTRY
)
READINGS_DROPPED = Counter(
    "edge_readings_dropped_total", "Readings dropped, by reason.", ["reason"], registry=REGISTRY
)
MESSAGES_REJECTED = Counter(
    "edge_messages_rejected_total",
    "Sensor messages rejected to the dead-letter topic, by reason.",
    ["reason"],
    registry=REGISTRY,
)
WINDOWS = Counter(
    "edge_windows_total",
    "Windows by outcome: scored, skipped (gate), incomplete, dropped.",
    ["outcome"],
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "edge_inference_seconds",
    "Time of one batched model call.",
    ["backend"],
    buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
    registry=REGISTRY,
)
BACKEND = Gauge(
    "edge_model_backend_info", "1 for the backend in use.", ["backend"], registry=REGISTRY
)
RECOMMENDATIONS = Counter(
    "edge_recommendations_total",
    "Recommendations produced, by kind and severity.",
    ["kind", "severity"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge("edge_outbox_messages", "Messages waiting in the outbox.", registry=REGISTRY)
OUTBOX_DROPPED = Counter(
    "edge_outbox_dropped_total",
    "Outbox messages dropped, by priority class.",
    ["priority"],
    registry=REGISTRY,
)
PUBLISHED = Counter(
    "edge_published_total", "Messages acknowledged by the uplink broker.", registry=REGISTRY
)
RECONNECTS = Counter(
    "edge_reconnects_total", "Connector reconnects.", ["connector"], registry=REGISTRY
)
BUNDLE_EVENTS = Counter(
    "edge_bundle_events_total",
    "Bundle store events: rollback, recovered, current_damaged, job_record_pruned.",
    ["event"],
    registry=REGISTRY,
)
UPDATE_JOBS = Counter(
    "edge_update_jobs_total",
    "Update jobs by final state (SUCCEEDED, FAILED, REJECTED, duplicate, invalid) and reason.",
    ["status", "reason"],
    registry=REGISTRY,
)
SCORING_ERRORS = Counter(
    "edge_scoring_errors_total",
    "Model calls that raised; a bundle in probation fails if this grows.",
    registry=REGISTRY,
)
OPCUA_BUFFERED = Gauge(
    "edge_opcua_buffered_readings",
    "OPC UA readings waiting between the connector and the frames.",
    registry=REGISTRY,
)
OPCUA_NODES = Gauge(
    "edge_opcua_nodes",
    "Configured OPC UA nodes by state: active, missing (not found on the server).",
    ["state"],
    registry=REGISTRY,
)
OPCUA_FAILURES = Counter(
    "edge_opcua_failures_total",
    "OPC UA connection attempts or sessions that failed, by kind.",
    ["kind"],
    registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "edge_event_loop_lag_seconds",
    "How late the event loop woke from a periodic sleep.",
    buckets=(1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
LOOP_LAG_LAST = Gauge(
    "edge_event_loop_lag_last_seconds", "Event-loop lag at the latest probe.", registry=REGISTRY
)
DEGRADED = Gauge(
    "edge_degraded", "1 while degraded mode is engaged (lag or backlog high).", registry=REGISTRY
)
DEGRADED_CHANGES = Counter(
    "edge_degraded_changes_total",
    "Degraded mode changes, by state (engaged, cleared) and cause (lag, backlog, both, calm).",
    ["state", "cause"],
    registry=REGISTRY,
)
NOTIFY_ERRORS = Counter(
    "edge_notify_errors_total",
    "sd_notify datagrams that could not be sent to $NOTIFY_SOCKET.",
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "edge_http_requests_total",
    "Requests to the HTTP endpoint (metrics, health, page), by path and status code.",
    ["path", "code"],
    registry=REGISTRY,
)
WEB_DROPPED = Counter(
    "edge_web_dropped_total",
    "What the page's state let go: an asset past its bound, an unwritten journal line.",
    ["what"],
    registry=REGISTRY,
)
OUTBOX_REFUSED = Counter(
    "edge_outbox_refused_total",
    "Outbox messages the uplink broker refused (MQTT 5 reason code >= 0x80), then dropped.",
    ["priority"],
    registry=REGISTRY,
)
OUTBOX_BYTES = Gauge("edge_outbox_bytes", "Size of the outbox file in bytes.", registry=REGISTRY)
OUTBOX_DEGRADED = Gauge(
    "edge_outbox_degraded",
    "1 while the outbox cannot write its file (disk full, read-only) and buffers in memory.",
    registry=REGISTRY,
)
OUTBOX_ERRORS = Counter(
    "edge_outbox_errors_total",
    "Outbox storage errors, by kind (full, readonly, io, corrupt).",
    ["kind"],
    registry=REGISTRY,
)
DEADLETTER_DROPPED = Counter(
    "edge_deadletter_dropped_total",
    "Rejected messages not republished to the dead-letter topic (not connected, backlog).",
    registry=REGISTRY,
)
DEADLETTER_CUT = Counter(
    "edge_deadletter_cut_total",
    "Dead letters republished cut short, by what: payload (beyond EDGE_INGEST__MAX_PAYLOAD_BYTES) "
    "or topic (beyond MQTT's 65,535 bytes).",
    ["what"],
    registry=REGISTRY,
)
OUTBOX_ASIDE = Counter(
    "edge_outbox_aside_total",
    "Outbox messages that can never be delivered, moved aside (kept for inspection), by "
    "priority and reason (topic_too_long, topic_invalid, too_large, refused, publish_error).",
    ["priority", "reason"],
    registry=REGISTRY,
)
ASSETS_TRACKED = Gauge(
    "edge_assets_tracked",
    "Assets holding state, by part: frames (EDGE_FRAMES__MAX_ASSETS), retention, clocks "
    "(the ingest timestamp check).",
    ["part"],
    registry=REGISTRY,
)
ASSETS_EVICTED = Counter(
    "edge_assets_evicted_total",
    "Assets whose state was freed, by part and reason (idle: nothing for the idle time).",
    ["part", "reason"],
    registry=REGISTRY,
)
RULE_STATE_ERRORS = Counter(
    "edge_rule_state_errors_total",
    "Rule state (open incidents, cooldowns) that could not be saved or read, by operation.",
    ["op"],
    registry=REGISTRY,
)
RECOMMENDATIONS_SUPPRESSED = Counter(
    "edge_recommendations_suppressed_total",
    "Raises a rule held back, by reason (cooldown).",
    ["reason"],
    registry=REGISTRY,
)
RULE_ERRORS = Counter(
    "edge_rule_errors_total",
    "Rule conditions that failed to evaluate (taken as false), by rule id.",
    ["rule"],
    registry=REGISTRY,
)
ADVISOR_ASSETS_EVICTED = Counter(
    "edge_advisor_assets_evicted_total",
    "Assets whose rule state was dropped because rules.max_assets was reached.",
    registry=REGISTRY,
)
RETENTION_BYTES = Gauge(
    "edge_retention_bytes",
    "Bytes held by retention, by class: ring (memory), history (memory), evidence (disk).",
    ["class"],
    registry=REGISTRY,
)
RETENTION_EVICTIONS = Counter(
    "edge_retention_evictions_total",
    "Retained data removed, by class and reason (budget, ttl, rate): evidence in records, "
    "history in points, ring in samples still inside ring_seconds when overwritten.",
    ["class", "reason"],
    registry=REGISTRY,
)
EVIDENCE_RECORDS = Counter(
    "edge_evidence_records_total",
    "Evidence records by outcome: complete, cut (frozen early), refused (over the budget), "
    "failed (not written: the disk refused it, or did not take it in time).",
    ["outcome"],
    registry=REGISTRY,
)
EVIDENCE_WRITE_WAITS = Counter(
    "edge_evidence_write_waits_total",
    "Evidence records that waited on the event loop because 8 MiB of records already waited "
    "for the disk (a slow or stalled disk); past 2 s the record is failed.",
    registry=REGISTRY,
)
BACKEND_FAILURES = Counter(
    "edge_model_backend_failures_total",
    "Model backends that failed to load or to run, by backend and stage (load, run).",
    ["backend", "stage"],
    registry=REGISTRY,
)

RELOADS = Counter(
    "edge_rule_reloads_total",
    "Rule pack reloads (SIGHUP), by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
CALLBACK_ERRORS = Counter(
    "edge_mqtt_callback_errors_total",
    "Exceptions raised by a message handler of an MQTT client (a bug: see the log).",
    ["client"],
    registry=REGISTRY,
)

EVIDENCE_REQUESTS_DROPPED = Counter(
    "edge_evidence_requests_dropped_total",
    "Evidence requests refused because too many replies were pending.",
    registry=REGISTRY,
)

LEARNING_PROGRESS = Gauge(
    "edge_learning_progress",
    "Share of its learning period an asset has recorded (0..1); 1 once its model scores.",
    ["asset"],
    registry=REGISTRY,
)
ASSETS = Gauge(
    "edge_assets",
    "Assets of `learn` profiles by state: learning, scoring, failed.",
    ["state"],
    registry=REGISTRY,
)
FITS = Counter(
    "edge_learning_fits_total",
    "Fits of learned models on the gateway, by outcome: done, failed, cancelled.",
    ["outcome"],
    registry=REGISTRY,
)
