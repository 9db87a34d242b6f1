"""OPC UA channel security: pick the endpoint, trust the server certificate, set identity.

Trust follows the usual OPC UA PKI layout: a server certificate is trusted when it, or the
CA that issued it, is in `<pki_dir>/trusted`. An untrusted one is saved to
`<pki_dir>/rejected` so that a person can review it and move it to `trusted`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.core.errors import ConfigError, ConnectorError

log = structlog.get_logger(__name__)

_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_CERT_SUFFIXES = {".der", ".pem", ".crt", ".cer"}


class _RedactIdentity(logging.Filter):
    """Keep the user's password out of asyncua's DEBUG log of every request it sends."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(arg, ua.ActivateSessionRequest) for arg in args):
            record.args = ("ActivateSessionRequest (identity token withheld by edge-agent)",)
        return True


# Installed once at import: asyncua logs requests from this logger whatever level the
# process runs at, and a password must never reach a log even at DEBUG.
_REQUEST_LOGGER = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
if not any(isinstance(f, _RedactIdentity) for f in _REQUEST_LOGGER.filters):
    _REQUEST_LOGGER.addFilter(_RedactIdentity())


class UntrustedCertificateError(ConnectorError):
    """The server presented a certificate that nobody has trusted yet."""


def check_files(settings: OpcUaSettings) -> None:
    """Raise ConfigError when a secure policy lacks its certificate or key files."""
    if settings.security_policy == "None":
        return
    for name, path in (
        ("CERTIFICATE", settings.certificate),
        ("PRIVATE_KEY", settings.private_key),
    ):
        if path is None:
            raise ConfigError(
                f"EDGE_OPCUA__{name} is required with "
                f"EDGE_OPCUA__SECURITY_POLICY={settings.security_policy}"
            )
        if not path.is_file():
            raise ConfigError(f"EDGE_OPCUA__{name}={path}: no such file")


def _load(path: Path) -> x509.Certificate | None:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        log.warning("not a certificate, ignored", path=str(path))
        return None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, the way certificate tools print it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def check_trusted(der: bytes, pki_dir: Path, endpoint: str) -> x509.Certificate:
    """Return the server certificate if it or its issuing CA is trusted, else raise.

    The error names the certificate (subject, fingerprint) and says how to trust it.
    """
    cert = x509.load_der_x509_certificate(der)
    subject = cert.subject.rfc4514_string()
    trusted_dir = pki_dir / "trusted"
    anchors = (
        [
            c
            for p in sorted(trusted_dir.iterdir())
            if p.suffix.lower() in _CERT_SUFFIXES
            if (c := _load(p)) is not None
        ]
        if trusted_dir.is_dir()
        else []
    )
    for anchor in anchors:
        if anchor.fingerprint(hashes.SHA256()) == cert.fingerprint(hashes.SHA256()) or _issued_by(
            cert, anchor
        ):
            return cert
    rejected = pki_dir / "rejected" / f"{cert.fingerprint(hashes.SHA256()).hex()[:16]}.der"
    try:
        rejected.parent.mkdir(parents=True, exist_ok=True)
        rejected.write_bytes(der)
        saved = f"review {rejected} and move it into {trusted_dir}"
    except OSError as exc:
        saved = f"copy it (could not be saved to {rejected.parent}: {exc}) into {trusted_dir}"
    raise UntrustedCertificateError(
        f"server certificate of {endpoint} is not trusted: subject {subject!r}, "
        f"SHA-256 {fingerprint(cert)}; to trust it, {saved} "
        "(or put the CA that issued it there; EDGE_OPCUA__PKI_DIR)"
    )


async def apply_security(client: Client, settings: OpcUaSettings) -> None:
    """Configure `client` for the settings' policy, mode and identity before connecting."""
    client.application_uri = settings.application_uri
    if settings.username is not None:
        client.set_user(settings.username)
        if settings.password is not None:
            client.set_password(settings.password.get_secret_value())
    if settings.security_policy == "None":
        if settings.username is not None:
            log.warning(
                "OPC UA security policy None: the password may cross the network unencrypted",
                endpoint=settings.endpoint,
            )
        return
    mode = _MODES[settings.security_mode]
    # GetEndpoints is the discovery service every server answers without security; the
    # certificate it returns is checked against the trust list before anything is sent.
    endpoints = await client.connect_and_get_server_endpoints()
    match = [
        ep
        for ep in endpoints
        if ep.SecurityMode == mode and ep.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI
    ]
    if not match:
        offered = sorted(
            {
                f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}"
                for ep in endpoints
            }
        )
        raise ConnectorError(
            f"{settings.endpoint} offers no Basic256Sha256/{settings.security_mode} endpoint "
            f"(EDGE_OPCUA__SECURITY_MODE); it offers {', '.join(offered)}"
        )
    der = _first_certificate(match[0].ServerCertificate)
    check_trusted(der, settings.pki_dir, settings.endpoint)
    password = settings.private_key_password
    assert settings.certificate is not None  # check_files ran at start
    assert settings.private_key is not None
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(settings.certificate),
        str(settings.private_key),
        password.get_secret_value() if password is not None else None,
        der,
        mode,
    )


_IDENTITY_ERRORS = {"BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"}
_CERT_ERRORS = {
    "BadCertificateUntrusted",
    "BadCertificateInvalid",
    "BadCertificateUriInvalid",
    "BadCertificateTimeInvalid",
    "BadSecurityChecksFailed",
}


def hint(exc: BaseException, settings: OpcUaSettings) -> str:
    """Say which setting to look at when the server refused us."""
    name = type(exc).__name__
    if name in _IDENTITY_ERRORS:
        return (
            f"the server refused user EDGE_OPCUA__USERNAME={settings.username or '(anonymous)'}; "
            "check it and EDGE_OPCUA__PASSWORD"
        )
    if name in _CERT_ERRORS:
        return (
            f"the server refused the client certificate EDGE_OPCUA__CERTIFICATE="
            f"{settings.certificate}; add it (or its CA) to the server's trust list and check "
            f"that EDGE_OPCUA__APPLICATION_URI={settings.application_uri} is its SAN URI"
        )
    return ""


def _first_certificate(data: bytes | None) -> bytes:
    """A server may send its chain; the first DER element is its own certificate."""
    if not data:
        raise ConnectorError("server sent no certificate for a secure endpoint")
    length = int.from_bytes(data[2:4], "big") + 4  # DER SEQUENCE with a two-byte length
    return data[:length]
