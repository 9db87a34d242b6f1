"""Build the TFLite template of every learned model: `python -m ...training.learned_template`.

A learned model's graph has no weights (models/learn/export.py): one graph serves every
fit, whatever its window W and signal count S. This script converts that graph once, with
TensorFlow (the `train` extra), with every dimension of the input open ([-1, -1, -1]), and
writes it to models/artifacts/ (`make model`). The gateway copies the file, byte for byte,
as each learned model's TFLite files after checking it against `export.TEMPLATE` (sha256
and size), and LiteRT resizes the input to the manifest's [N, W, S]; so learning on a
gateway writes TFLite files without TensorFlow.

The conversion is deterministic for one TensorFlow version (the file records it). When the
built file differs from `export.TEMPLATE`, it is written all the same and the script exits
1 with the new sha256 and size to set there.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.models.learn import export

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "artifacts" / export.TEMPLATE.file


def build() -> bytes:
    """The learned graph as a TFLite flatbuffer: window [N, W, S] -> score, contrib, probs."""
    import tensorflow as tf  # type: ignore[import-untyped]  # noqa: PLC0415 - train extra only

    spec = tf.TensorSpec([None, None, None], tf.float32, name="window")

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serve(window: Any) -> dict[str, Any]:
        contrib = tf.reduce_mean(window, axis=1)
        score = tf.reduce_max(tf.abs(contrib), axis=1)
        unknown = tf.expand_dims(tf.minimum(score, 1.0), 1)
        return {"score": score, "contrib": contrib, "probs": tf.concat([1.0 - unknown, unknown], 1)}

    module = tf.Module()
    module.serve = serve
    conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], module)
    return bytes(conv.convert())


def main(argv: Sequence[str] | None = None) -> int:
    """Build, write, and compare with the sha256 and size that export.py checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write it")
    args = parser.parse_args(argv)
    data = build()
    args.out.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    print(f"{args.out}: {len(data)} bytes, sha256 {digest}")
    if (digest, len(data)) != (export.TEMPLATE.sha256, export.TEMPLATE.bytes):
        print(
            f"it differs from export.TEMPLATE ({export.TEMPLATE.bytes} bytes, sha256 "
            f"{export.TEMPLATE.sha256}): set sha256={digest!r}, bytes={len(data)} there in "
            "models/learn/export.py once tests/test_learn_tflite.py passes with the new file",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
