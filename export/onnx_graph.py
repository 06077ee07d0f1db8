"""Rewrites of the tf2onnx graph that onnxruntime's own tools need before they can do their job.

- `gemm_to_matmul`: tf2onnx writes the attention projections as Gemm; onnxruntime's
  quantizers only quantize MatMul, so those weights would stay fp32.
- `fuse_layer_norms`: tf2onnx writes Keras' layer norm as a dozen element-wise ops (mean as
  GlobalAveragePool, ``x*k + (beta - mean*k)`` as Neg/Mul/Add), a shape that neither
  onnxruntime's graph optimizer nor its transformer optimizer recognises; one ONNX
  LayerNormalization per norm lets the transformer optimizer fuse SkipLayerNormalization.
- `ort_transformer_fusion`: `fuse_layer_norms`, then `onnxruntime.transformers.optimizer`
  (model type ``bert``): SkipLayerNormalization, FastGelu.

>>> import onnx
>>> from onnx import TensorProto, helper, numpy_helper
>>> import numpy as np
>>> w = numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")
>>> graph = helper.make_graph(
...     [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
>>> [n.op_type for n in gemm_to_matmul(helper.make_model(graph)).graph.node]
['MatMul']
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import onnx
from onnx import helper, numpy_helper


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, W, b) with constant W as MatMul + Add, in place."""
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
    _drop_unused_initializers(model.graph)  # the untransposed copies
    onnx.checker.check_model(model)
    return model


def fuse_layer_norms(model: onnx.ModelProto) -> int:
    """Replace each tf2onnx-shaped layer norm over the last axis by one LayerNormalization
    (opset >= 17), in place; returns how many. A subgraph that differs in any node, or whose
    intermediate results are used elsewhere, is left as it is."""
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            consumers[name].append(node)

    def user(name: str, op: str, also: str | None = None):
        found = [u for u in consumers[name]
                 if u.op_type == op and (also is None or also in u.input)]
        return found[0] if len(found) == 1 else None

    def constant_operand(node, other: str) -> str | None:
        rest = [name for name in node.input if name != other]
        return rest[0] if len(rest) == 1 and rest[0] in consts else None

    def last_axis_mean(node) -> bool:
        if node.op_type == "GlobalAveragePool":  # rank 3 [batch, seq, hidden]: over hidden
            return True
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return node.op_type == "ReduceMean" and list(attrs.get("axes", [])) == [-1]

    replaced: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    for mean in list(graph.node):
        if not last_axis_mean(mean):
            continue
        x, m = mean.input[0], mean.output[0]
        sub = user(m, "Sub", x)                         # x - mean
        square = sub and user(sub.output[0], "Mul")     # (x - mean)^2
        if not square or square.input[0] != square.input[1]:
            continue
        var = user(square.output[0], mean.op_type)
        add_eps = var and last_axis_mean(var) and user(var.output[0], "Add")
        eps = add_eps and constant_operand(add_eps, var.output[0])
        sqrt = eps and user(add_eps.output[0], "Sqrt")
        inverse = sqrt and user(sqrt.output[0], "Reciprocal")
        k = inverse and user(inverse.output[0], "Mul")  # gamma / std
        gamma = k and constant_operand(k, inverse.output[0])
        neg = gamma and user(m, "Neg")
        if not neg:
            continue
        scaled = user(x, "Mul", k.output[0])            # x * k
        shift = user(neg.output[0], "Mul", k.output[0])  # -mean * k
        shifted = shift and user(shift.output[0], "Add")
        beta = shifted and constant_operand(shifted, shift.output[0])
        out = beta and scaled and user(scaled.output[0], "Add", shifted.output[0])
        if not out:
            continue
        chain = [mean, sub, square, var, add_eps, sqrt, inverse, k, neg, scaled, shift,
                 shifted, out]
        # Every intermediate result feeds only this norm (the mean and k feed two of its nodes).
        inner = {n.output[0]: 1 for n in chain[:-1]} | {m: 2, k.output[0]: 2}
        if any(len(consumers[name]) != count for name, count in inner.items()):
            continue
        epsilon = float(numpy_helper.to_array(consts[eps]).reshape(-1)[0])
        names = (out.output[0] + "/gamma", out.output[0] + "/beta")
        for name, source in zip(names, (gamma, beta), strict=True):
            graph.initializer.append(numpy_helper.from_array(
                numpy_helper.to_array(consts[source]).reshape(-1), name))
        removed.update(id(n) for n in chain)
        replaced[id(out)] = helper.make_node("LayerNormalization", [x, *names], [out.output[0]],
                                             name=out.name + "/LayerNorm", axis=-1,
                                             epsilon=epsilon)
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in removed or id(n) in replaced]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return len(replaced)


def ort_transformer_fusion(source: Path, path: Path, num_heads: int, hidden_size: int) -> dict:
    """The fused graph at `path`; returns the fused operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(source))
    layer_norms = fuse_layer_norms(model)
    prepared = path.with_suffix(".ln.onnx")
    onnx.save(model, str(prepared))
    try:
        optimized = optimize_model(str(prepared), model_type="bert_tf", num_heads=num_heads,
                                   hidden_size=hidden_size, opt_level=0)
    finally:
        prepared.unlink(missing_ok=True)
    optimized.save_model_to_file(str(path))
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    stats["LayerNormalization (tf2onnx pattern)"] = layer_norms
    return stats
