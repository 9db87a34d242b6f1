"""Settings: env prefix and nesting, env files, unknown keys, errors that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.cli import main
from edge_agent.daemon.settings import Settings, env_names, load_settings, render_env_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EDGE_"):
            monkeypatch.delenv(name)


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.mqtt.port == 1883
    assert settings.ingest.topics == ["plant/{asset}/telemetry"]


def test_every_field_has_a_description() -> None:
    for section, info in Settings.model_fields.items():
        assert info.description, section
        model = info.annotation
        assert isinstance(model, type)
        for name, field in model.model_fields.items():
            assert field.description, f"{section}.{name}"


def test_environment_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_MQTT__PORT", "1884")
    monkeypatch.setenv("EDGE_INGEST__TOPICS", '["site/+/x/{asset}"]')
    settings = load_settings()
    assert settings.mqtt.port == 1884
    assert settings.ingest.topics == ["site/+/x/{asset}"]


def test_env_files_later_wins_environment_wins_over_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = tmp_path / "a.env"
    b = tmp_path / "b.env"
    a.write_text("EDGE_MQTT__HOST=broker-a\nEDGE_MQTT__PORT=1000\nEDGE_LOG__LEVEL=debug\n")
    b.write_text("EDGE_MQTT__HOST=broker-b\nEDGE_MQTT__PORT=2000\n")
    monkeypatch.setenv("EDGE_MQTT__PORT", "3000")
    settings = load_settings([a, b])
    assert settings.mqtt.host == "broker-b"
    assert settings.mqtt.port == 3000
    assert settings.log.level == "debug"


def test_bad_value_names_variable_value_and_expectation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_MQTT__PORT", "abc")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "EDGE_MQTT__PORT=abc" in str(err.value)
    assert "integer" in str(err.value)


def test_unknown_key_is_an_error_with_a_hint(tmp_path: Path) -> None:
    env = tmp_path / "x.env"
    env.write_text("EDGE_MQTT__PROT=1884\nEDGE_NOPE=1\nUNRELATED=1\n")
    with pytest.raises(ConfigError) as err:
        load_settings([env])
    text = str(err.value)
    assert "EDGE_MQTT__PROT: unknown setting; did you mean EDGE_MQTT__PORT?" in text
    assert "EDGE_NOPE" in text
    assert "UNRELATED" not in text


def test_missing_env_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--env-file .*missing\.env: no such file"):
        load_settings([tmp_path / "missing.env"])


def test_bad_json_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_INGEST__TOPICS", "plant/+/x")
    with pytest.raises(ConfigError, match=r"EDGE_INGEST__TOPICS=plant/\+/x: expected a JSON list"):
        load_settings()


def test_check_config_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.env"
    good.write_text("EDGE_MQTT__HOST=broker\n")
    assert main(["check-config", "--env-file", str(good)]) == 0
    assert "configuration is valid" in capsys.readouterr().out

    monkeypatch.setenv("EDGE_MQTT__PORT", "abc")
    assert main(["check-config"]) == 2
    assert "EDGE_MQTT__PORT=abc" in capsys.readouterr().err
    monkeypatch.delenv("EDGE_MQTT__PORT")

    assert main(["check-config", "--env-file", str(tmp_path / "none.env")]) == 2
    assert "none.env: no such file" in capsys.readouterr().err


def test_documented_env_file_matches_the_settings_model() -> None:
    committed = (ROOT / "systemd" / "edge-agent.env").read_text()
    assert committed == render_env_file(), "run `make env-file` to regenerate it"
    for name in env_names():
        assert f"#{name}=" in committed, name


def test_documented_defaults_parse_back(tmp_path: Path) -> None:
    """Uncommenting every line of the documented file gives the default settings."""
    text = render_env_file()
    lines = [ln[1:] for ln in text.splitlines() if ln.startswith("#EDGE_") and not ln.endswith("=")]
    env = tmp_path / "all.env"
    env.write_text("\n".join(lines) + "\n")
    assert load_settings([env]) == Settings()
