"""Settings of the service: metrics and health endpoint, systemd watchdog, pressure."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, model_validator

from edge_agent.core.settings import Section


class ServiceSettings(Section):
    """Running as a service: metrics and health endpoint, systemd watchdog, pressure."""

    http_enabled: bool = Field(
        default=True,
        description="Serve /metrics (Prometheus text), /health (JSON) and the read-only page "
        "(/); false: off.",
    )
    http_host: str = Field(
        "127.0.0.1",
        description="Address the HTTP endpoint binds to; any address that is not loopback "
        "needs http_token.",
    )
    http_port: int = Field(
        9108, ge=0, le=65535, description="Port of the HTTP endpoint; 0: any free port."
    )
    http_max_connections: int = Field(
        16, ge=1, le=1024, description="Open connections; further ones are refused."
    )
    http_token: SecretStr | None = Field(
        None,
        description="When set, every request but /health must carry it: `Authorization: "
        "Bearer <token>`, or basic auth with any user name and the token as password "
        "(secret). Required when http_host is not loopback.",
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

    @property
    def http_loopback(self) -> bool:
        """Whether the endpoint listens on loopback only."""
        if self.http_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.http_host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> ServiceSettings:
        """The page and metrics are never served beyond loopback without a token."""
        if self.http_enabled and not self.http_loopback and self.http_token is None:
            raise ValueError(
                f"EDGE_SERVICE__HTTP_HOST={self.http_host} is not loopback: set "
                "EDGE_SERVICE__HTTP_TOKEN (a secret) before the HTTP endpoint listens there, "
                "or bind it to 127.0.0.1"
            )
        return self

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
