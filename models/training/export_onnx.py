"""Build the ONNX graph of `network.forward` from trained weights with `onnx.helper`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.training import network

OPSET = 17
INPUT = "window"
OUTPUTS = ("score", "contrib", "probs")


class _Graph:
    """Collects nodes and initialisers; every node is named after its output."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper  # noqa: PLC0415 - the train extra only

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.inits: list[Any] = []
        self.nodes: list[Any] = []

    def const(self, tag: str, value: np.ndarray | np.floating[Any]) -> str:
        self.inits.append(self._numpy_helper.from_array(np.asarray(value), tag))
        return tag

    def node(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(self._helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def dense(self, tag: str, x: str, weight: np.ndarray, bias: np.ndarray) -> str:
        mm = self.node("MatMul", [x, self.const(f"{tag}_w", weight)], f"{tag}_matmul")
        return self.node("Add", [mm, self.const(f"{tag}_b", bias)], f"{tag}_out")


def _features(g: _Graph, w: network.Weights, window: int, signals: int) -> str:
    """Add the standardised window features [N, S*4]; return their name."""
    f32 = np.float32
    xt = g.node("Transpose", [INPUT], "feat_xt", perm=[0, 2, 1])
    i0, i1 = g.const("idx0", np.array([0], np.int64)), g.const("idx1", np.array([1], np.int64))
    ax2 = g.const("axis2", np.array([2], np.int64))
    last = g.const("idx_last", np.array([window], np.int64))
    mean = g.node("ReduceMean", [xt], "feat_mean", axes=[2])
    first = g.node("Slice", [xt, i0, i1, ax2], "feat_first")
    d = g.node("Sub", [xt, first], "feat_rel")  # see network.raw_features
    tslope = g.const("feat_tslope", network.slope_weights(window))
    slope_terms = g.node("Mul", [d, tslope], "feat_slope_terms")
    slope = g.node("ReduceSum", [slope_terms, ax2], "feat_slope", keepdims=1)
    d_mean = g.node("ReduceMean", [d], "feat_rel_mean", axes=[2])
    centred = g.node("Sub", [d, d_mean], "feat_centred")
    sq = g.node("Mul", [centred, centred], "feat_sq")
    var = g.node("ReduceMean", [sq], "feat_var", axes=[2])
    var_eps = g.node("Add", [var, g.const("std_eps", f32(network.STD_EPS))], "feat_var_eps")
    std = g.node("Sqrt", [var_eps], "feat_std")
    log_eps = g.const("log_eps", f32(network.LOG_EPS))
    lstd = g.node("Log", [g.node("Add", [std, log_eps], "feat_std_eps")], "feat_log_std")
    later = g.node("Slice", [xt, i1, last, ax2], "feat_later")
    earlier = g.node(
        "Slice",
        [xt, i0, g.const("idx_prev", np.array([window - 1], np.int64)), ax2],
        "feat_earlier",
    )
    diff = g.node("Sub", [later, earlier], "feat_diff")
    rough = g.node("ReduceMean", [g.node("Abs", [diff], "feat_absdiff")], "feat_rough", axes=[2])
    lrough = g.node("Log", [g.node("Add", [rough, log_eps], "feat_rough_eps")], "feat_log_rough")
    feats = g.node("Concat", [mean, lstd, slope, lrough], "feat_concat", axis=2)
    shape = g.const("shape_flat", np.array([-1, signals * network.N_FEATURES], np.int64))
    flat = g.node("Reshape", [feats, shape], "feat_flat")
    centred_f = g.node("Sub", [flat, g.const("feat_mu", w.feat_mean)], "feat_c")
    return g.node("Div", [centred_f, g.const("feat_sd", w.feat_std)], "features")


def _heads(g: _Graph, w: network.Weights, f: str, signals: int) -> None:
    """Add the autoencoder (score, contrib) and the classifier (probs) on features `f`."""
    f32 = np.float32
    lo = g.const("ae_lo", f32(-network.AE_CLIP))
    clipped = g.node("Clip", [f, lo, g.const("ae_hi", f32(network.AE_CLIP))], "ae_in")
    h = g.node("Tanh", [g.dense("enc1", clipped, w.enc1_w, w.enc1_b)], "enc1_act")
    h = g.node("Tanh", [g.dense("enc2", h, w.enc2_w, w.enc2_b)], "enc2_act")
    h = g.node("Tanh", [g.dense("dec1", h, w.dec1_w, w.dec1_b)], "dec1_act")
    rec = g.dense("dec2", h, w.dec2_w, w.dec2_b)
    raw = g.node("Sub", [f, rec], "resid_raw")
    r = g.node("Div", [raw, g.const("resid_sd", w.resid_std)], "resid")
    shape3 = g.const("shape_sig", np.array([-1, signals, network.N_FEATURES], np.int64))
    r3 = g.node("Reshape", [r, shape3], "resid_sig")
    r2 = g.node("Mul", [r3, r3], "resid_sq")
    ms = g.node("ReduceMean", [r2], "resid_ms", axes=[2], keepdims=0)
    mag = g.node("Sqrt", [ms], "magnitude")
    g.node("ReduceMax", [mag], "score", axes=[1], keepdims=0)
    r_mean = g.node(
        "Gather", [r3, g.const("idx_mean", np.array(0, np.int64))], "resid_mean", axis=2
    )
    above = g.node("GreaterOrEqual", [r_mean, g.const("zero", f32(0))], "above")
    sign = g.node("Where", [above, g.const("one", f32(1)), g.const("minus_one", f32(-1))], "sign")
    g.node("Mul", [sign, mag], "contrib")
    cls_in = g.node("Concat", [f, r], "cls_in", axis=1)
    hc = g.node("Relu", [g.dense("cls1", cls_in, w.cls1_w, w.cls1_b)], "cls1_act")
    logits = g.dense("cls2", hc, w.cls2_w, w.cls2_b)
    g.node("Softmax", [logits], "probs", axis=1)


def build(w: network.Weights, window: int, signals: int, name: str = "pump-fault") -> bytes:
    """Return the serialised ONNX model computing (score, contrib, probs) from `window`."""
    import onnx  # noqa: PLC0415 - the train extra only
    from onnx import TensorProto, helper  # noqa: PLC0415

    w = w.as_float32()
    g = _Graph()
    _heads(g, w, _features(g, w, window, signals), signals)
    n_cls = int(w.cls2_b.shape[0])
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", window, signals])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("contrib", TensorProto.FLOAT, ["N", signals]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_cls]),
        ],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edge-agent models/train.py",
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


DENSE = ("enc1", "enc2", "dec1", "dec2", "cls1", "cls2")


def write_int8(fp32: Path, path: Path) -> Path:
    """Write the int8 model: dense-layer weights int8 per channel.

    Activations are quantised at run time (ONNX Runtime dynamic quantisation:
    DynamicQuantizeLinear + MatMulInteger), as the TFLite int8 model does.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    quantize_dynamic(
        fp32,
        path,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_quantize=[f"{tag}_matmul" for tag in DENSE],
    )
    return path


def write(w: network.Weights, window: int, signals: int, path: Path) -> Path:
    """Build and write the fp32 ONNX model; return its path."""
    path.write_bytes(build(w, window, signals))
    return path
