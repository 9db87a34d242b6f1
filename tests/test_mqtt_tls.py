"""TLS to a real mosquitto with `require_certificate`, using a test CA made here."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import MqttSettings
from edge_agent.connectors.uplink import uplink_client
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Outgoing, new_id
from edge_agent.daemon.settings import Settings
from edge_agent.simulator.broker import Broker
from tests.pki import certificate, ec_key, write_cert, write_key

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    """Two CAs; a broker certificate from each; a client certificate from the first."""
    # Not under tmp_path (0700): mosquitto started as root reads as its own user.
    d = Path(tempfile.mkdtemp(prefix="edge-pki-"))
    d.chmod(0o755)
    for ca_name in ("ca", "other-ca"):
        ca_key = ec_key()
        ca = certificate(f"edge test {ca_name}", ca_key, ca=True)
        write_cert(d / f"{ca_name}.pem", ca)
        srv_key = ec_key()
        write_cert(d / f"{ca_name}-server.pem", certificate("broker", srv_key, (ca, ca_key)))
        write_key(d / f"{ca_name}-server.key", srv_key)
        if ca_name == "ca":
            cli_key = ec_key()
            write_cert(d / "client.pem", certificate("gateway-7", cli_key, (ca, ca_key)))
            write_key(d / "client.key", cli_key, PASSPHRASE)
    for path in d.iterdir():
        path.chmod(0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tls_broker(pki: Path, server: str) -> Broker:
    broker = Broker(
        extra_conf=f"cafile {pki / 'ca.pem'}\ncertfile {pki / server}.pem\n"
        f"keyfile {pki / server}.key\nrequire_certificate true\n"
    )
    broker.start()
    return broker


def settings(broker: Broker, pki: Path, **kw: object) -> MqttSettings:
    base: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "tls_ca": pki / "ca.pem",
        "tls_cert": pki / "client.pem",
        "tls_key": pki / "client.key",
        "tls_key_password": PASSPHRASE,
    }
    return MqttSettings.model_validate(base | kw)


def assert_no_secrets(logs: Sequence[Mapping[str, object]], out: str, pki: Path) -> None:
    text = repr(logs) + out
    assert PASSPHRASE not in text
    assert str(pki / "client.key") not in text
    assert "client.key" not in text


async def test_client_certificate_from_credentials_directory(
    pki: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    broker = tls_broker(pki, "ca-server")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(pki))
    try:
        with capture_logs() as logs:
            s = settings(broker, pki, tls_key=Path("client.key"))  # found via systemd creds
            async with MqttClient(s, client_id="gw7", name="uplink") as client:
                await asyncio.wait_for(client.connected.wait(), 10)
                await client.publish(Outgoing("tls/x", b"hello", new_id()))
        assert any(e["event"] == "mqtt_connected" for e in logs)
        assert_no_secrets(logs, capfd.readouterr().out, pki)
    finally:
        broker.close()


async def test_broker_from_another_ca_is_refused_clearly(
    pki: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    broker = tls_broker(pki, "other-ca-server")
    try:
        with capture_logs() as logs:
            async with MqttClient(settings(broker, pki), client_id="gw7", name="up") as client:
                async with asyncio.timeout(10):
                    while not any(e["event"] == "mqtt_connect_failed" for e in logs):
                        await asyncio.sleep(0.05)
                assert not client.connected.is_set()
        failure = next(e for e in logs if e["event"] == "mqtt_connect_failed")
        assert "not trusted by EDGE_MQTT__TLS_CA" in str(failure["error"])
        assert "certificate verify failed" in str(failure["error"]) or "unable to get" in str(
            failure["error"]
        )
        assert_no_secrets(logs, capfd.readouterr().out, pki)
    finally:
        broker.close()


def test_wrong_passphrase_names_the_setting_not_the_secret(pki: Path) -> None:
    broker = Broker()  # never started: the error comes before any connection
    try:
        with pytest.raises(ConfigError) as info:
            MqttClient(settings(broker, pki, tls_key_password="wrong"), client_id="x", name="x")
        text = str(info.value)
        assert "EDGE_MQTT__TLS_KEY_PASSWORD" in text
        assert "wrong" not in text.replace("wrong EDGE_MQTT", "")
        assert PASSPHRASE not in text
        assert "client.key" not in text
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"mqtt": {"tls_ca": "missing.pem"}}, "EDGE_MQTT__TLS_CA"),  # the uplink shares it
        ({"uplink": {"tls_ca": "missing.pem"}}, "EDGE_UPLINK__TLS_CA"),
        ({"mqtt": {"tls_ca": "m.pem"}, "uplink": {"tls_ca": "u.pem"}}, "EDGE_UPLINK__TLS_CA"),
    ],
)
def test_uplink_tls_errors_name_the_section_whose_tls_it_uses(
    tmp_path: Path, given: dict[str, dict[str, str]], named: str
) -> None:
    settings = Settings.model_validate(
        {k: {f: str(tmp_path / v) for f, v in fields.items()} for k, fields in given.items()}
    )
    with pytest.raises(ConfigError, match=f"^{named}="):
        uplink_client(settings, "gw")


def test_sections_know_their_variable_names() -> None:
    for name in ("mqtt", "uplink"):
        section = Settings.model_fields[name].annotation
        assert getattr(section, "env", None) == f"EDGE_{name.upper()}__"
