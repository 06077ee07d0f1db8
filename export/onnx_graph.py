"""Rewrites of the tf2onnx graph that onnxruntime's own tools need before they can do their job.

- `gemm_to_matmul`: tf2onnx writes the attention projections as Gemm; onnxruntime's
  quantizers only quantize MatMul, so those weights would stay fp32.
- `fuse_layer_norms`: tf2onnx writes Keras' layer norm as a dozen element-wise ops (mean as
  GlobalAveragePool, ``x*k + (beta - mean*k)`` as Neg/Mul/Add), a shape that neither
  onnxruntime's graph optimizer nor its transformer optimizer recognises; one ONNX
  LayerNormalization per norm lets the transformer optimizer fuse SkipLayerNormalization.
- `lean_encoder`: tf2onnx writes keras-hub's einsum attention as three Gemms between
  Reshape/Squeeze chains, a scale Mul and mask Selects before and after the softmax; each
  layer's block is replaced by the form PyTorch's exporter writes (projections as MatMul + Add
  with the 1/sqrt(d) scale folded into the query weights, one additive mask shared by all
  layers); the feed-forward projections lose their flatten/unflatten Reshapes. Blocks are
  found by their Q/K/V/output and feed-forward weights, not by node names or order.
- `ort_transformer_fusion`: `onnxruntime.transformers.optimizer` (model type ``bert``) on the
  lean graph: SkipLayerNormalization, FastGelu with its bias.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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

    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden_size, opt_level=0)
    optimized.save_model_to_file(str(path))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


@dataclass
class EncoderLayerWeights:
    """One encoder layer's dense projections as 2-D ``x @ kernel + bias`` pairs: query,
    key, value ``[hidden, heads * head_dim]``, output ``[heads * head_dim, hidden]``,
    intermediate ``[hidden, ffn]``, ffn_output ``[ffn, hidden]``."""

    query: tuple[np.ndarray, np.ndarray]
    key: tuple[np.ndarray, np.ndarray]
    value: tuple[np.ndarray, np.ndarray]
    output: tuple[np.ndarray, np.ndarray]
    intermediate: tuple[np.ndarray, np.ndarray]
    ffn_output: tuple[np.ndarray, np.ndarray]
    num_heads: int


_SHAPE_ONLY = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
_MASK_BIAS = -10000.0  # exp() underflows to exactly 0 in fp32 and fp16 alike


class _Index:
    """Who produces and who consumes each tensor, and the constants, of one graph."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.consts = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers = defaultdict(list)
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self.consumers[name].append(node)

    def constant(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.consts[name]) if name in self.consts else None

    def matmul_with_weight(self, kernel: np.ndarray):
        """The one MatMul whose constant right operand is `kernel` (to float rounding)."""
        found = [n for n in self.graph.node if n.op_type == "MatMul"
                 and n.input[1] in self.consts and tuple(self.consts[n.input[1]].dims)
                 == kernel.shape and np.allclose(self.constant(n.input[1]), kernel, atol=1e-6)]
        return found[0] if len(found) == 1 else None

    def source(self, name: str) -> str:
        """`name` above any shape-only ops (a projection's input before tf2onnx flattened it)."""
        while name in self.producer and self.producer[name].op_type in _SHAPE_ONLY:
            name = self.producer[name].input[0]
        return name

    def after_bias(self, name: str, bias: np.ndarray) -> str | None:
        """Where a projection's output `name` ends: past its shape-only ops and the Add of
        `bias`; None without that Add (unless the bias is zero) or when a result on the way
        has other users."""
        bias_added = False
        while len(self.consumers[name]) == 1:
            node = self.consumers[name][0]
            other = [i for i in node.input if i != name]
            value = self.constant(other[0]) if len(other) == 1 else None
            is_bias = (node.op_type == "Add" and value is not None and value.size == bias.size
                       and np.allclose(value.reshape(-1), bias, atol=1e-6))
            if not (is_bias or (node.op_type in _SHAPE_ONLY and node.input[0] == name)):
                break
            bias_added |= is_bias
            name = node.output[0]
        # onnxruntime's folding drops an Add of zeros (a freshly initialised layer's bias)
        return name if bias_added or not bias.any() else None

    def dense(self, kernel: np.ndarray, bias: np.ndarray) -> tuple[str, str] | None:
        """(input, output) of the dense projection with these weights, or None."""
        node = self.matmul_with_weight(kernel)
        end = node and self.after_bias(node.output[0], bias)
        return (self.source(node.input[0]), end) if end else None


def _attention_block(index: _Index, w: EncoderLayerWeights) -> tuple[str, str] | None:
    """(input, output) of the attention block with these weights: the input is where the
    three projections meet, the output the output projection's after its bias."""
    found = [index.dense(*p) for p in (w.query, w.key, w.value, w.output)]
    if None in found or len({inp for inp, _ in found[:3]}) != 1:
        return None
    return found[0][0], found[3][1]


class _Builder:
    """New nodes and initializers, named under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.inits = prefix, [], []

    def const(self, name: str, value: np.ndarray) -> str:
        dtype = np.int64 if value.dtype == np.int64 else np.float32
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype),
                                                  self.prefix + name))
        return self.prefix + name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        name = output if output.startswith(self.prefix) else self.prefix + output
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def dense(self, x: str, kernel: np.ndarray, bias: np.ndarray, name: str,
              out: str | None = None) -> str:
        product = self.node("MatMul", [x, self.const(name + "_kernel", kernel)], name + "_matmul")
        return self.node("Add", [product, self.const(name + "_bias", bias)], out or name)


def _lean_attention(b: _Builder, x: str, out: str, mask: str, w: EncoderLayerWeights) -> None:
    """`out` from `x` as PyTorch's exporter writes attention (scale folded into the query)."""
    hidden = w.query[0].shape[1]
    head_dim = hidden // w.num_heads
    scale = np.float32(1 / np.sqrt(head_dim))
    heads_shape = b.const("heads_shape", np.array([0, 0, w.num_heads, head_dim], np.int64))

    def heads(name: str, kernel: np.ndarray, bias: np.ndarray, perm: list[int]) -> str:
        split = b.node("Reshape", [b.dense(x, kernel, bias, name), heads_shape], name + "_heads")
        return b.node("Transpose", [split], name + "_transposed", perm=perm)

    q = heads("q", w.query[0] * scale, w.query[1] * scale, [0, 2, 1, 3])
    k = heads("k", *w.key, [0, 2, 3, 1])
    v = heads("v", *w.value, [0, 2, 1, 3])
    scores = b.node("Add", [b.node("MatMul", [q, k], "scores"), mask], "masked_scores")
    probs = b.node("Softmax", [scores], "probabilities", axis=-1)
    context = b.node("Transpose", [b.node("MatMul", [probs, v], "context")],
                     "context_transposed", perm=[0, 2, 1, 3])
    merged = b.node("Reshape", [context, b.const("merged_shape",
                                                 np.array([0, 0, hidden], np.int64))],
                    "context_merged")
    b.dense(merged, *w.output, "output", out)


def _additive_mask(b: _Builder, mask_input: str) -> str:
    """[batch, seq] 0/1 padding mask -> additive [batch, 1, 1, seq] bias, once per graph."""
    padding = b.node("Sub", [b.const("one", np.array(1.0)), b.node(
        "Cast", [mask_input], "float", to=onnx.TensorProto.FLOAT)], "padding")
    scaled = b.node("Mul", [padding, b.const("bias", np.array(_MASK_BIAS))], "scaled")
    return b.node("Unsqueeze", [scaled, b.const("axes", np.array([1, 2], np.int64))], "additive")


def _prune_and_sort(graph) -> None:
    """Drop nodes no graph output depends on, then order the rest topologically (stable)."""
    producer = {o: n for n in graph.node for o in n.output}
    needed, stack = set(), [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = [n for n in graph.node if id(n) in needed]
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("lean_encoder: the rewritten graph has a cycle")
        for n in ready:
            available.update(n.output)
        ordered.extend(ready)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)
    _drop_unused_initializers(graph)


def lean_encoder(model: onnx.ModelProto, layers: list[EncoderLayerWeights],
                 mask_input: str = "attention_mask") -> dict:
    """Rewrite, in place, every attention block and feed-forward projection whose weights are
    in `layers` (see the module docstring); returns the counts rewritten. Run on a graph whose
    projections are MatMuls on initializers (after `gemm_to_matmul`). What is not found is
    left as it was."""
    index = _Index(model.graph)
    builders, renamed = [], {}
    mask = None
    counts = {"attention": 0, "feed_forward_dense": 0}
    for i, w in enumerate(layers):
        b = _Builder(f"lean_layer_{i}/")
        block = _attention_block(index, w)
        if block is not None:
            if mask is None:
                masks = _Builder("lean_mask/")
                mask = _additive_mask(masks, mask_input)
                builders.append(masks)
            renamed[block[1]] = b.prefix + "attention_output"
            _lean_attention(b, block[0], renamed[block[1]], mask, w)
            counts["attention"] += 1
        for name, (kernel, bias) in (("intermediate", w.intermediate),
                                     ("ffn_output", w.ffn_output)):
            found = index.dense(kernel, bias)
            if found is not None:  # flattening Reshapes dropped: MatMul takes [batch, seq, k]
                renamed[found[1]] = b.prefix + name
                b.dense(found[0], kernel, bias, name, renamed[found[1]])
                counts["feed_forward_dense"] += 1
        builders.append(b)
    if not renamed:
        return counts
    for node in model.graph.node:
        for j, name in enumerate(node.input):
            node.input[j] = renamed.get(name, name)
    for b in builders:
        model.graph.node.extend(b.nodes)
        model.graph.initializer.extend(b.inits)
    _prune_and_sort(model.graph)
    onnx.checker.check_model(model)
    return counts
