"""A throwaway certificate authority for tests, made with `cryptography`.

One place for how the test CA and its leaf certificates look, so the MQTT TLS tests and the
OPC UA security tests trust the same kind of chain.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Issuer = tuple[x509.Certificate, Key]


def ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (quick to make; what the MQTT TLS tests use)."""
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 key (Basic256Sha256 needs RSA)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=not ca,
        key_encipherment=not ca,
        data_encipherment=not ca,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def certificate(
    subject: str,
    key: Key,
    issuer: Issuer | None = None,
    *,
    ca: bool = False,
    uri: str | None = None,
) -> x509.Certificate:
    """A certificate for `key` named CN=`subject`, signed by `issuer` (self-signed if None).

    A leaf (ca=False) is good for TLS server and client use on 127.0.0.1 and localhost, and
    carries `uri` as its application URI when given (OPC UA checks it).
    """
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(ca=ca), critical=True)
    )
    if not ca:
        eku = x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        if uri is not None:
            names.insert(0, x509.UniformResourceIdentifier(uri))
        builder = builder.add_extension(eku, critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def write_cert(
    path: Path,
    cert: x509.Certificate,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> Path:
    """Write `cert` to `path` (PEM unless told DER) and return `path`."""
    path.write_bytes(cert.public_bytes(encoding))
    return path


def write_key(path: Path, key: Key, passphrase: str | None = None) -> Path:
    """Write `key` to `path` as PKCS#8 PEM, encrypted with `passphrase` when given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase is not None
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path
