"""Build the TFLite models (fp32 and int8) of `network.forward` from the same weights.

TensorFlow is a training-time dependency only (the `train` extra); the agent runs the
files with LiteRT. The graph mirrors `export_onnx` op for op; the parity tests hold them
together (|score difference| <= 1e-4 in fp32).

int8 (dynamic range): the weights of the six dense layers are int8 with one scale per
output channel, and LiteRT quantises their inputs per row at run time, so the matrix
products run in int8. The window features (means, square roots, logarithms of small
deviations) stay float32. Static activation ranges were tried and rejected: one int8
range cannot hold both a stopped pump's feature values (|z| ~ 20) and the fine
resolution the autoencoder's residuals need (~0.05), and the score went wrong by
more than the margin between normal and faulty windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.models.training import network

DENSE_LAYERS = 6  # enc1, enc2, dec1, dec2, cls1, cls2


def _module(w: network.Weights, window: int, signals: int) -> Any:
    import tensorflow as tf  # type: ignore[import-untyped]  # noqa: PLC0415 - train extra only

    w = w.as_float32()
    c = {k: tf.constant(v) for k, v in vars(w).items()}
    tslope = tf.constant(network.slope_weights(window))
    n_feat = signals * network.N_FEATURES
    spec = tf.TensorSpec([None, window, signals], tf.float32, name="window")

    def dense(x: Any, tag: str) -> Any:
        # Named, so that the int8 conversion can keep chosen layers in float.
        return tf.add(tf.matmul(x, c[f"{tag}_w"], name=f"{tag}_mm"), c[f"{tag}_b"], name=tag)

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serve(window: Any) -> dict[str, Any]:
        # Element-wise and reductions only (no matmul): the int8 converter quantises every
        # FULLY_CONNECTED, and these must stay float.
        xt = tf.transpose(window, [0, 2, 1])
        mean = tf.reduce_mean(xt, axis=2, keepdims=True)
        d = xt - xt[:, :, 0:1]  # see network.raw_features
        slope = tf.reduce_sum(d * tslope, axis=2, keepdims=True)
        centred = d - tf.reduce_mean(d, axis=2, keepdims=True)
        var = tf.reduce_mean(centred * centred, axis=2, keepdims=True)
        lstd = tf.math.log(tf.sqrt(var + network.STD_EPS) + network.LOG_EPS)
        diff = xt[:, :, 1:] - xt[:, :, :-1]
        rough = tf.reduce_mean(tf.abs(diff), axis=2, keepdims=True)
        lrough = tf.math.log(rough + network.LOG_EPS)
        feats = tf.reshape(tf.concat([mean, lstd, slope, lrough], axis=2), [-1, n_feat])
        f = (feats - c["feat_mean"]) / c["feat_std"]
        h = tf.tanh(dense(tf.clip_by_value(f, -network.AE_CLIP, network.AE_CLIP), "enc1"))
        h = tf.tanh(dense(h, "enc2"))
        h = tf.tanh(dense(h, "dec1"))
        r = (f - dense(h, "dec2")) / c["resid_std"]
        r3 = tf.reshape(r, [-1, signals, network.N_FEATURES])
        mag = tf.sqrt(tf.reduce_mean(r3 * r3, axis=2))
        sign = tf.where(r3[:, :, 0] >= 0.0, 1.0, -1.0)
        hc = tf.nn.relu(dense(tf.concat([f, r], axis=1), "cls1"))
        return {
            "score": tf.reduce_max(mag, axis=1),
            "contrib": sign * mag,
            "probs": tf.nn.softmax(dense(hc, "cls2"), axis=1),
        }

    module = tf.Module()
    module.serve = serve
    return module


def _converter(w: network.Weights, window: int, signals: int) -> Any:
    import tensorflow as tf  # noqa: PLC0415

    module = _module(w, window, signals)
    fn = module.serve.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], module)


def build_fp32(w: network.Weights, window: int, signals: int) -> bytes:
    """Return the fp32 TFLite flatbuffer."""
    conv = _converter(w, window, signals)
    return bytes(conv.convert())


def build_int8(fp32: bytes) -> bytes:
    """Return the int8 model: every FULLY_CONNECTED weight int8, per output channel.

    Activations stay float and are quantised per row at run time by LiteRT's hybrid
    kernels (`asymmetric_quantize_inputs`); see the module docstring for why static
    activation ranges do not fit this model.
    """
    from tensorflow.lite.python import (  # type: ignore[import-untyped]  # noqa: PLC0415
        schema_py_generated as schema,
    )
    from tensorflow.lite.tools import (  # type: ignore[import-untyped]  # noqa: PLC0415
        flatbuffer_utils,
    )

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(fp32))
    fc = {
        i
        for i, code in enumerate(model.operatorCodes)
        if max(code.builtinCode, code.deprecatedBuiltinCode)
        == schema.BuiltinOperator.FULLY_CONNECTED
    }
    graph = model.subgraphs[0]
    done = 0
    for op in graph.operators:
        if op.opcodeIndex not in fc:
            continue
        tensor = graph.tensors[op.inputs[1]]
        buffer = model.buffers[tensor.buffer]
        weight = np.frombuffer(bytes(buffer.data), np.float32).reshape(tensor.shape)
        scale = np.abs(weight).max(axis=1) / 127.0  # [out]: symmetric, per output channel
        scale[scale == 0] = 1.0
        q = np.clip(np.round(weight / scale[:, None]), -127, 127).astype(np.int8)
        buffer.data = np.frombuffer(q.tobytes(), np.uint8)
        tensor.type = schema.TensorType.INT8
        params = schema.QuantizationParametersT()
        params.scale = scale.astype(np.float32).tolist()
        params.zeroPoint = [0] * len(scale)
        params.quantizedDimension = 0
        tensor.quantization = params
        op.builtinOptions.asymmetricQuantizeInputs = True
        done += 1
    if done != DENSE_LAYERS:
        raise RuntimeError(f"expected {DENSE_LAYERS} dense layers to quantise, found {done}")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
