"""Bundle figures: build, verify, stage + swap, probation, job intake, on the shipped model.

python -m bench.bench_bundles
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon.bundles.build import write_manifest
from edge_agent.daemon.bundles.bundle import (
    TrustedKeys,
    public_key_line,
    read_manifest,
    sign,
    verify_bundle,
)
from edge_agent.daemon.bundles.cli import register
from edge_agent.daemon.bundles.fetch import Job
from edge_agent.daemon.bundles.jobs import oversize, parse_job
from edge_agent.daemon.bundles.probation import check_models, check_rules
from edge_agent.daemon.bundles.store import BundleStore
from edge_agent.models.manifest import default_manifest_path
from edge_agent.rules.pack import default_pack_path

ROUNDS = 20


def _timed(label: str, fn: Callable[[], object], rounds: int = ROUNDS) -> None:
    fn()  # warm
    started = time.perf_counter()
    for _ in range(rounds):
        fn()
    each = (time.perf_counter() - started) / rounds
    print(f"{label:<34} {each * 1000:8.2f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers(dest="command"))
        out = root / "b1"
        argv = ["bundle", "build", "--model", str(default_manifest_path()), "--rules",
                str(default_pack_path()), "--version", "1", "--out", str(out)]  # fmt: skip
        started = time.perf_counter()
        args = parser.parse_args(argv)
        args.func(args)
        print(f"{'build (golden pair made)':<34} {(time.perf_counter() - started) * 1000:8.2f} ms")
        key = Ed25519PrivateKey.generate()
        write_manifest(out, sign(read_manifest(out), key))
        (root / "keys").write_text(public_key_line(key.public_key()) + "\n")
        keys = TrustedKeys.load(root / "keys")
        manifest = read_manifest(out)
        size = sum(e.length for e in manifest.files.values())
        print(f"bundle: {len(manifest.files)} files, {size / 1024:.0f} KiB")
        _timed(
            "verify (signature + hashes)",
            lambda: verify_bundle(out, keys, highest=0, model_input=None),
        )
        counter = iter(range(2, 10_000))

        def install() -> None:
            store = BundleStore(root / "state")
            v = next(counter)
            m = sign(msgspec.structs.replace(manifest, version=v), key)
            store.swap(store.stage(out, m), v)

        _timed("stage + fsync + swap", install)
        bundle = verify_bundle(out, keys, highest=0, model_input=None)
        results = check_models(bundle)
        _timed(
            f"probation probe ({len(results)} artifacts, child)",
            lambda: check_models(bundle),
            rounds=5,
        )
        _timed("rule packs compile", lambda: check_rules(bundle), rounds=5)
        # Job intake: the largest inline job the default limit admits, read off the loop; an
        # oversize one is named from its first KiB without being parsed.
        blob = base64.b64encode(os.urandom(12 << 20)).decode()
        job = Job(job_id="bench-1", version=1, manifest=manifest, inline={"model/x.bin": blob})
        payload = msgspec.json.encode(job)
        _timed(f"parse a {len(payload) >> 20} MiB inline job", lambda: parse_job(payload), 5)
        big = payload + b" " * (2 << 20)
        _timed(f"name a {len(big) >> 20} MiB oversize job by id", lambda: oversize(big, 16 << 20))
        late = b" " * 8192 + big  # its id beyond the first KiB: named by its hash
        _timed(f"name a {len(late) >> 20} MiB oversize job by hash", lambda: oversize(late, 1024))


if __name__ == "__main__":
    main()
