"""What the terminal says: the demo's heartbeat, incidents and errors, --version, log lines."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core import logs
from edge_agent.daemon.demo import bump_version
from edge_agent.daemon.demo_console import Console
from edge_agent.rules.pack import default_pack_path
from edge_agent.simulator.broker import Broker
from tests.bundle_kit import make_bundle
from tests.demo_proc import LiveDemo


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.daemon.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fault", "bogus"], "--fault bogus: not a fault the simulator knows; choose from"),
        (["--assets", "0"], "--assets 0: the demo needs at least 1 pump"),
        (["--speed", "-1"], "--speed -1: must be a number of simulated seconds"),
    ],
)
def test_bad_demo_arguments_get_one_line_and_no_traceback(args: list[str], says: str) -> None:
    done = _cli("demo", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"edge-agent demo: {says}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"edge-agent \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_demo_heartbeat_until_the_first_alert_then_the_page_url_and_the_report() -> None:
    demo = LiveDemo(["--speed", "40", "--assets", "3", "--fault", "cavitation", "--onset", "300"])
    try:
        demo.wait_for("Live page: http://127.0.0.1:", 60)
        _, beat = demo.wait_for("watching 3 pumps", 30)
        assert re.search(r"\] watching 3 pumps: \d+ windows scored, all normal", beat), beat
        demo.wait_for("RAISE", 90)
        demo.wait_for("  id ", 10)
    finally:
        run = demo.stop()
    before, after = run.out.split("RAISE", 1)
    assert "watching 3 pumps" in before
    assert "watching" not in after  # quiet once there is something to say
    assert re.search(r"RAISE WARNING pump-3  incident [0-9a-f-]{36}", run.out), run.out
    assert re.search(r"  report: http://127\.0\.0\.1:\d+/report/[0-9a-f-]{36}", after), after
    assert "offline: edge-agent report " in after
    assert run.returncode == 0, run.err
    assert "Traceback" not in run.err


def _payload(kind: str, rid: str, **extra: object) -> bytes:
    rec = {
        "kind": kind,
        "id": rid,
        "asset": "pump-2",
        "rule_id": "overheating",
        "severity": "warning",
        "window_ts": 1_750_000_100.0,
        "title": f"{kind}: overheating on pump-2",
        "model": {"name": "pump-fault", "version": "1.0.0"},
        "rule_pack": {"name": "default", "version": "1.4.1"},
        **extra,
    }
    return json.dumps(rec).encode()


def test_an_incident_keeps_its_id_through_updates_and_says_why_it_resolved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console = Console(1_750_000_000.0, "http://127.0.0.1:1/", "/tmp/state")
    console.recommendation(_payload("raise", "a1", evidence_id="e1"))
    # A live update restarts the rules: the new bundle raises the same fault again.
    console.recommendation(
        _payload("raise", "a2", model={"name": "pump-fault", "version": "1.0.1"})
    )
    console.recommendation(_payload("raise", "a3", severity="critical", escalated_from="warning"))
    console.recommendation(
        _payload(
            "resolved",
            "a4",
            resolves="a3",
            explanation="The condition of rule overheating has cleared after 12 min.",
        )
    )
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("[T+")]
    assert [h.split("] ", 1)[1] for h in heads] == [
        "RAISE WARNING pump-2  incident a1",
        "UPDATE WARNING pump-2  incident a1",
        "UPDATE CRITICAL pump-2  incident a1",
        "RESOLVED WARNING pump-2  incident a1",
    ]
    assert "why: raised again by model pump-fault v1.0.1" in out
    assert "why: escalated from warning to critical" in out
    assert "why: The condition of rule overheating has cleared after 12 min." in out
    assert "report: http://127.0.0.1:1/report/e1" in out


def test_demo_keeps_the_incident_id_across_a_live_update() -> None:
    # The fault shows a few seconds in; the update ships after it, so the new bundle meets an
    # incident that is already open: what it says next (an escalation, a re-raise or the
    # resolution) is about the same incident.
    demo = LiveDemo(
        [
            "--speed",
            "30",
            "--assets",
            "2",
            "--fault",
            "overheating",
            "--onset",
            "60",
            "--update-after",
            "8",
        ],
        env={"EDGE_UPDATES__PROBATION_S": "2"},
    )
    try:
        demo.wait_for("RAISE", 60)
        at, _ = demo.wait_for("SUCCEEDED", 60)
        pack = yaml.safe_load(default_pack_path().read_text())
        new_rules = f"rules v{bump_version(str(pack['version']))}"
        with_new = demo.wait_for(new_rules, 30)  # a recommendation from the new bundle
        assert with_new[0] > at
    finally:
        run = demo.stop()
    ids = re.findall(r"pump-2  incident (\S+)", run.out)
    assert len(ids) >= 2, run.out
    assert len(set(ids)) == 1, run.out  # one fault, one incident, whatever the bundle
    assert run.returncode == 0, run.err


def test_library_warnings_go_through_the_structured_log() -> None:
    out = io.StringIO()
    logs.configure("info", "json", out)
    logging.getLogger("asyncua.client.ua_client").warning("ServiceFault (%s)", "BadTimeout")
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "ServiceFault (BadTimeout)"
    assert record["level"] == "warning"
    assert record["logger"] == "asyncua.client.ua_client"
    assert "timestamp" in record


def test_bundle_publish_wait_gives_up_after_n_seconds_and_says_why(
    broker: Broker, topic_root: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    bundle_dir = tmp_path / "bundle-7"
    make_bundle(bundle_dir, key, 7)
    env = tmp_path / "ops.env"
    env.write_text(
        f"EDGE_UPDATES__GATEWAY_TOPIC={topic_root}/{{gateway}}/jobs/notify\n"
        f"EDGE_UPDATES__STATE_TOPIC={topic_root}/{{gateway}}/jobs/state\n"
    )
    started = time.monotonic()
    done = _cli(
        "bundle", "publish", str(bundle_dir), "--gateway", "nobody-home", "--host", "127.0.0.1",
        "--port", str(broker.port), "--wait", "2", "--env-file", str(env),
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 3, done.stdout + done.stderr
    assert "gave up after --wait 2 s: gateway nobody-home reported no final state" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert 2.0 <= took < 20.0


def test_bench_prints_figures_apart_from_log_lines() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "bench", "bundles"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    log_line = re.compile(
        r'\[(debug|info|warning|error)\s*\]|"level":|^(INFO|WARNING):', re.MULTILINE
    )
    assert not log_line.search(done.stdout), done.stdout
    assert re.search(r"^verify \(signature \+ hashes\)\s+[\d.]+ ms$", done.stdout, re.MULTILINE)
    assert done.stdout.rstrip().endswith(f"log lines: {root / 'build' / 'bench.log'}")
    assert log_line.search((root / "build" / "bench.log").read_text())
