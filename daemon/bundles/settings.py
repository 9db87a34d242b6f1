"""Settings of bundles and fleet updates."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge_agent.core.settings import Section
from edge_agent.daemon.bundles.manifest import MAX_BUNDLE_BYTES


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
        description="Larger job messages (inline files included) are not parsed: REJECTED "
        "too_large under the job_id in their first 4 KiB, else under their hash.",
    )
    max_bundle_bytes: int = Field(
        MAX_BUNDLE_BYTES,
        ge=1024,
        description="A bundle whose files add up to more than this is rejected before download.",
    )
    probe_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Seconds the probation probe may take to load and run every model artifact "
        "of a new bundle on its golden input (a separate process; killed and FAILED after).",
    )
    probe_memory_mb: int = Field(
        2048,
        ge=256,
        description="Address space (MiB) the probation probe may use; a model that needs more "
        "fails probation instead of exhausting the gateway's memory.",
    )
    max_pending_jobs: int = Field(
        16,
        ge=1,
        description="Jobs waiting while one installs; a further job is REJECTED queue_full "
        "(not stored, so it can be sent again) and counted.",
    )
    download_timeout_s: float = Field(
        300.0, gt=0, description="Seconds one download attempt of a whole bundle may take."
    )
