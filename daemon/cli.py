"""The `edge-agent` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import metadata
from pathlib import Path

from edge_agent.core import logs
from edge_agent.core.errors import ConfigError, EdgeAgentError
from edge_agent.daemon.bundles import cli as bundle_cli
from edge_agent.daemon.learning import cli as model_cli
from edge_agent.daemon.service import install as service_install
from edge_agent.daemon.settings import Settings, load_settings, render_env_file
from edge_agent.daemon.web import cli as report_cli
from edge_agent.rules import cli as rules_cli


def _env_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="read settings from this env file (repeatable; later files win, the environment "
        "wins over all)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.env_file)


def _report_config_error(exc: ConfigError) -> int:
    print("edge-agent: configuration is invalid:", file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"  {line}", file=sys.stderr)
    return 2


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _report_config_error(exc)
    from edge_agent.daemon.checks import check_all  # noqa: PLC0415 - loads the model

    logs.configure("warning", settings.log.format)  # the model's info lines are not the answer
    problems = check_all(settings)  # every check `run` makes before it serves
    if problems:
        return _report_config_error(ConfigError("\n".join(problems)))
    print(
        f"configuration is valid: sensor broker {settings.mqtt.host}:{settings.mqtt.port}, "
        f"sources {','.join(settings.agent.sources)}, state in {settings.agent.state_dir}"
    )
    return 0


def _cmd_config_env(_args: argparse.Namespace) -> int:
    sys.stdout.write(render_env_file())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.daemon.app import run_agent  # noqa: PLC0415 - keeps `check-config` light

    settings = _settings(args)
    logs.configure(settings.log.level, settings.log.format)
    asyncio.run(run_agent(settings))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.daemon.demo import run_demo  # noqa: PLC0415

    return run_demo(args)


def _version() -> str:
    try:
        return metadata.version("edge-agent")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Industrial IoT edge agent: explains anomalies, advises maintenance.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    _env_files(run)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate the settings and exit")
    _env_files(check)
    check.set_defaults(func=_cmd_check_config)

    config = sub.add_parser("config", help="configuration helpers")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    env = config_sub.add_parser("env", help="print every setting as a documented env file")
    env.set_defaults(func=_cmd_config_env)

    demo = sub.add_parser("demo", help="run the agent against the built-in plant simulator")
    demo.add_argument("--assets", type=int, default=4, help="pumps to simulate (default 4)")
    demo.add_argument(
        "--fault",
        default="cavitation",
        help="fault injected into the last pump: cavitation (default), overheating, "
        "misalignment, stuck_sensor, drifting_sensor, bearing_wear (slow: hours)",
    )
    demo.add_argument(
        "--onset", type=float, default=300.0, help="simulated seconds before the fault starts"
    )
    demo.add_argument(
        "--speed", type=float, default=20.0, help="simulated seconds per wall second (default 20)"
    )
    demo.add_argument(
        "--transport", choices=("mqtt", "opcua"), default="mqtt", help="how readings arrive"
    )
    demo.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many wall seconds (0: never)"
    )
    demo.add_argument(
        "--update-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="ship a signed fleet update (bumped model and rule pack versions) to the agent "
        "after this many wall seconds and print its job states (0: off, the default)",
    )
    _env_files(demo)
    demo.set_defaults(func=_cmd_demo)

    # Subcommands owned by their own modules (one registry: here).
    rules_cli.register(sub)
    bundle_cli.register(sub)
    model_cli.register(sub)
    service_install.register(sub)
    report_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `edge-agent` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        return _report_config_error(exc)
    except EdgeAgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
