"""Models at run time: manifests, inference backends, and the scorer.

Owns the model manifest with its verified files (manifest.py), the backend interface and the
one registry of backends (base.py), one backend per file (onnx.py: ONNX Runtime; litert.py:
LiteRT/TFLite), the scorer that normalises, batches and falls back along the backend chain
(scorer.py), the section that configures them (settings.py) and the shipped artifacts.

May import: core only. Never the daemon, connectors, rules, the simulator or the training
code in `training/` (tests/test_layers.py checks that the runtime reaches neither).
"""
