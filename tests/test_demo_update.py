"""`edge-agent demo --update-after`: a signed fleet update ships live and shows in the advice."""

from __future__ import annotations

import json

import yaml

from edge_agent.models.manifest import default_manifest_path
from edge_agent.rules.pack import default_pack_path
from tests.demo_proc import run_demo

STEPS = [
    "QUEUED",
    "IN_PROGRESS downloading",
    "IN_PROGRESS verifying",
    "IN_PROGRESS staging",
    "IN_PROGRESS probation",
    "SUCCEEDED",
]


def _next_patch(version: str) -> str:
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def test_demo_ships_an_update_live_and_recommendations_carry_the_new_versions() -> None:
    model = json.loads(default_manifest_path().read_text())
    pack = yaml.safe_load(default_pack_path().read_text())
    old = f"model {model['name']} v{model['version']} / rules v{pack['version']}"
    new = (
        f"model {model['name']} v{_next_patch(model['version'])} / "
        f"rules v{_next_patch(str(pack['version']))}"
    )

    def done(text: str) -> bool:
        return "SUCCEEDED" in text and "rules v" in text.split("SUCCEEDED", 1)[1]

    # The fault starts 15 wall seconds in, well after the update (2 s, plus build and
    # probation: SUCCEEDED about 9 s in on a loaded machine), so its recommendation can only
    # come from the new bundle.
    fault = ["--fault", "overheating", "--onset", "900"]
    run = run_demo(
        ["--speed", "60", "--assets", "2", *fault, "--update-after", "2"],
        until=done,
        timeout_s=50,
        env={"EDGE_UPDATES__PROBATION_S": "2"},  # the demo caps it at 5 s; shorter is quicker
    )
    text, err = run.out, run.err
    assert run.returncode == 0, text + err
    assert "Traceback" not in err, err
    assert "demo stopped" in text
    # The operator's commands, as the README gives them, were run.
    for command in ("bundle keygen", "bundle build", "bundle sign", "bundle publish"):
        assert f"$ edge-agent {command}" in text, text
    states = [
        line.split(": ", 1)[1].split(" (", 1)[0].strip()
        for line in text.splitlines()
        if line.startswith("[update] job ")
    ]
    assert states == STEPS, text
    after = text.split("SUCCEEDED", 1)[1]
    versions = [line.strip() for line in after.splitlines() if line.strip().startswith("model ")]
    assert versions, text
    assert new != old
    assert all(v == new for v in versions), (new, versions)
