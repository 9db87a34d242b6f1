"""Settings of bundles and fleet updates."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge_agent.core.settings import Section


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
