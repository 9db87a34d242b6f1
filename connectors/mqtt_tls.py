"""TLS towards an MQTT broker: the context built from a settings section, and its errors.

Errors name the section's variables (`EDGE_MQTT__TLS_CA`, `EDGE_UPLINK__TLS_KEY`, ...),
never a key's path or passphrase: they end up in logs.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from edge_agent.connectors.settings import MqttSettings, UplinkSettings
from edge_agent.core.errors import ConfigError

BrokerTls = MqttSettings | UplinkSettings  # the sections that carry a broker's TLS fields


def ssl_context(tls: BrokerTls) -> ssl.SSLContext:
    """Build the TLS context: the CA that signs the broker, optionally our certificate."""
    assert tls.tls_ca is not None
    env = tls.env
    try:
        ctx = ssl.create_default_context(cafile=str(tls.tls_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{env}TLS_CA={tls.tls_ca}: cannot load the CA certificate ({exc})"
        ) from None
    if tls.tls_cert is None:
        if tls.tls_key is not None:
            raise ConfigError(f"{env}TLS_KEY is set but {env}TLS_CERT is not")
        return ctx
    if tls.tls_key is None:
        raise ConfigError(f"{env}TLS_CERT is set but {env}TLS_KEY is not")
    key = credential_path(tls.tls_key)
    pw = tls.tls_key_password
    try:
        ctx.load_cert_chain(
            str(tls.tls_cert), str(key), pw.get_secret_value() if pw is not None else None
        )
    except FileNotFoundError as exc:
        which = "TLS_CERT" if exc.filename == str(tls.tls_cert) else "TLS_KEY"
        raise ConfigError(f"{env}{which}: file not found") from None
    except (OSError, ssl.SSLError):
        raise ConfigError(
            f"{env}TLS_KEY/{env}TLS_CERT: cannot load the client certificate and key (wrong "
            f"{env}TLS_KEY_PASSWORD, or a key that does not match the certificate)"
        ) from None
    return ctx


def connect_error(exc: BaseException, tls: BrokerTls) -> str:
    """Say why a connect failed, naming the setting when the broker's certificate is at fault."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the broker's certificate is not trusted by {tls.env}TLS_CA "
            f"({exc.verify_message})"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    return str(exc) or type(exc).__name__


def credential_path(path: Path) -> Path:
    """Resolve a relative key name in systemd's $CREDENTIALS_DIRECTORY when it is there."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds and (Path(creds) / path).is_file():
        return Path(creds) / path
    return path
