"""Run one update job and SIGKILL this process at the N-th durable step (fsync of a directory).

    python -m tests.bundle_crash_driver STATE JOB KEYS PORT ROOT KILL_AT

KILL_AT 0 runs the job to the end and prints how many durable steps it took.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import msgspec

from edge_agent.daemon.bundles import store as bundle_store
from edge_agent.daemon.bundles.bundle import Bundle
from edge_agent.daemon.bundles.fetch import Job
from edge_agent.daemon.bundles.probation import check_rules
from edge_agent.daemon.bundles.updates import UpdateService
from tests.bundle_kit import MODEL_INPUT
from tests.update_kit import mqtt_client, update_settings

_real_fsync_dir = bundle_store.fsync_dir
_calls = 0


def main() -> None:
    state, job_file, keys, port, root, kill_at = sys.argv[1:7]
    target = int(kill_at)

    def fsync_dir(path: Path) -> None:
        global _calls  # noqa: PLW0603 - a counter for this one-shot driver
        _calls += 1
        if _calls == target:
            os.kill(os.getpid(), signal.SIGKILL)
        _real_fsync_dir(path)

    bundle_store.fsync_dir = fsync_dir
    job = msgspec.json.decode(Path(job_file).read_bytes(), type=Job)

    async def activate(_bundle: Bundle | None) -> None:
        return

    async def run() -> None:
        async with mqtt_client(int(port), "driver") as client:
            service = UpdateService(
                update_settings(root, Path(keys)),
                client,
                Path(state),
                "gw1",
                activate,
                model_input=MODEL_INPUT,
                check=check_rules,
            )
            await client.connected.wait()
            await service._handle(job)

    asyncio.run(run())
    print(f"fsync-count {_calls}")


if __name__ == "__main__":
    main()
