"""`edge-agent bundle keygen | build | sign | verify | publish`: the operator's side."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from edge_agent.core.errors import BundleError, ConfigError
from edge_agent.core.readings import Outgoing, new_id
from edge_agent.daemon.bundles.manifest import (
    MAX_BUNDLE_BYTES,
    BundleManifest,
    BundleRejectedError,
)
from edge_agent.daemon.bundles.settings import UpdateSettings
from edge_agent.daemon.settings import load_settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.daemon.bundles.fetch import Job

# The modules that sign, build, verify and probe bundles (and cryptography, ~9 MB resident)
# are imported by the commands that use them: `edge-agent run` builds this parser too.

GOLDEN_WINDOWS = 8
GOLDEN_SEED = 20240611


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _summary(m: BundleManifest) -> str:
    return f"version {m.version}, {len(m.files)} files, expires {m.expires.isoformat()}"


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: PLC0415

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--key {path}: not a readable, unencrypted PEM key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"--key {path}: not an Ed25519 key")
    return key


def _cmd_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from edge_agent.daemon.bundles.bundle import key_id, public_key_line  # noqa: PLC0415

    out: Path = args.out
    secret, public = out.with_suffix(".key"), out.with_suffix(".pub")
    for path in (secret, public):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_text(public_key_line(key.public_key(), args.comment or out.name) + "\n")
    _say(f"private key {secret} (keep it off the gateways), public key {public}")
    _say(f"key id {key_id(key.public_key())}; append {public} to the gateways' trusted keys")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from edge_agent.daemon.bundles.build import (  # noqa: PLC0415
        GOLDEN,
        build,
        model_files,
        model_input_of,
    )
    from edge_agent.daemon.bundles.probation import make_golden  # noqa: PLC0415

    golden: Path | None = args.golden
    if golden is None:
        # Golden windows: seeded noise around the normal point, normalised as the model sees
        # it, from barely off normal to far off, so scores and class outputs are not all
        # saturated and each artifact's answers are really compared.
        from edge_agent.models.manifest import load_manifest  # noqa: PLC0415

        manifest = load_manifest(args.model)
        rng = np.random.default_rng(GOLDEN_SEED)
        x = rng.standard_normal((GOLDEN_WINDOWS, manifest.window, len(manifest.signals)))
        x *= np.linspace(0.05, 1.0, GOLDEN_WINDOWS)[:, None, None]
        pair = make_golden(args.model, x.astype(np.float32))
        golden = args.out.parent / f".{args.out.name}.{GOLDEN}"
        golden.write_bytes(msgspec.json.encode(pair))
    try:
        manifest_out = build(
            args.out,
            version=args.version,
            model_manifest=args.model,
            model_files=model_files(args.model),
            rule_packs=args.rules,
            golden=golden,
            model_input=model_input_of(args.model),
            expires=datetime.now(UTC).replace(microsecond=0) + timedelta(days=args.expires_days),
            min_agent=args.min_agent,
        )
    finally:
        if args.golden is None:
            golden.unlink(missing_ok=True)
    _say(f"built {args.out}: {_summary(manifest_out)}; unsigned: run `edge-agent bundle sign`")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from edge_agent.daemon.bundles.build import write_manifest  # noqa: PLC0415
    from edge_agent.daemon.bundles.bundle import key_id, read_manifest, sign  # noqa: PLC0415

    key = _load_private_key(args.key)
    try:
        manifest = read_manifest(args.bundle)
    except BundleRejectedError as exc:
        raise BundleError(f"{args.bundle}: {exc}") from exc
    write_manifest(args.bundle, sign(manifest, key))
    _say(f"signed {args.bundle} version {manifest.version} with key {key_id(key.public_key())}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """The gateway's checks, in its order, with the job state each failure would get there."""
    from edge_agent.daemon.bundles.build import model_input_of  # noqa: PLC0415
    from edge_agent.daemon.bundles.bundle import TrustedKeys, verify_bundle  # noqa: PLC0415
    from edge_agent.daemon.bundles.probation import ProbeLimits, check_bundle  # noqa: PLC0415

    keys = TrustedKeys.load(args.trusted_keys)
    expected = model_input_of(args.model) if args.model is not None else None
    try:
        bundle = verify_bundle(
            args.bundle,
            keys,
            highest=args.highest,
            model_input=expected,
            max_bundle_bytes=args.max_bundle_bytes,
        )
    except BundleRejectedError as exc:
        sys.stderr.write(f"REJECTED {args.bundle}: {exc}\n")
        return 1
    if not args.no_probation:
        defaults = UpdateSettings()
        limits = ProbeLimits(defaults.probe_timeout_s, defaults.probe_memory_mb)
        try:
            results = check_bundle(bundle, limits)
        except BundleError as exc:
            sys.stderr.write(f"FAILED {args.bundle}: probation: {exc}\n")
            return 1
        for r in results:
            _say(f"  {r.outcome:<7} {r.file} ({r.backend}): {r.detail}")
    signature = bundle.manifest.signature
    signer = signature.key_id if signature else "?"
    proven = "" if args.no_probation else ", probation passed"
    _say(f"OK {args.bundle}: {_summary(bundle.manifest)}, signed by {signer}{proven}")
    return 0


def _job(args: argparse.Namespace) -> Job:
    from edge_agent.daemon.bundles.bundle import read_manifest  # noqa: PLC0415
    from edge_agent.daemon.bundles.fetch import Job  # noqa: PLC0415

    manifest = read_manifest(args.bundle)
    job_id = args.job_id or f"bundle-{manifest.version}-{new_id()[-12:]}"  # the random tail
    if args.url:
        return Job(job_id=job_id, version=manifest.version, manifest=manifest, url=args.url)
    inline = {
        name: base64.b64encode((args.bundle / name).read_bytes()).decode()
        for name in manifest.files
    }
    return Job(job_id=job_id, version=manifest.version, manifest=manifest, inline=inline)


async def _publish(args: argparse.Namespace) -> int:
    from edge_agent.connectors.mqtt import MqttClient  # noqa: PLC0415 - paho only when used

    settings = load_settings(args.env_file)
    mqtt = settings.mqtt.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    updates = settings.updates
    if args.gateway:
        topic = updates.gateway_topic.format(gateway=args.gateway)
    else:
        topic = updates.group_topic.format(group=args.group)
    job = _job(args)
    payload = msgspec.json.encode(job)
    states: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    async with MqttClient(mqtt, client_id=f"edge-bundle-{new_id()[-12:]}", name="bundle") as client:
        if args.wait and args.gateway:

            def on_state(_topic: str, data: bytes) -> None:
                state = msgspec.json.decode(data)
                if isinstance(state, dict) and state.get("job_id") == job.job_id:
                    states.put_nowait(state)

            client.subscribe(updates.state_topic.format(gateway=args.gateway), 1, on_state)
        # Retained: a gateway that is offline, or restarts mid-install, still gets the job.
        await client.publish(Outgoing(topic, payload, new_id(), qos=1, retain=True))
        _say(f"published job {job.job_id} (bundle {job.version}, {len(payload)} bytes) to {topic}")
        code = 0
        if args.wait and args.gateway:
            try:
                code = await asyncio.wait_for(_until_final(states), args.wait)
            except TimeoutError:
                _say(
                    f"gave up after --wait {args.wait:g} s: gateway {args.gateway} reported no "
                    "final state (offline, or still installing); the job stays retained on "
                    f"{topic} and runs when the gateway takes it"
                )
                code = 3
    return code


async def _until_final(states: asyncio.Queue[dict[str, object]]) -> int:
    while True:
        state = await states.get()
        step = f" {state['step']}" if state.get("step") else ""
        reason = f": {state['reason']}" if state.get("reason") else ""
        _say(f"{state['status']}{step}{reason}")
        if state["status"] in ("SUCCEEDED", "FAILED", "REJECTED"):
            return 0 if state["status"] == "SUCCEEDED" else 1


def _cmd_publish(args: argparse.Namespace) -> int:
    return asyncio.run(_publish(args))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bundle keygen|build|sign|verify|publish` to the agent's command line."""
    bundle = subparsers.add_parser("bundle", help="make, sign, check and ship update bundles")
    sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="STEP")

    keygen = sub.add_parser("keygen", help="make an Ed25519 signing key pair")
    keygen.add_argument("--out", type=Path, required=True, help="writes OUT.key and OUT.pub")
    keygen.add_argument("--comment", default="", help="name on the public key line")
    keygen.set_defaults(func=_cmd_keygen)

    b = sub.add_parser("build", help="lay out a bundle directory with an unsigned manifest")
    b.add_argument("--model", type=Path, required=True, help="the model's manifest.json")
    b.add_argument("--rules", type=Path, nargs="+", required=True, help="rule pack files")
    b.add_argument("--version", type=int, required=True, help="bundle version, above any before")
    b.add_argument("--out", type=Path, required=True, help="new bundle directory")
    b.add_argument(
        "--golden", type=Path, help="golden pair JSON (default: made now by running the model)"
    )
    b.add_argument("--expires-days", type=float, default=90.0, help="validity (default 90)")
    b.add_argument("--min-agent", help="lowest agent version that may run it (default: this)")
    b.set_defaults(func=_cmd_build)

    s = sub.add_parser("sign", help="sign a built bundle's manifest")
    s.add_argument("bundle", type=Path, help="bundle directory")
    s.add_argument("--key", type=Path, required=True, help="private key from `bundle keygen`")
    s.set_defaults(func=_cmd_sign)

    v = sub.add_parser("verify", help="check a bundle as a gateway would")
    v.add_argument("bundle", type=Path, help="bundle directory")
    v.add_argument("--trusted-keys", type=Path, required=True, help="trusted public keys file")
    v.add_argument("--highest", type=int, default=0, help="highest version already accepted")
    v.add_argument("--model", type=Path, help="model manifest whose input schema must match")
    v.add_argument(
        "--max-bundle-bytes",
        type=int,
        default=MAX_BUNDLE_BYTES,
        help="what the files may add up to (the gateways' EDGE_UPDATES__MAX_BUNDLE_BYTES)",
    )
    v.add_argument(
        "--no-probation",
        action="store_true",
        help="skip probation (rules compile; every model artifact reproduces its golden output)",
    )
    v.set_defaults(func=_cmd_verify)

    p = sub.add_parser("publish", help="announce a bundle as a job to a gateway or a group")
    p.add_argument("bundle", type=Path, help="signed bundle directory")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--gateway", help="one gateway id")
    target.add_argument("--group", help="a fleet group")
    p.add_argument("--url", help="base URL the gateways fetch files from (default: inline)")
    p.add_argument("--job-id", help="job id (default: bundle-<version>-<random>)")
    p.add_argument("--host", help="broker host (default: EDGE_MQTT__HOST)")
    p.add_argument("--port", type=int, help="broker port (default: EDGE_MQTT__PORT)")
    p.add_argument(
        "--wait", type=float, default=0.0, help="with --gateway: print its states for N seconds"
    )
    p.add_argument("--env-file", action="append", type=Path, default=[], help="settings env file")
    p.set_defaults(func=_cmd_publish)
