"""`edge-agent demo`: recommendations printed as they arrive, Ctrl-C exits 0 without a traceback."""

from __future__ import annotations

import pytest

from tests.demo_proc import run_demo


@pytest.mark.parametrize(("transport", "fault"), [("mqtt", "overheating"), ("opcua", "cavitation")])
def test_demo_prints_a_recommendation_and_stops_cleanly_on_ctrl_c(
    transport: str, fault: str
) -> None:
    run = run_demo(
        [
            "--speed",
            "60",
            "--fault",
            fault,
            "--onset",
            "300",
            "--assets",
            "3",
            "--transport",
            transport,
        ],
        until=lambda out: "RAISE" in out,
        timeout_s=90,
    )
    text, err = run.out, run.err
    assert f"pumps over {transport}" in text
    assert "RAISE" in text, text + err
    raised = text[text.index("RAISE") :]
    assert "pump-3" in raised.splitlines()[0], text  # the faulty pump, not a healthy one
    assert fault in raised, text
    assert "pump-1" not in text.replace("pump-1,", "")  # no recommendation for healthy pumps
    assert "demo stopped" in text
    assert run.returncode == 0, err
    assert "Traceback" not in err, err
