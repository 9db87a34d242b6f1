"""Where learning keeps its files in the state directory, and how they are replaced.

    <state_dir>/learning/<asset>.npz     an asset's recorded rows, the fit worker's input
    <state_dir>/models/<asset>/          its learned model (manifest.json and its files)

An asset's name becomes one path component by percent-encoding (`pump/7` -> `pump%2F7`,
a leading dot too), so no asset name can reach outside these folders. A model directory is
written whole elsewhere and renamed into place, so a crash never leaves half a model where
the agent loads from; the start loads every model directory there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from edge_agent.models.manifest import MANIFEST_FILE

LEARNING_DIR = "learning"
MODELS_DIR = "models"
_PARTIAL = ".partial-"


def dir_name(asset: str) -> str:
    """One safe path component for an asset name (reversible)."""
    name = quote(asset, safe="-_")
    return name.replace(".", "%2E", 1) if name.startswith(".") else name


def asset_of(name: str) -> str:
    """The asset a path component names."""
    return unquote(name)


class Store:
    """The learning and model folders of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.learning = state_dir / LEARNING_DIR
        self.models = state_dir / MODELS_DIR

    def recording(self, asset: str) -> Path:
        """Where an asset's recorded rows go."""
        return self.learning / f"{dir_name(asset)}.npz"

    def model_dir(self, asset: str) -> Path:
        """Where an asset's learned model lives."""
        return self.models / dir_name(asset)

    def partial_dir(self, asset: str) -> Path:
        """Where a fit writes before its model is moved into place."""
        return self.models / f"{_PARTIAL}{dir_name(asset)}"

    def manifest(self, asset: str) -> Path:
        """An asset's learned model manifest (it may not exist)."""
        return self.model_dir(asset) / MANIFEST_FILE

    def learned(self) -> Iterator[tuple[str, Path]]:
        """(asset, manifest path) of every learned model kept; leftovers of fits are removed."""
        if not self.models.is_dir():
            return
        for path in sorted(self.models.iterdir()):
            if path.name.startswith(_PARTIAL):
                shutil.rmtree(path, ignore_errors=True)  # a fit cut by a stop or a crash
            elif path.is_dir() and (path / MANIFEST_FILE).is_file():
                yield asset_of(path.name), path / MANIFEST_FILE

    def write_recording(
        self,
        asset: str,
        rows: np.ndarray,
        *,
        signals: list[str],
        roles: list[str],
        units: list[str],
        tolerance_pct: list[float],
        rate_hz: float,
        breaks: list[int],
    ) -> Path:
        """Write the fit worker's input (blocking: call it in a thread)."""
        self.learning.mkdir(parents=True, exist_ok=True)
        path = self.recording(asset)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.savez(
                fh,
                rows=rows,
                signals=np.asarray(signals, dtype=str),
                roles=np.asarray(roles, dtype=str),
                units=np.asarray(units, dtype=str),
                tolerance_pct=np.asarray(tolerance_pct, dtype=np.float64),
                rate_hz=np.float64(rate_hz),
                breaks=np.asarray(breaks, dtype=np.int64),
                name=np.asarray(f"learned-{dir_name(asset)}"),
            )
        tmp.replace(path)
        return path

    def prepare_partial(self, asset: str) -> Path:
        """An empty folder for a fit to write into."""
        partial = self.partial_dir(asset)
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        return partial

    def install(self, asset: str) -> Path:
        """Move the fitted model into place (replacing one learned before); its manifest path."""
        final, partial = self.model_dir(asset), self.partial_dir(asset)
        old = final.with_name(f"{_PARTIAL}old-{final.name}")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final / MANIFEST_FILE

    def forget(self, asset: str) -> None:
        """Remove an asset's learned model and recording (relearn)."""
        shutil.rmtree(self.model_dir(asset), ignore_errors=True)
        self.recording(asset).unlink(missing_ok=True)
