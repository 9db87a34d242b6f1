"""Training and export of the shipped model: a workstation's job, never the agent's runtime.

Owns the windows cut from simulator traces (dataset.py), the one definition of the network's
maths (network.py), training and the written manifest (train.py), the exporters to ONNX and
TFLite (export_onnx.py, export_tflite.py) and the evaluation on held-out scenarios
(evaluate.py). Needs the `train` extra (scikit-learn, onnx, TensorFlow).

May import: models, core and the simulator (its plant and scenarios are the training data).
Nothing at run time imports this package.
"""
