"""The base of every settings section, and the fields shared by sections.

Each part of the agent owns the section that configures it (`connectors/settings.py`,
`daemon/outbox/settings.py`, ...); `daemon/settings.py` assembles them into one tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

PREFIX = "EDGE_"


DELIMITER = "__"


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level written."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="json lines, readable console, or auto (console on a terminal)."
    )


class TlsSection(Section):
    """TLS towards a broker: a section that talks to one inherits these fields."""

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
