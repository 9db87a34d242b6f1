"""`edge-agent install-service`: put the systemd unit and the settings files in place.

Files written (under `--root`, `/` by default), all owned by root:
- /etc/systemd/system/edge-agent.service (0644), its PATH pointing at this installation;
- /etc/edge-agent/edge-agent.env.example (0640), every setting at its default, refreshed;
- /etc/edge-agent/edge-agent.env (0640), a copy of the example, only if it does not exist;
- /etc/edge-agent/credentials/ (0700): LoadCredential= fails the start if it is missing.
The unit runs as a DynamicUser, so no account is created; the state directory is systemd's.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.settings import render_env_file

UNIT = "edge-agent.service"
# The unit as shipped looks for the agent here first; the installer puts its own bin first.
_PATH_LINE = re.compile(r"^Environment=PATH=(.*)$", re.MULTILINE)


def unit_text(bin_dir: Path | None = None) -> str:
    """The unit file, with `bin_dir` (where `edge-agent` is) first on its PATH."""
    text = resources.files("edge_agent.systemd").joinpath(UNIT).read_text(encoding="utf-8")
    if bin_dir is None:
        return text
    match = _PATH_LINE.search(text)
    if match is None:  # pragma: no cover - guarded by the unit tests
        raise ConfigError(f"{UNIT}: no Environment=PATH= line to point at {bin_dir}")
    rest = [p for p in match.group(1).split(":") if p != str(bin_dir)]
    return _PATH_LINE.sub(f"Environment=PATH={':'.join([str(bin_dir), *rest])}", text, count=1)


def _write(path: Path, text: str, mode: int) -> None:
    """Write atomically (temp file + rename) with `mode`, owned by root when we are root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)  # noqa: PTH101 - on the open temp file's name before the rename
        if os.geteuid() == 0:
            os.chown(tmp, 0, 0)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)


def install(root: Path, bin_dir: Path) -> list[Path]:
    """Install the unit and settings files under `root`; return the paths written."""
    if not (bin_dir / "edge-agent").exists():
        raise ConfigError(f"--bin-dir {bin_dir}: no edge-agent command there")
    etc = root / "etc" / "edge-agent"
    unit = root / "etc" / "systemd" / "system" / UNIT
    example = etc / "edge-agent.env.example"
    env = etc / "edge-agent.env"
    creds = etc / "credentials"
    written = [unit, example]
    _dir(etc, 0o755)
    _dir(creds, 0o700)
    _write(unit, unit_text(bin_dir), 0o644)
    rendered = render_env_file()
    _write(example, rendered, 0o640)
    if not env.exists():  # never overwrite what the operator configured
        _write(env, rendered, 0o640)
        written.append(env)
    return written


def _default_bin_dir() -> Path:
    # Not resolved: a venv's python is a symlink to the system one, the venv's bin is wanted.
    return Path(sys.executable).parent


def _cmd(args: argparse.Namespace) -> int:
    written = install(args.root, args.bin_dir)
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    if args.root == Path("/"):
        sys.stdout.write("next: systemctl daemon-reload && systemctl enable --now edge-agent\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `install-service` to the `edge-agent` command line."""
    parser = subparsers.add_parser(
        "install-service", help="install the systemd unit and the settings files"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install below this directory instead of / (packaging, tests)",
    )
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=_default_bin_dir(),
        help="directory holding the edge-agent command (default: this installation's)",
    )
    parser.set_defaults(func=_cmd)
