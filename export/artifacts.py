"""Writing each artifact format from a fine-tuned classifier.

- `savedmodel`: raw strings in (`text` [+ `text_pair`]), tokenization in the graph
  (tensorflow-text), `logits` and `probabilities` out; written at the version folder's
  root so TF Serving loads the folder as it is. A second signature, `token_ids`, takes the ONNX
  inputs (for clients that tokenize, and to time it like for like with the other formats).
- `onnx`: int32 `input_ids`, `attention_mask`, `token_type_ids` with dynamic batch and
  sequence axes -> `logits`, converted with tf2onnx from a concrete function with an
  explicit input signature (the path that avoids tf2onnx's Keras 3 breakage), then made lean
  (`tfllm_export.onnx_graph`: constants folded, one LayerNormalization per norm, attention
  and feed-forward blocks rewritten into the form PyTorch's exporter writes).
- `onnx-fp16`: float16 weights and activations (inputs and outputs stay int32 / float32),
  for GPUs; onnxruntime's CPU provider runs most of it through casts.
- `onnx-int8`: onnxruntime dynamic quantization of the fp32 ONNX.
- `onnx-int8-static`: onnxruntime static quantization (QDQ), activation ranges calibrated on
  task data.
- `tflite`, `tflite-fp16`, `tflite-dynamic`, `tflite-int8`: LiteRT converter on the same
  function (fp16 = float16 weights; dynamic = int8 weights, `Optimize.DEFAULT`; int8 = int8
  weights and activations from a representative dataset, float kernels where no int8 one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tfllm_export.onnx_graph import (
    EncoderLayerWeights,
    fuse_layer_norms,
    gemm_to_matmul,
    lean_encoder,
)

from tfllm.tokenization.tf_tokenizer import InGraphTokenizer

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FILE_NAMES = {
    "savedmodel": "saved_model.pb",
    "onnx": "model.onnx",
    "onnx-fp16": "model-fp16.onnx",
    "onnx-int8": "model-int8.onnx",
    "onnx-int8-static": "model-int8-static.onnx",
    "tflite": "model.tflite",
    "tflite-fp16": "model-fp16.tflite",
    "tflite-dynamic": "model-dynamic.tflite",
    "tflite-int8": "model-int8.tflite",
}
FORMATS = tuple(FILE_NAMES)


def _signature() -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None, None], tf.int32, name=name) for name in ONNX_INPUTS]


def _ids_function(model, output: str = "logits"):
    @tf.function(input_signature=_signature())
    def outputs(input_ids, attention_mask, token_type_ids):
        out = model({"token_ids": input_ids, "padding_mask": attention_mask,
                     "segment_ids": token_type_ids}, training=False)
        return {output: tf.cast(out, tf.float32)}

    return outputs


def backbone_of(model):
    """The keras-hub BertBackbone inside a classifier, tagger or embedder."""
    return getattr(model, "backbone", None) or next(
        layer for layer in model.layers if hasattr(layer, "num_heads"))


def encoder_weights(model) -> list[EncoderLayerWeights]:
    """Each encoder layer's dense projections as 2-D matrices (`kernel` is the effective one,
    LoRA's update included)."""

    def dense(layer, heads_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
        kernel = np.asarray(layer.kernel, np.float32)
        kernel = (kernel.reshape(-1, kernel.shape[-1]) if heads_first
                  else kernel.reshape(kernel.shape[0], -1))
        return kernel, np.asarray(layer.bias, np.float32).reshape(-1)

    weights = []
    for layer in backbone_of(model).transformer_layers:
        attention = layer._self_attention_layer
        weights.append(EncoderLayerWeights(
            dense(attention._query_dense), dense(attention._key_dense),
            dense(attention._value_dense), dense(attention._output_dense, heads_first=True),
            dense(layer._feedforward_intermediate_dense),
            dense(layer._feedforward_output_dense), attention._num_heads))
    return weights


def export_onnx(model, path: Path, opset: int = 17, output: str = "logits",
                lean: bool = True) -> dict:
    """`output`: the name of the model's one output (`logits`, or `embedding`). Returns how
    many blocks the lean rewrite took, per kind, and the model's layer count (`lean=False`:
    tf2onnx's graph as it is, for comparison)."""
    import onnx
    import tf2onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = path.with_suffix(".tf2onnx.onnx")
    try:
        tf2onnx.convert.from_function(_ids_function(model, output),
                                      input_signature=_signature(), opset=opset,
                                      output_path=str(raw if lean else path))
        if not lean:
            return {}
        # onnxruntime's basic optimizations fold tf2onnx's constant Reshape/Shape chains, so
        # that every projection is a Gemm (then a MatMul) on an initializer.
        quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    finally:
        raw.unlink(missing_ok=True)
    lean = gemm_to_matmul(onnx.load(str(path)))
    layer_norms = fuse_layer_norms(lean)
    layers = encoder_weights(model)
    counts = lean_encoder(lean, layers)
    onnx.save(lean, str(path))
    return {"layers": len(layers), "layer_norms": layer_norms, **counts}


# The fused graph's contrib ops (SkipLayerNormalization, FastGelu) have no type information
# for the quantizer's shape inference; their tensors are float.
_UNTYPED_IS_FLOAT = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT


def _prepared_for_quantization(source: Path, path: Path) -> Path:
    """ORT's recommended pre-processing, then Gemm -> MatMul; returns the prepared file.

    The pre-processing folds the constant Reshape/Shape chains tf2onnx leaves around some
    projection weights, so that afterwards every projection is a Gemm on an initializer.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_suffix(".prep.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    onnx.save(gemm_to_matmul(onnx.load(str(prepared))), str(prepared))
    return prepared


# Bottleneck adapters (tfllm.models.encoder.Adapter) read the attention and feed-forward
# outputs before the residual add; with them in int8 a size-64 SST-2 adapter run agreed with
# fp32 on 96.9% of dev labels, with its MatMuls in float 98.2%, and with the feed-forward
# output projections (which the adapters read) in float too 98.7% (2026-12-05). The
# adapters are 2 x 384 x 64 a layer, the projections a third of the MatMul work.
ONNX_INT8_FLOAT_LAYER = "_adapter"
ONNX_INT8_FLOAT_WITH_ADAPTERS = "ffn_output_matmul"  # the lean graph's name (onnx_graph.py)


def quantize_onnx_int8(source: Path, path: Path) -> list[str]:
    """Dynamic int8 quantization (weights offline, activations at run time); returns the
    MatMul nodes kept in float (in a model with adapters: the adapters' and the feed-forward
    output projections')."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = _prepared_for_quantization(source, path)
    try:
        matmuls = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "MatMul"]
        kept = [n for n in matmuls if ONNX_INT8_FLOAT_LAYER in n]
        if kept:
            kept += [n for n in matmuls if n.endswith(ONNX_INT8_FLOAT_WITH_ADAPTERS)]
        # Per-channel scales keep the accuracy of small BERTs within the gate's limits.
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                         nodes_to_exclude=kept, extra_options=_UNTYPED_IS_FLOAT)
    finally:
        prepared.unlink(missing_ok=True)
    return kept


def quantize_onnx_int8_static(source: Path, path: Path, calibration: list[dict]) -> None:
    """Static QDQ quantization of the projections and feed-forward MatMuls; activation
    ranges from `calibration` (feature dicts of real task text)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared = _prepared_for_quantization(source, path)
    try:
        # Only MatMuls with a weight: attention's activation x activation products and the
        # element-wise ops stay float (BERT's softmax/GELU ranges quantize badly).
        import onnx

        weights = {t.name for t in onnx.load(str(prepared)).graph.initializer}
        matmuls = [n.name for n in onnx.load(str(prepared)).graph.node
                   if n.op_type == "MatMul" and n.input[1] in weights]
        quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, nodes_to_quantize=matmuls,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       **_UNTYPED_IS_FLOAT})
    finally:
        prepared.unlink(missing_ok=True)


def convert_onnx_fp16(source: Path, path: Path) -> None:
    """float16 weights and activations, int32 inputs and float32 logits kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(path))


# Float islands of tflite-int8, chosen with the LiteRT quantization debugger on a MiniLM SST-2
# model (dev label agreement with Keras, gate >= 0.98). Per-layer RMSE/scale first put the
# masked softmax (its -1e9 SELECT_V2 takes the whole int8 range), the LayerNorm arithmetic and
# the attention BATCH_MATMULs in float: 0.865 -> 0.952. Quantizing one group of dense layers at
# a time (everything else float) then found the rest: Q/K/V, attention output, FFN-in, pooler
# and classifier in int8 keep 0.990, but the feed-forward *output* dense alone drops it to 0.959
# (its output carries the residual stream's outliers, range ~200: one int8 step is ~0.8), and
# so does int8 on the GELU, RESHAPE and TRANSPOSE ops around it (they carry its int8 input and
# output). With these in float as well: 0.987 (all dense layers but FFN-out and the embedding
# lookup in int8). 16x8 activations with the same islands reached 0.958 (and without a float
# fallback does not convert: int ids have no calibrated range).
TFLITE_INT8_FLOAT_OPS = ("SELECT_V2", "SOFTMAX", "BATCH_MATMUL", "MEAN", "RSQRT",
                         "SQUARED_DIFFERENCE", "ADD", "MUL", "SUB", "TANH", "POW", "GELU",
                         "RESHAPE", "TRANSPOSE")
# keras-hub's TransformerEncoder names its feed-forward output projection so.
TFLITE_INT8_FLOAT_LAYER = "feedforward_output_dense"


def float_layer_nodes(float_model: bytes, layer: str = TFLITE_INT8_FLOAT_LAYER) -> list[str]:
    """Output tensor names of the FULLY_CONNECTED ops inside `layer` (one per encoder layer),
    as the quantization debugger's deny list names nodes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=float_model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    # LiteRT's interpreter lists ops only through this private call (no public op listing).
    return [names[op["outputs"][0]] for op in interpreter._get_ops_details()
            if op["op_name"] == "FULLY_CONNECTED" and f"/{layer}" in names[op["outputs"][0]]]


def export_tflite(model, path: Path, mode: str = "fp32",
                  calibration: list[dict] | None = None, output: str = "logits") -> list[str]:
    """`mode`: fp32, fp16, dynamic or int8 (needs `calibration`, feature dicts of real text).
    Returns the dense layers int8 keeps in float (`TFLITE_INT8_FLOAT_LAYER`; none otherwise).

    Via a SavedModel written by Keras' ExportArchive, which captures Keras 3 variables
    (converting the concrete function directly drops them)."""
    import tempfile

    import keras

    def outputs(input_ids, attention_mask, token_type_ids):
        out = model({"token_ids": input_ids, "padding_mask": attention_mask,
                     "segment_ids": token_type_ids}, training=False)
        return {output: tf.cast(out, tf.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", outputs, input_signature=_signature())
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if mode != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        if mode != "int8":
            path.write_bytes(converter.convert())
            return []

        def representative():
            return ({k: v.astype("int32") for k, v in batch.items()} for batch in calibration)

        float_nodes = float_layer_nodes(tf.lite.TFLiteConverter.from_saved_model(tmp).convert())
        if not float_nodes:
            raise RuntimeError(f"tflite-int8: no {TFLITE_INT8_FLOAT_LAYER} layer found in the "
                               "converted graph to keep in float (keras-hub renamed it?)")
        converter.representative_dataset = representative
        # The quantizer's own way to keep ops in float: its debugger's deny lists
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(TFLITE_INT8_FLOAT_OPS), denylisted_nodes=float_nodes))
        path.write_bytes(debugger.get_nondebug_quantized_model())
        return float_nodes


class TextClassifierModule(tf.Module):
    """Raw strings -> logits/probabilities (or, for a sentence embedder, `embedding`), for
    `tf.saved_model.save` and TF Serving."""

    def __init__(self, model, vocab: list[str], max_len: int, lowercase: bool,
                 pairs: bool, truncation: str = "head", output: str = "logits") -> None:
        super().__init__()
        self.model, self.output = model, output
        self.tokenizer = InGraphTokenizer(vocab, max_len=max_len, lowercase=lowercase,
                                          truncation=truncation)
        text = tf.TensorSpec([None], tf.string, name="text")
        self.serve_ids = tf.function(self._ids, input_signature=_signature())
        if pairs:
            self.serve = tf.function(self._pair, input_signature=[
                text, tf.TensorSpec([None], tf.string, name="text_pair")])
        else:
            self.serve = tf.function(self._single, input_signature=[text])

    def _outputs(self, features: dict) -> dict:
        out = tf.cast(self.model({"token_ids": features["input_ids"],
                                  "padding_mask": features["attention_mask"],
                                  "segment_ids": features["token_type_ids"]},
                                 training=False), tf.float32)
        if self.output != "logits":
            return {self.output: out}
        return {"logits": out, "probabilities": tf.nn.softmax(out, axis=-1)}

    def _ids(self, input_ids, attention_mask, token_type_ids):
        return self._outputs({"input_ids": input_ids, "attention_mask": attention_mask,
                              "token_type_ids": token_type_ids})

    def _single(self, text):
        return self._outputs(self.tokenizer(text))

    def _pair(self, text, text_pair):
        return self._outputs(self.tokenizer(text, text_pair))


def export_savedmodel(model, directory: Path, vocab: list[str], max_len: int, lowercase: bool,
                      pairs: bool, truncation: str = "head", output: str = "logits") -> None:
    module = TextClassifierModule(model, vocab, max_len, lowercase, pairs, truncation, output)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve,
                                                            "token_ids": module.serve_ids})
