"""Secrets from systemd credentials ($CREDENTIALS_DIRECTORY), named as the unit loads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.settings import load_settings


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("EDGE_MQTT__PASSWORD", "EDGE_MQTT__HOST", "EDGE_MQTT__USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    return tmp_path


def test_secret_comes_from_a_credential(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (creds / "EDGE_MQTT__PASSWORD").write_text("s3cret\n")
    monkeypatch.setenv("EDGE_MQTT__HOST", "broker.plant")
    settings = load_settings()
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret"
    assert settings.mqtt.host == "broker.plant"  # the rest of the section still from env


def test_environment_wins_over_a_credential(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (creds / "EDGE_MQTT__PASSWORD").write_text("from-credential")
    monkeypatch.setenv("EDGE_MQTT__PASSWORD", "from-env")
    settings = load_settings()
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "from-env"


def test_only_secret_fields_are_read(creds: Path) -> None:
    (creds / "EDGE_MQTT__HOST").write_text("not-a-secret.example")
    assert load_settings().mqtt.host == "127.0.0.1"


def test_unreadable_credential_names_the_variable(creds: Path) -> None:
    (creds / "EDGE_MQTT__PASSWORD").mkdir()
    with pytest.raises(ConfigError, match="EDGE_MQTT__PASSWORD"):
        load_settings()


def test_no_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("EDGE_MQTT__PASSWORD", raising=False)
    assert load_settings().mqtt.password is None
