"""Settings of retention: rings, evidence and compressed history."""

from __future__ import annotations

from pydantic import Field, model_validator

from edge_agent.core.settings import Section


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
        # take "span". The defaults are the ranges a controls engineer would usually pick for
        # a mid-size centrifugal pump set (design flow ~85 m3/h, discharge up to ~5.5 bar, a
        # motor of ~30 A full load); set `spans` for other machines or other instruments:
        # - temperature 0-150 degC: motor winding Pt100 transmitter, covering insulation
        #   class F (155 degC);
        # - vibration 0-25 mm/s RMS: the common range of 4-20 mA velocity transmitters,
        #   reaching well into ISO 20816 zone D;
        # - current 0-50 A: a 50/5 A current transformer for a motor of ~30 A full load;
        # - pressure 0-10 bar: discharge transmitter, ~1.8 x the highest discharge pressure;
        # - flow 0-200 m3/h: magnetic flowmeter ranged at ~2 x the design flow.
        default_factory=lambda: {
            "temperature": 150.0,
            "vibration": 25.0,
            "current": 50.0,
            "pressure": 10.0,
            "flow": 200.0,
        },
        description="Engineering span (instrument range, zero to full scale) by signal or "
        "asset/signal (JSON object), for deviation_pct; the defaults are a centrifugal pump's "
        "usual transmitter ranges (temperature in degC, vibration in mm/s RMS, current in A, "
        "pressure in bar, flow in m3/h).",
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
    asset_idle_s: float = Field(
        600.0,
        gt=0,
        description="An asset that sent nothing for this long (wall clock) is forgotten: its "
        "compressor's last points go to history, its rings are freed (edge_assets_evicted_total).",
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
