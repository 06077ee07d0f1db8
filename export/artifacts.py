"""Writing each artifact format from a fine-tuned classifier.

- `savedmodel`: raw strings in (`text` [+ `text_pair`]), tokenization in the graph
  (tensorflow-text), `logits` and `probabilities` out; written at the version folder's
  root so TF Serving loads the folder as it is.
- `onnx`: int32 `input_ids`, `attention_mask`, `token_type_ids` with dynamic batch and
  sequence axes -> `logits`, converted with tf2onnx from a concrete function with an
  explicit input signature (the path that avoids tf2onnx's Keras 3 breakage).
- `onnx-int8`: onnxruntime dynamic quantization of the fp32 ONNX.
- `tflite`, `tflite-fp16`, `tflite-dynamic`: LiteRT converter on the same function
  (fp16 = float16 weights; dynamic = int8 weights, `Optimize.DEFAULT`).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from tfllm.tokenization.tf_tokenizer import InGraphTokenizer

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FILE_NAMES = {
    "savedmodel": "saved_model.pb",
    "onnx": "model.onnx",
    "onnx-int8": "model-int8.onnx",
    "tflite": "model.tflite",
    "tflite-fp16": "model-fp16.tflite",
    "tflite-dynamic": "model-dynamic.tflite",
}
FORMATS = tuple(FILE_NAMES)


def _signature() -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None, None], tf.int32, name=name) for name in ONNX_INPUTS]


def _ids_function(model):
    @tf.function(input_signature=_signature())
    def logits(input_ids, attention_mask, token_type_ids):
        out = model({"token_ids": input_ids, "padding_mask": attention_mask,
                     "segment_ids": token_type_ids}, training=False)
        return {"logits": tf.cast(out, tf.float32)}

    return logits


def export_onnx(model, path: Path, opset: int = 17) -> None:
    import tf2onnx

    tf2onnx.convert.from_function(_ids_function(model), input_signature=_signature(),
                                  opset=opset, output_path=str(path))


def gemm_to_matmul(model):
    """Rewrite Gemm(A, W, b) with constant W as MatMul + Add, in place.

    tf2onnx emits the attention projections as Gemm, which onnxruntime's dynamic
    quantization does not handle (its integer-op registry has MatMul, not Gemm), so
    without this pass those weights would stay fp32.
    """
    import onnx
    from onnx import helper, numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        has_bias = len(node.input) > 2 and bool(node.input[2])
        simple = (node.op_type == "Gemm" and node.input[1] in weights
                  and attrs.get("alpha", 1.0) == 1.0 and not attrs.get("transA", 0)
                  and (attrs.get("beta", 1.0) == 1.0 or not has_bias))
        if not simple:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if attrs.get("transB", 0):
            name = node.input[1] + "_transposed"
            model.graph.initializer.append(numpy_helper.from_array(weight.T.copy(), name))
        else:
            name = node.input[1]
        product = node.output[0] + "_matmul"
        nodes.append(helper.make_node("MatMul", [node.input[0], name],
                                      [product if has_bias else node.output[0]],
                                      name=node.name + "_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=node.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]  # drop the untransposed copies
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


def quantize_onnx_int8(source: Path, path: Path) -> None:
    """Dynamic int8 quantization (weights offline, activations at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rewritten = path.with_suffix(".matmul.onnx")
    prepared = path.with_suffix(".prep.onnx")
    onnx.save(gemm_to_matmul(onnx.load(str(source))), str(rewritten))
    try:
        # ORT's recommended pre-processing folds the constant Reshape/Shape chains tf2onnx
        # leaves around some projection weights, so MatMul sees them as initializers.
        quant_pre_process(str(rewritten), str(prepared), skip_symbolic_shape=True)
        # Per-channel scales keep the accuracy of small BERTs within the gate's limits.
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"], per_channel=True)
    finally:
        rewritten.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)


def export_tflite(model, path: Path, dynamic: bool = False, fp16: bool = False) -> None:
    """Via a SavedModel written by Keras' ExportArchive, which captures Keras 3 variables
    (converting the concrete function directly drops them)."""
    import tempfile

    import keras

    def logits(input_ids, attention_mask, token_type_ids):
        out = model({"token_ids": input_ids, "padding_mask": attention_mask,
                     "segment_ids": token_type_ids}, training=False)
        return {"logits": tf.cast(out, tf.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", logits, input_signature=_signature())
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if dynamic or fp16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if fp16:
            converter.target_spec.supported_types = [tf.float16]
        path.write_bytes(converter.convert())


class TextClassifierModule(tf.Module):
    """Raw strings -> logits/probabilities, for `tf.saved_model.save` and TF Serving."""

    def __init__(self, model, vocab: list[str], max_len: int, lowercase: bool,
                 pairs: bool) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = InGraphTokenizer(vocab, max_len=max_len, lowercase=lowercase)
        text = tf.TensorSpec([None], tf.string, name="text")
        if pairs:
            self.serve = tf.function(self._pair, input_signature=[
                text, tf.TensorSpec([None], tf.string, name="text_pair")])
        else:
            self.serve = tf.function(self._single, input_signature=[text])

    def _outputs(self, features: dict) -> dict:
        logits = tf.cast(self.model({"token_ids": features["input_ids"],
                                     "padding_mask": features["attention_mask"],
                                     "segment_ids": features["token_type_ids"]},
                                    training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    def _single(self, text):
        return self._outputs(self.tokenizer(text))

    def _pair(self, text, text_pair):
        return self._outputs(self.tokenizer(text, text_pair))


def export_savedmodel(model, directory: Path, vocab: list[str], max_len: int, lowercase: bool,
                      pairs: bool) -> None:
    module = TextClassifierModule(model, vocab, max_len, lowercase, pairs)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
