"""`edge-agent rules check PATH...`: validate rule packs against the model, file:line errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.core.errors import ModelError
from edge_agent.rules.check import check_pack
from edge_agent.rules.pack import PackError, Problem, load_pack


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `rules` command and its `check` subcommand to the agent's command line."""
    rules = subparsers.add_parser("rules", help="rule pack tools")
    sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="validate rule packs: schema, expressions, signals and classes, placeholders",
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="rule pack files")
    check.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE",
        help="model manifest.json whose signals, classes and roles the packs may use "
        "(default: the model shipped with the agent)",
    )
    check.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths
    try:
        pack = load_pack(paths)
    except PackError as exc:
        return _report(exc.problems)
    # Imported here: loading a manifest verifies artifact hashes, which `--help` need not do.
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415

    try:
        manifest = load_manifest(args.manifest)
    except ModelError as exc:
        sys.stderr.write(f"edge-agent rules check: cannot read the model's manifest: {exc}\n")
        return 2
    problems = check_pack(pack, manifest.signals, manifest.classes, manifest.roles)
    if problems:
        return _report(problems)
    sys.stdout.write(
        f"ok: pack {pack.name} {pack.version}, {len(pack.rules)} rules, "
        f"against model {manifest.name} {manifest.version}\n"
    )
    return 0


def _report(problems: list[Problem]) -> int:
    # Printed (not logged): this is a command for a person, one problem per line.
    sys.stderr.writelines(f"{problem}\n" for problem in problems)
    count = len(problems)
    sys.stderr.write(f"{count} problem{'s' if count != 1 else ''} found\n")
    return 1
