"""OPC UA security: Basic256Sha256 Sign and SignAndEncrypt, trust, user names and passwords.

The tests make their own CA and certificates with `cryptography`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from structlog.testing import capture_logs

from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.simulator.opcua_server import PlantServer
from tests.pki import certificate, rsa_key, write_cert, write_key
from tests.test_opcua import running

CLIENT_URI = "urn:edge-agent:client"
SERVER_URI = "urn:edge-agent:plant-server"
PASSWORD = "pw-Xq7-never-logged"
DER = Encoding.DER  # what asyncua reads certificates as


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    rogue_cert: Path  # a self-signed server certificate nobody trusts
    rogue_key: Path
    client_cert: Path
    client_key: Path
    server_trust: Path  # the server's trusted folder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key, rogue_key = rsa_key(), rsa_key(), rsa_key(), rsa_key()
    ca = certificate("edge-agent test CA", ca_key, ca=True)
    server = certificate("plant-server", server_key, (ca, ca_key), uri=SERVER_URI)
    client = certificate("edge-agent", client_key, (ca, ca_key), uri=CLIENT_URI)
    rogue = certificate("rogue-plc", rogue_key, uri=SERVER_URI)
    write_cert(root / "ca.der", ca, DER)
    for name, cert, key in [
        ("server", server, server_key),
        ("client", client, client_key),
        ("rogue", rogue, rogue_key),
    ]:
        write_cert(root / f"{name}.der", cert, DER)
        write_key(root / f"{name}.pem", key)
    (root / "server-trust").mkdir()
    shutil.copy(root / "ca.der", root / "server-trust" / "ca.der")
    return Pki(
        ca=root / "ca.der",
        server_cert=root / "server.der",
        server_key=root / "server.pem",
        rogue_cert=root / "rogue.der",
        rogue_key=root / "rogue.pem",
        client_cert=root / "client.der",
        client_key=root / "client.pem",
        server_trust=root / "server-trust",
    )


@pytest.fixture
def client_pki(tmp_path: Path, pki: Pki) -> Path:
    """The client's PKI folder, trusting the test CA."""
    (tmp_path / "trusted").mkdir()
    shutil.copy(pki.ca, tmp_path / "trusted" / "ca.der")
    return tmp_path


def secure_settings(server: PlantServer, pki: Pki, pki_dir: Path, **kw: Any) -> OpcUaSettings:
    base: dict[str, Any] = {
        "endpoint": server.endpoint,
        "nodes": server.node_map()[:2],
        "certificate": pki.client_cert,
        "private_key": pki.client_key,
        "application_uri": CLIENT_URI,
        "pki_dir": pki_dir,
        "publishing_interval_ms": 50,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    return OpcUaSettings.model_validate(base | kw)


@pytest.fixture
async def secure_plant(pki: Pki) -> AsyncIterator[PlantServer]:
    async with PlantServer(
        0,
        ["pump-1"],
        speed=0,
        start_ts=1.8e9,
        endpoints=["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"],
        certificate=pki.server_cert,
        private_key=pki.server_key,
        trusted=[pki.server_trust],
        users={"operator": PASSWORD},
    ) as server:
        yield server


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_a_client_certificate(
    secure_plant: PlantServer, pki: Pki, client_pki: Path, mode: str
) -> None:
    settings = secure_settings(
        secure_plant,
        pki,
        client_pki,
        security_mode=mode,
        username="operator",
        password=PASSWORD,
    )
    async with running(settings) as (_, got):
        ts = (await secure_plant.step())["pump-1"][0]
        await got.until(lambda rs: sum(r.ts == ts for r in rs) == 2)


async def test_an_untrusted_server_certificate_is_refused_with_a_way_to_trust_it(
    pki: Pki, tmp_path: Path
) -> None:
    async with PlantServer(
        0,
        ["pump-1"],
        speed=0,
        start_ts=1.8e9,
        endpoints=["Basic256Sha256_SignAndEncrypt"],
        certificate=pki.rogue_cert,
        private_key=pki.rogue_key,
    ) as server:
        settings = secure_settings(server, pki, tmp_path)  # tmp_path/trusted does not exist
        with capture_logs() as logs:
            async with running(settings) as (source, got):
                ts = (await server.step())["pump-1"][0]
                await got.until(lambda _: source.last_error is not None)
                error = source.last_error
                assert got.readings == []
                rejected = list((tmp_path / "rejected").iterdir())
                assert len(rejected) == 1
                assert rejected[0].read_bytes() == pki.rogue_cert.read_bytes()
                # Doing what the message says makes it work, without a restart.
                (tmp_path / "trusted").mkdir()
                shutil.move(rejected[0], tmp_path / "trusted" / rejected[0].name)
                await got.until(lambda rs: sum(r.ts == ts for r in rs) == 2)
    assert error is not None
    assert "CN=rogue-plc" in error
    assert "SHA-256" in error
    assert str(rejected[0]) in error
    assert f"move it into {tmp_path / 'trusted'}" in error
    failed = [e for e in logs if e["event"] == "OPC UA connection failed, retrying"]
    assert failed
    assert failed[0]["error"] == error


async def test_a_wrong_password_is_refused_and_no_password_is_logged(
    secure_plant: PlantServer, pki: Pki, client_pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # asyncua's own logging too, at its most verbose
    good = secure_settings(secure_plant, pki, client_pki, username="operator", password=PASSWORD)
    wrong = secure_settings(
        secure_plant, pki, client_pki, username="operator", password=PASSWORD + "-wrong"
    )
    with capture_logs() as logs:
        async with running(wrong) as (source, got):
            await secure_plant.step()
            await got.until(lambda _: source.last_error is not None)
            assert got.readings == []
            error = source.last_error
            assert error is not None
            assert "BadUserAccessDenied" in error
            assert "EDGE_OPCUA__USERNAME=operator" in error
        async with running(good) as (_, got):
            ts = (await secure_plant.step())["pump-1"][0]
            await got.until(lambda rs: any(r.ts == ts for r in rs))
    text = caplog.text + repr(logs) + repr(good) + str(good.password)
    assert PASSWORD not in text
    assert "operator" in text  # the user name itself may appear; the check is not vacuous


async def test_a_server_without_the_policy_is_refused_by_name(pki: Pki, client_pki: Path) -> None:
    async with PlantServer(0, ["pump-1"], speed=0, endpoints=["None"]) as server:
        settings = secure_settings(server, pki, client_pki)
        async with running(settings) as (source, got):
            await got.until(lambda _: source.last_error is not None)
            assert got.readings == []
    assert source.last_error is not None
    assert "offers no Basic256Sha256/SignAndEncrypt endpoint" in source.last_error
    assert "it offers None/None_" in source.last_error
