"""`edge-agent rules check` against the model shipped with the agent (its manifest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.rules.pack import default_pack_path
from tests.test_rules_pack import GOOD, run_cli, write


def test_rules_check_uses_the_models_signals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace("vibration.mean: {", "speed.mean: {"))
    assert run_cli(["rules", "check", str(path)]) == 1
    assert "the model has no signal 'speed'" in capsys.readouterr().err
    assert run_cli(["rules", "check", str(default_pack_path())]) == 0
    assert capsys.readouterr().out.startswith("ok: pack default")
