"""`edge-agent model fit | eval | relearn | export`: learned models from the command line.

`fit` and `eval` need the `learn` extra (they fit in this process); `relearn` publishes the
command a running agent listens for; `export` makes a bundle of an asset's learned model
for `edge-agent bundle sign` and the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from edge_agent.core import logs
from edge_agent.core.assets import LEARN, Profile, SignalSpec, guess_role
from edge_agent.core.errors import ConfigError, ModelError
from edge_agent.core.readings import Outgoing, new_id
from edge_agent.daemon.learning import report
from edge_agent.daemon.learning.store import Store
from edge_agent.daemon.settings import Settings, load_settings

if TYPE_CHECKING:
    from edge_agent.models.learn.csvdata import CsvFormat


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _pairs(text: str | None, what: str) -> dict[str, str]:
    """`a=x,b=y` -> {a: x, b: y}; a name may hold spaces, not `,` or `=`."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"--{what} {text!r}: expected NAME={what[:-1].upper()},...")
        out[name.strip()] = value.strip()
    return out


def _names(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _progress(fraction: float, stage: str) -> None:
    bar = "#" * round(fraction * 30)
    sys.stderr.write(f"\r[{bar:<30}] {fraction * 100:5.1f}% {stage[:50]:<50}")
    sys.stderr.flush()
    if fraction >= 1.0:
        sys.stderr.write("\n")


# --- model fit ---------------------------------------------------------------------------


def _form(args: argparse.Namespace) -> CsvFormat:
    from edge_agent.models.learn.csvdata import CsvFormat  # noqa: PLC0415 - numpy

    return CsvFormat(
        delimiter=args.delimiter, time_column=args.ts_column, time_format=args.ts_format
    )


def _cmd_fit(args: argparse.Namespace) -> int:
    from edge_agent.models.learn.fit import FitOptions  # noqa: PLC0415 - needs the `learn` extra
    from edge_agent.models.learn.job import Output, fit_csv  # noqa: PLC0415

    signals = _names(args.signals) or _columns(args, args.csv)
    result = fit_csv(
        args.csv,
        roles=_roles(args, signals),
        out_dir=args.out,
        signals=signals,
        label_columns=_names(args.label_columns),
        options=FitOptions(units=_pairs(args.units, "units"), rate_hz=args.rate_hz, seed=args.seed),
        form=_form(args),
        max_rows=args.max_rows,
        output=Output(name=args.name, tflite=args.tflite),
        progress=_progress,
    )
    for warning in result.warnings:
        _say(f"warning: {warning}")
    _say(report.fit_table(result.fitted))
    _say(f"model written: {result.manifest_path}")
    if args.bundle is not None:
        _bundle(result.manifest_path, [], args.bundle, args.version)
    return 0


# --- model eval --------------------------------------------------------------------------


def _eval_profile(args: argparse.Namespace, settings: Settings) -> Profile:
    """The profile an eval fits: one from the settings (--profile), or one from the flags."""
    if args.profile:
        for p in settings.assets.profiles:
            if p.name == args.profile:
                return p
        have = ", ".join(p.name for p in settings.assets.profiles) or "none"
        raise ConfigError(f"--profile {args.profile}: no such profile in the settings ({have})")
    units = _pairs(args.units, "units")
    signals = _names(args.signals) or _columns(args, _csv_files(args.data))
    roles = _roles(args, signals)
    return Profile(
        name="eval",
        match=["*"],
        model=LEARN,
        rate_hz=args.rate_hz,
        signals=[
            SignalSpec.model_validate(
                {"name": s, "role": roles.get(s, "other"), "unit": units.get(s, "")}
            )
            for s in signals
        ],
    )


def _roles(args: argparse.Namespace, signals: list[str]) -> dict[str, str]:
    """--roles, and for every signal it does not name, the role its name suggests (shown)."""
    given = _pairs(args.roles, "roles")
    unknown = sorted(set(given) - set(signals))
    if unknown:
        raise ConfigError(f"--roles names {', '.join(unknown)}, not a signal ({signals})")
    guessed = {s: guess_role(s) for s in signals if s not in given}
    if guessed:
        shown = ", ".join(f"{s}={r}" for s, r in guessed.items())
        _say(f"roles from the signal names: {shown} (give --roles to change them)")
    return {**guessed, **given}


def _csv_files(data: Path) -> list[Path]:
    from edge_agent.daemon.learning.evaluate import csv_files  # noqa: PLC0415

    files = csv_files(data)
    if not files:
        raise ConfigError(f"--data {data}: no CSV files there")
    return files


def _columns(args: argparse.Namespace, files: list[Path]) -> list[str]:
    """The columns every file has, but the time and the labels, in the first file's order.

    A column only some files hold (a label one file lacks) is no signal of the machine.
    """
    from edge_agent.models.learn.csvdata import read_csv  # noqa: PLC0415 - numpy

    labels = [*([args.label] if getattr(args, "label", None) else []), *_names(args.label_columns)]
    shared: list[str] | None = None
    for path in files:
        names = read_csv(path, label_columns=labels, form=_form(args), max_rows=2).signals
        shared = list(names) if shared is None else [c for c in shared if c in names]
    return shared or []


def _cmd_eval(args: argparse.Namespace) -> int:
    from edge_agent.daemon.learning.evaluate import (  # noqa: PLC0415 - the `learn` extra
        EvalSpec,
        csv_files,
        evaluate,
    )

    settings = load_settings(args.env_file)
    logs.configure("warning", settings.log.format)  # the table is the output, not the log
    profile = _eval_profile(args, settings)
    spec = EvalSpec(
        profile=profile,
        label=args.label,
        train_rows=args.train_rows,
        label_columns=tuple(_names(args.label_columns)),
        form=_form(args),
        packs=tuple(args.rules),
    )
    files = csv_files(args.data)
    if not files:
        raise ConfigError(f"--data {args.data}: no CSV files there")
    _say(report.eval_header())
    results = evaluate(
        files, spec, settings, progress=lambda r: _say(report.eval_row(r, args.data))
    )
    _say(report.eval_footer(results))
    if args.json is not None:
        args.json.write_text(json.dumps(report.eval_json(results, args.data), indent=2) + "\n")
        _say(f"figures written: {args.json}")
    return 1 if any(r.error for r in results) else 0


# --- model relearn -----------------------------------------------------------------------


async def _relearn(args: argparse.Namespace) -> int:
    from edge_agent.connectors.mqtt import MqttClient  # noqa: PLC0415 - paho only when used
    from edge_agent.connectors.uplink import uplink_mqtt_settings, uplink_tls  # noqa: PLC0415
    from edge_agent.daemon.app import topic_prefix  # noqa: PLC0415
    from edge_agent.daemon.learning.state import relearn_topic, state_topic  # noqa: PLC0415

    settings = load_settings(args.env_file)
    mqtt = uplink_mqtt_settings(settings)
    mqtt = mqtt.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    prefix = topic_prefix(settings)
    states: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    sent = time.time()
    client_id = f"edge-relearn-{new_id()[-12:]}"
    async with MqttClient(mqtt, client_id=client_id, name="relearn", tls=uplink_tls(settings)) as c:
        if args.wait:

            def on_state(_topic: str, data: bytes) -> None:
                state = msgspec.json.decode(data)
                if isinstance(state, dict) and float(state.get("ts", 0)) >= sent - 1:
                    states.put_nowait(state)

            c.subscribe(state_topic(prefix, args.asset), 1, on_state)
            await c.wait_subscribed()
        topic = relearn_topic(prefix, args.asset)
        # Not retained: a retained command would relearn the asset at every restart.
        await c.publish(Outgoing(topic, b"{}", new_id(), key=args.asset, qos=1))
        _say(f"relearn sent to {topic}")
        if args.wait:
            try:
                state = await asyncio.wait_for(states.get(), args.wait)
            except TimeoutError:
                _say(f"no new state from the agent within {args.wait:g} s")
                return 1
            _say(f"{args.asset}: {state.get('state')} {state.get('stage') or ''}".rstrip())
    return 0


def _cmd_relearn(args: argparse.Namespace) -> int:
    return asyncio.run(_relearn(args))


# --- model export ------------------------------------------------------------------------


def _bundle(manifest: Path, packs: list[Path], out: Path, version: int | None) -> None:
    """`edge-agent bundle build` of a model and its rule packs (default: the learned pack)."""
    from edge_agent.daemon.bundles import cli as bundle_cli  # noqa: PLC0415
    from edge_agent.rules.pack import default_pack_path  # noqa: PLC0415

    if version is None:
        raise ConfigError("--version: a bundle needs a version above any shipped before")
    parser = argparse.ArgumentParser(prog="edge-agent")
    bundle_cli.register(parser.add_subparsers(dest="command"))
    rules = [str(p) for p in packs or [default_pack_path("learned")]]
    argv = ["bundle", "build", "--model", str(manifest), "--rules", *rules]
    argv += ["--version", str(version), "--out", str(out)]
    args = parser.parse_args(argv)
    args.func(args)


def _cmd_export(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_file)
    manifest = Store(settings.agent.state_dir).manifest(args.asset)
    if not manifest.is_file():
        raise ModelError(
            f"no learned model of {args.asset!r} in {manifest.parent} "
            "(EDGE_AGENT__STATE_DIR; is the asset still learning?)"
        )
    profile = settings.assets.profile_of(args.asset)
    _bundle(manifest, list(profile.rules) if profile else [], args.out, args.version)
    _say(f"next: edge-agent bundle sign {args.out} --key ops.key")
    return 0


# --- the parser --------------------------------------------------------------------------


def _env_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env-file", action="append", type=Path, default=[], metavar="FILE", help="settings file"
    )


def _csv_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signals", help="columns to use, comma-separated (default: all but labels)")
    p.add_argument("--roles", help="NAME=ROLE,... (vibration, current, voltage, pressure, ...)")
    p.add_argument("--units", help="NAME=UNIT,... (bar, degC, ...: absolute tolerances)")
    p.add_argument("--label-columns", help="label columns, never signals, comma-separated")
    p.add_argument("--delimiter", help="field delimiter (default: detected: ; , or tab)")
    p.add_argument("--ts-column", help="time column (default: detected)")
    p.add_argument("--ts-format", help="iso, epoch_s, epoch_ms or a strptime pattern")
    p.add_argument("--rate-hz", type=float, default=1.0, help="grid rate (default 1)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `model fit|eval|relearn|export` to the agent's command line."""
    model = subparsers.add_parser("model", help="learned models: fit, evaluate, relearn, export")
    sub = model.add_subparsers(dest="model_command", required=True, metavar="STEP")

    fit = sub.add_parser("fit", help="fit a learned model from CSV files of normal operation")
    fit.add_argument("--csv", type=Path, nargs="+", required=True, help="CSV files")
    _csv_options(fit)
    fit.add_argument("--max-rows", type=int, help="use only the first rows of each file")
    fit.add_argument("--out", type=Path, required=True, help="model directory to write")
    fit.add_argument("--name", default="learned", help="model name (default learned)")
    fit.add_argument("--seed", type=int, default=0, help="seed (recorded; default 0)")
    fit.add_argument("--tflite", choices=("auto", "on", "off"), default="auto", help="TFLite files")
    fit.add_argument("--bundle", type=Path, help="also build a bundle into this directory")
    fit.add_argument("--version", type=int, help="bundle version (with --bundle)")
    fit.set_defaults(func=_cmd_fit)

    ev = sub.add_parser("eval", help="learn from each file's head, score the rest vs labels")
    ev.add_argument("--data", type=Path, required=True, help="folder of CSV files (or one)")
    ev.add_argument("--train-rows", type=int, required=True, help="rows to learn from per file")
    ev.add_argument("--label", required=True, help="the label column scored (0/1)")
    _csv_options(ev)
    ev.add_argument("--profile", help="take signals and roles from this profile (--env-file)")
    ev.add_argument(
        "--rules", type=Path, nargs="*", default=[], help="rule packs (default learned)"
    )
    ev.add_argument("--json", type=Path, help="also write the figures as JSON here")
    _env_file(ev)
    ev.set_defaults(func=_cmd_eval)

    re = sub.add_parser("relearn", help="make a running agent learn an asset again")
    re.add_argument("asset", help="the asset")
    re.add_argument("--host", help="broker host (default: the uplink's)")
    re.add_argument("--port", type=int, help="broker port (default: the uplink's)")
    re.add_argument("--wait", type=float, default=10.0, help="seconds to wait for its new state")
    _env_file(re)
    re.set_defaults(func=_cmd_relearn)

    ex = sub.add_parser("export", help="make a bundle of an asset's learned model")
    ex.add_argument("asset", help="the asset")
    ex.add_argument("--out", type=Path, required=True, help="new bundle directory")
    ex.add_argument("--version", type=int, required=True, help="bundle version")
    _env_file(ex)
    ex.set_defaults(func=_cmd_export)
