"""`edge-agent demo`: the agent against the built-in plant simulator, on a private broker.

Starts Debian's mosquitto on a free loopback port, a few simulated pumps publishing over
MQTT faster than real time (one of them develops a fault), and the agent itself, then prints
each recommendation as it arrives (as incidents: demo_console.py), with the model and rule
pack versions it came from, and the URL of the agent's live page.
With `--update-after SECONDS` it also ships a fleet update live: it makes a signing key,
builds a bundle of the shipped model and rule pack with bumped versions, signs it and
publishes it to the demo gateway's group with the real `edge-agent bundle` commands, then
prints each job state as the agent reports it. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import OpcUaNode, OpcUaSettings
from edge_agent.core import logs
from edge_agent.core.errors import BundleError, EdgeAgentError
from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.daemon.app import gateway_id, run_agent, topic_prefix
from edge_agent.daemon.bundles import cli as bundle_cli
from edge_agent.daemon.demo_console import Console, clock
from edge_agent.daemon.settings import Settings, load_settings
from edge_agent.models.manifest import default_manifest_path
from edge_agent.rules.pack import default_pack_path
from edge_agent.simulator.broker import running_broker
from edge_agent.simulator.plant import FAULTS, FaultSpec, PumpStream

log = structlog.get_logger(__name__)

UPDATE_GROUP = "demo-fleet"
UPDATE_VERSION = 1  # the demo's state directory is new each run: no bundle was ever accepted
# Seconds the new bundle must score without errors before it is kept. The fleet default
# (30 s) is minutes of simulated plant time at demo speeds; 5 s still shows the step.
DEMO_PROBATION_S = 5.0


def _free_port() -> int:
    """A free loopback port for the demo agent's page (a real agent may hold 9108)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo_settings(
    base: Settings,
    port: int,
    state_dir: Path,
    trusted_keys: Path | None = None,
    http_port: int = 0,
) -> Settings:
    update: dict[str, object] = {
        "mqtt": base.mqtt.model_copy(update={"host": "127.0.0.1", "port": port}),
        "agent": base.agent.model_copy(update={"state_dir": state_dir, "gateway_id": "demo"}),
        "log": base.log.model_copy(update={"level": "warning", "format": "console"}),
        # The demo may run beside a real agent: its page listens on loopback, on a free port.
        "service": base.service.model_copy(
            update={"http_port": http_port, "http_host": "127.0.0.1", "http_enabled": True}
        ),
    }
    if trusted_keys is not None:
        update["updates"] = base.updates.model_copy(
            update={
                "trusted_keys": trusted_keys,
                "groups": [UPDATE_GROUP],
                "probation_s": min(base.updates.probation_s, DEMO_PROBATION_S),
            }
        )
    return base.model_copy(update=update)


def bump_version(version: str) -> str:
    """The next patch version: `1.3.0` -> `1.3.1`; a version without a numeric tail gets `.1`."""
    head, dot, last = version.rpartition(".")
    if dot and last.isdigit():
        return f"{head}.{int(last) + 1}"
    return f"{version}.1"


class LiveUpdate:
    """The operator's side of the demo's live update, done with the real bundle commands.

    Each command is printed as an operator would type it, then run in-process through
    `edge-agent bundle`'s own parser, so the demo shows exactly what the README describes.
    """

    def __init__(self, workdir: Path, env_files: list[Path]) -> None:
        self.workdir = workdir
        self.env_files = env_files
        self.secret_key = workdir / "ops.key"
        self.trusted_keys = workdir / "ops.pub"
        self._parser = argparse.ArgumentParser(prog="edge-agent")
        bundle_cli.register(self._parser.add_subparsers(dest="command", required=True))

    def command(self, *argv: str) -> None:
        """Run one `edge-agent ...` command; a non-zero exit raises BundleError."""
        print(f"$ edge-agent {shlex.join(argv)}", flush=True)
        args = self._parser.parse_args(list(argv))
        code = args.func(args)
        sys.stdout.flush()
        if code != 0:
            raise BundleError(f"`edge-agent {argv[0]} {argv[1]}` exited with {code}")

    def keygen(self) -> None:
        """Make the signing key pair; the agent trusts its public half."""
        self.command("bundle", "keygen", "--out", str(self.workdir / "ops"), "--comment", "demo")

    def sources(self) -> tuple[Path, Path, str]:
        """Copies of the shipped model and rule pack with bumped versions.

        Returns the model manifest, the rule pack and a line saying what changed.
        """
        src = self.workdir / "src"
        model_dir = src / "model"
        shutil.copytree(default_manifest_path().parent, model_dir)
        manifest_path = model_dir / default_manifest_path().name
        manifest = json.loads(manifest_path.read_text())
        old_model = str(manifest["version"])
        manifest["version"] = bump_version(old_model)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        pack_text = default_pack_path().read_text()
        found = re.search(r"^version:\s*(\S+)\s*$", pack_text, flags=re.MULTILINE)
        if found is None:
            raise BundleError(f"{default_pack_path()}: no `version:` line to bump")
        old_pack = found.group(1).strip("'\"")
        pack_text = (
            f"{pack_text[: found.start()]}version: {bump_version(old_pack)}"
            f"{pack_text[found.end() :]}"
        )
        pack_path = src / default_pack_path().name
        pack_path.write_text(pack_text)
        change = (
            f"model {manifest['name']} {old_model} -> {manifest['version']}, "
            f"rules {old_pack} -> {bump_version(old_pack)}"
        )
        return manifest_path, pack_path, change

    def ship(self, port: int) -> None:
        """Build, sign and publish the update bundle to the demo group (blocking)."""
        model, pack, change = self.sources()
        print(f"\n[update] shipping bundle {UPDATE_VERSION}: {change}", flush=True)
        out = self.workdir / f"bundle-{UPDATE_VERSION}"
        self.command("bundle", "build", "--model", str(model), "--rules", str(pack),
                     "--version", str(UPDATE_VERSION), "--out", str(out))  # fmt: skip
        self.command("bundle", "sign", str(out), "--key", str(self.secret_key))
        env = [a for f in self.env_files for a in ("--env-file", str(f))]
        self.command("bundle", "publish", str(out), "--group", UPDATE_GROUP,
                     "--host", "127.0.0.1", "--port", str(port), *env)  # fmt: skip


async def _update_after(update: LiveUpdate, delay: float, port: int, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
        return  # stopped before the update was due
    # Shielded: a command cut off by Ctrl-C would outlive the broker it talks to; each
    # finishes in a second or two, and the demo waits for it before stopping the broker.
    ship = asyncio.ensure_future(asyncio.to_thread(update.ship, port))
    try:
        await asyncio.shield(ship)
    except asyncio.CancelledError:
        try:
            await ship
        except (EdgeAgentError, OSError) as exc:
            log.warning("demo_update_not_shipped", error=str(exc))
        raise
    except (EdgeAgentError, OSError) as exc:
        # The demo keeps running on the bundle it has; the user sees why nothing shipped.
        log.error("demo_update_not_shipped", error=str(exc))  # noqa: TRY400 - no traceback
        print(f"[update] not shipped: {exc}", flush=True)


async def _simulate(
    client: MqttClient, pumps: list[PumpStream], speed: float, stop: asyncio.Event
) -> None:
    """Publish one sample per pump per simulated second, `speed` times faster than real time."""
    period = 1.0 / speed
    next_at = time.monotonic()
    while not stop.is_set():
        for pump in pumps:
            ts, values = pump.step()
            body = json.dumps({"ts": round(ts, 3), **values}).encode()
            await client.publish(
                Outgoing(
                    f"plant/{pump.asset}/telemetry", body, new_id(), pump.asset, Priority.DIGEST, 0
                )
            )
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _demo(args: argparse.Namespace, base: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    start_ts = float(int(datetime.now(UTC).timestamp()))
    n = args.assets
    fault = FaultSpec(args.fault, args.onset)
    pumps = [
        PumpStream(
            f"pump-{i + 1}", seed=i + 1, start_ts=start_ts, fault=fault if i == n - 1 else None
        )
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as state, running_broker() as broker:
        async with contextlib.AsyncExitStack() as plant_stack:
            await _run_demo(
                args, base, broker.port, Path(state), pumps, start_ts, stop, plant_stack
            )
    print("\nedge-agent demo stopped.", flush=True)


async def _opcua_plant(
    args: argparse.Namespace,
    pumps: list[PumpStream],
    start_ts: float,
    stack: contextlib.AsyncExitStack,
) -> OpcUaSettings:
    """Serve the pumps over OPC UA in process; return the agent's OPC UA settings for them."""
    from edge_agent.simulator.opcua_server import PlantServer  # noqa: PLC0415 - OPC UA only

    faults = {p.asset: p.fault for p in pumps if p.fault is not None}
    plant = await stack.enter_async_context(
        PlantServer(
            0,
            [p.asset for p in pumps],
            seed=1,
            speed=args.speed,
            start_ts=start_ts,
            faults=faults,
        )
    )
    return OpcUaSettings(
        endpoint=plant.endpoint,
        nodes=[OpcUaNode(**n) for n in plant.node_map()],
        security_policy="None",
        allow_insecure=True,  # a private loopback server that lives as long as the demo
        publishing_interval_ms=200,
        sampling_interval_ms=0,
        # The server keeps `speed` samples a second per node; the queue must hold one interval.
        queue_size=max(10, math.ceil(args.speed * 0.2) + 2),
    )


async def _run_demo(
    args: argparse.Namespace,
    base: Settings,
    port: int,
    state: Path,
    pumps: list[PumpStream],
    start_ts: float,
    stop: asyncio.Event,
    plant_stack: contextlib.AsyncExitStack,
) -> None:
    n = len(pumps)
    if args.transport == "opcua":
        opcua = await _opcua_plant(args, pumps, start_ts, plant_stack)
        base = base.model_copy(
            update={
                "opcua": opcua,
                "agent": base.agent.model_copy(update={"sources": ["opcua"]}),
            }
        )
    update: LiveUpdate | None = None
    if args.update_after > 0:
        update = LiveUpdate(Path(state) / "ops", args.env_file)
        update.workdir.mkdir()
        update.keygen()
    # The agent's state and the operator's keys and bundles apart, as on a real fleet.
    agent_dir = Path(state) / "agent"
    agent_dir.mkdir()
    settings = _demo_settings(
        base, port, agent_dir, update.trusted_keys if update else None, http_port=_free_port()
    )
    prefix = topic_prefix(settings)
    page = f"http://127.0.0.1:{settings.service.http_port}/"
    onset = datetime.fromtimestamp(start_ts + args.onset, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(
        f"edge-agent demo: {n} pumps over {args.transport} (uplink: mosquitto 127.0.0.1:{port}), "
        f"{args.speed:g}x real time; pump-{n} develops {args.fault} at "
        f"{clock(start_ts + args.onset, start_ts)} simulated ({onset}).\n"
        f"Live page: {page}\n"
        f"Recommendations arrive on {prefix}/recommendations/<asset>. Ctrl-C stops.",
        flush=True,
    )
    console = Console(start_ts, page, str(agent_dir))
    if update is not None:
        print(
            f"A fleet update ships to group {UPDATE_GROUP} after {args.update_after:g} s; "
            f"job states on {settings.updates.state_topic.format(gateway='demo')}.",
            flush=True,
        )
    agent = asyncio.create_task(run_agent(settings, stop), name="agent")
    async with MqttClient(settings.mqtt, client_id="edge-demo-plant", name="demo") as client:
        client.subscribe(
            f"{prefix}/recommendations/#", 1, lambda _t, payload: console.recommendation(payload)
        )
        tasks = [asyncio.create_task(console.heartbeat(stop), name="heartbeat")]
        if update is not None:
            client.subscribe(
                settings.updates.state_topic.format(gateway=gateway_id(settings)),
                1,
                lambda _topic, payload: console.job_state(payload),
            )
            tasks.append(
                asyncio.create_task(
                    _update_after(update, args.update_after, port, stop), name="update"
                )
            )
        await client.connected.wait()
        sim = asyncio.create_task(_simulate(client, pumps, args.speed, stop), name="plant")
        tasks.append(sim)
        if args.duration > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
            stop.set()
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await agent


def bad_argument(args: argparse.Namespace) -> str | None:
    """What is wrong with the demo's arguments, in one line; None when nothing is."""
    if args.fault not in FAULTS:
        known = ", ".join(FAULTS)
        return f"--fault {args.fault}: not a fault the simulator knows; choose from {known}"
    if args.assets < 1:
        return f"--assets {args.assets}: the demo needs at least 1 pump"
    if not math.isfinite(args.speed) or args.speed <= 0:
        return f"--speed {args.speed:g}: must be a number of simulated seconds per second above 0"
    if not math.isfinite(args.onset) or args.onset < 0:
        return f"--onset {args.onset:g}: must be 0 or more simulated seconds"
    if args.duration < 0 or args.update_after < 0:
        return "--duration and --update-after: must be 0 (off) or more wall seconds"
    return None


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C (or `--duration`); exit code 0 on a clean stop."""
    wrong = bad_argument(args)
    if wrong is not None:
        print(f"edge-agent demo: {wrong}", file=sys.stderr)
        return 2
    base = load_settings(args.env_file)
    logs.configure("warning", "console")
    asyncio.run(_demo(args, base))
    return 0
