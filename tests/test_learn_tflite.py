"""Learned models' TFLite files: the shipped template, copied without TensorFlow, run on LiteRT.

Every learned model gets the same weightless TFLite file (models/artifacts/
learned-template.tflite, input [-1, -1, -1]); LiteRT resizes it to the manifest's window.
Real LiteRT and real ONNX Runtime throughout: they must agree on every output.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_agent.core.errors import ModelError
from edge_agent.models.learn import export
from edge_agent.models.learn.fit import FitOptions
from edge_agent.models.learn.job import Output, Result, fit_rows
from edge_agent.models.litert import LiteRtBackend
from edge_agent.models.manifest import MANIFEST_FILE, Manifest, load_manifest
from edge_agent.models.scorer import Scorer

# (window W, signals S): one signal; as many signals as classes (contrib and probs both
# [N, 2]); the most signals a profile takes; and the default window.
SHAPES = [(15, 6), (5, 1), (30, 2), (8, 16)]
CPU = ("CPUExecutionProvider",)
TEMPLATE = Path(__file__).resolve().parents[1] / "models" / "artifacts" / export.TEMPLATE.file


def _level(s: int) -> np.ndarray:
    return 10.0 + 3.0 * np.arange(s)


def _rows(n: int, s: int, seed: int = 0) -> np.ndarray:
    noise = 0.1 * (1 + np.arange(s) % 3)
    return _level(s) + noise * np.random.default_rng(seed).standard_normal((n, s))


def _fit(out: Path, w: int, s: int, rows: np.ndarray | None = None) -> Result:
    signals = [f"x{j}" for j in range(s)]
    return fit_rows(
        _rows(300, s) if rows is None else rows,
        signals,
        ["other"] * s,
        out,
        FitOptions(window=w),
        output=Output(name=f"m{w}x{s}"),  # tflite "auto", what the agent asks for
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], Result]:
    return {(w, s): _fit(tmp_path_factory.mktemp(f"m{w}x{s}"), w, s) for w, s in SHAPES}


def _windows(m: Manifest, n: int = 60, seed: int = 5) -> np.ndarray:
    """Raw windows from normal to several alarm distances off, in either direction."""
    rng = np.random.default_rng(seed)
    s, std = len(m.signals), np.asarray(m.normalisation.std)
    x = np.asarray(m.normalisation.mean) + 0.3 * std * rng.standard_normal((n, m.window, s))
    x[n // 2 :] += std * rng.uniform(-3.0, 3.0, (n - n // 2, 1, s))
    return x.astype(np.float32)


def _agree(manifest: Manifest, x: np.ndarray, precision: str) -> np.ndarray:
    onnx = Scorer(manifest, backends=("onnx",), onnx_providers=CPU, precision=precision)
    lite = Scorer(manifest, backends=("litert",), max_batch=16, precision=precision)
    assert lite.backend_name == "litert:cpu"
    want = onnx.score(x)
    for n in (1, 7, len(x)):  # batches of 1, 7 and 16 (max_batch): the input is resized
        got = lite.score(x[:n])
        for field in ("score", "contrib", "probs"):
            np.testing.assert_allclose(
                getattr(got, field), getattr(want, field)[:n], rtol=1e-5, atol=1e-6, err_msg=field
            )
    return np.asarray(want.score)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"W{w}-S{s}" for w, s in SHAPES])
def test_litert_scores_a_learned_model_as_onnx_runtime_does(
    models: dict[tuple[int, int], Result], shape: tuple[int, int], precision: str
) -> None:
    result = models[shape]
    x = _windows(result.manifest)
    score = _agree(result.manifest, x, precision)
    assert score.min() < 1.0 < score.max()  # both sides of probs' clip at 1
    reference, _ = result.fitted.reference(x)
    np.testing.assert_allclose(score, reference, rtol=1e-5, atol=1e-5)


def test_every_learned_model_carries_the_template_verified(
    models: dict[tuple[int, int], Result],
) -> None:
    template = TEMPLATE.read_bytes()
    assert export.tflite_template() == template
    for (w, s), result in models.items():
        m = load_manifest(result.manifest_path)
        assert m.input.shape == [None, w, s]
        for precision in ("fp32", "int8"):
            art = m.artifact_entry("tflite", precision)
            assert art.file == f"m{w}x{s}.{precision}.tflite"
            assert (art.sha256, art.bytes) == (export.TEMPLATE.sha256, export.TEMPLATE.bytes)
            assert (m.directory / art.file).read_bytes() == template


def test_the_same_fit_writes_byte_identical_files(
    models: dict[tuple[int, int], Result], tmp_path: Path
) -> None:
    first = models[(30, 2)].manifest.directory
    _fit(tmp_path, 30, 2)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.endswith(".tflite")]) == 2
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_tampered_tflite_file_is_refused(
    models: dict[tuple[int, int], Result], tmp_path: Path
) -> None:
    shutil.copytree(models[(15, 6)].manifest.directory, tmp_path, dirs_exist_ok=True)
    victim = tmp_path / "m15x6.fp32.tflite"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit off
    victim.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"m15x6\.fp32\.tflite: sha256 [0-9a-f]+ does not match"):
        load_manifest(tmp_path / MANIFEST_FILE)


def test_a_tampered_template_is_never_copied(tmp_path: Path) -> None:
    bent, cut = tmp_path / "bent.tflite", tmp_path / "cut.tflite"
    data = bytearray(TEMPLATE.read_bytes())
    cut.write_bytes(bytes(data[:-1]))
    data[100] ^= 0x01
    bent.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"bent\.tflite: sha256 [0-9a-f]+ does not match"):
        export.tflite_template(bent)
    with pytest.raises(ModelError, match=r"cut\.tflite: 2027 bytes, the manifest says 2028"):
        export.tflite_template(cut)


def test_litert_refuses_a_window_the_file_cannot_take(
    models: dict[tuple[int, int], Result],
) -> None:
    shipped = load_manifest(None).artifact("tflite", "fp32")  # input [N, 30, 5], fixed
    with pytest.raises(ModelError, match=r"input window \[30, 5\] \(-1: open\), .* \[15, 5\]"):
        LiteRtBackend(shipped, signals=5, classes=8, window=(15, 5))
    learned = models[(15, 6)].manifest.artifact("tflite", "fp32")
    with pytest.raises(ModelError, match=r"input window \[-1, -1\] .* not given"):
        LiteRtBackend(learned, signals=6, classes=2)


def test_a_learned_model_on_litert_never_imports_onnx_runtime(
    models: dict[tuple[int, int], Result],
) -> None:
    # Issue 14: ONNX Runtime costs ~29 MB on import; a learned asset need not load it.
    probe = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from edge_agent.models.manifest import load_manifest
        from edge_agent.models.scorer import Scorer
        scorer = Scorer(load_manifest(Path({str(models[(15, 6)].manifest_path)!r})),
                        backends=("litert", "onnx"))
        print(json.dumps([scorer.backend_name, "onnxruntime" in sys.modules]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.splitlines()[-1]) == ["litert:cpu", False]


# The agent's fit on a gateway: the worker process, its default memory cap, no TFLite option
# (auto), and TensorFlow made unimportable, as on a box without the `train` extra.
WITHOUT_TENSORFLOW = """
import json, runpy, sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "tf_keras", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["worker", *sys.argv[1:]]
try:
    runpy.run_module("edge_agent.models.learn.worker", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"tensorflow": sorted(m for m in sys.modules if "tensorflow" in m)}))
sys.exit(code)
"""


def test_the_worker_writes_tflite_files_without_tensorflow(tmp_path: Path) -> None:
    src = tmp_path / "in.npz"
    s = 4
    np.savez(
        src,
        rows=_rows(400, s, seed=9),
        signals=np.array([f"x{j}" for j in range(s)]),
        roles=np.array(["other"] * s),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WITHOUT_TENSORFLOW), str(src), str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *_, done, probe = [json.loads(line) for line in proc.stdout.splitlines()]
    assert probe == {"tensorflow": []}
    assert done["done"] is True
    manifest = load_manifest(Path(done["manifest"]))
    assert {(a.format, a.precision) for a in manifest.artifacts} == {
        ("onnx", "fp32"),
        ("onnx", "int8"),
        ("tflite", "fp32"),
        ("tflite", "int8"),
    }
    _agree(manifest, _windows(manifest), "fp32")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow (the train extra) absent"
)
def test_the_build_script_makes_the_committed_template(tmp_path: Path) -> None:
    out = tmp_path / "template.tflite"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.models.training.learned_template", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes() == TEMPLATE.read_bytes()
