"""`edge-agent demo`: recommendations printed as they arrive, Ctrl-C exits 0 without a traceback."""

from __future__ import annotations

from tests.demo_proc import run_demo


def test_demo_prints_a_recommendation_and_stops_cleanly_on_ctrl_c() -> None:
    run = run_demo(
        ["--speed", "60", "--fault", "overheating", "--onset", "300", "--assets", "3"],
        until=lambda out: "RAISE" in out,
        timeout_s=90,
    )
    text, err = run.out, run.err
    assert "RAISE" in text, text + err
    assert "pump-3" in text
    assert "overheating" in text
    assert "demo stopped" in text
    assert run.returncode == 0, err
    assert "Traceback" not in err, err
