"""`tfllm prune` on a real (tiny) SST-2 run: smaller models that load, train, export, serve."""

from __future__ import annotations

import gzip
import json

import keras
import numpy as np
import pytest

from tfllm.cli import main
from tfllm.compression.prune import (
    Shape,
    encoder_macs,
    slice_backbone,
    taylor_importance,
    with_head,
)
from tfllm.compression.sparsity import encoder_kernels
from tfllm.models.encoder import BertVariantBackbone
from tfllm.models.run_dir import load_run_model

RECOVERY = ["--set", "train.epochs=1", "--importance-examples", "64"]


def _ids(rows: int = 3, width: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((rows, width), "int32")
    mask[0, 7:] = 0
    return {"token_ids": rng.integers(5, 90, (rows, width)).astype("int32"),
            "segment_ids": np.zeros((rows, width), "int32"), "padding_mask": mask}


def test_slicing_everything_keeps_the_outputs_and_one_head_less_equals_a_zeroed_head(tiny_run):
    model = load_run_model(tiny_run)
    backbone = model.backbone
    x = _ids()
    everything = Shape([0, 1], [[0, 1]] * 2, [list(range(512))] * 2)
    same = with_head(model, slice_backbone(backbone, everything), tagging=False)
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)

    # dropping head 1 of each layer is the same as zeroing what it adds to the attention output
    one_head = with_head(model, slice_backbone(
        backbone, Shape([0, 1], [[0], [0]], [list(range(512))] * 2)), tagging=False)
    assert isinstance(one_head.backbone, BertVariantBackbone)
    for layer in backbone.transformer_layers:
        output = layer._self_attention_layer._output_dense.kernel
        zeroed = np.asarray(output).copy()
        zeroed[1] = 0.0
        output.assign(zeroed)
    np.testing.assert_allclose(one_head.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)

def test_a_head_and_neurons_that_do_nothing_score_zero_taylor_importance(tiny_run):
    model = load_run_model(tiny_run)
    layer = model.backbone.transformer_layers[1]
    attention = layer._self_attention_layer
    for dense in (attention._query_dense, attention._key_dense, attention._value_dense):
        kernel, bias = np.asarray(dense.kernel), np.asarray(dense.bias)
        kernel[:, 0], bias[0] = 0.0, 0.0
        dense.kernel.assign(kernel)
        dense.bias.assign(bias)
    out_kernel = np.asarray(attention._output_dense.kernel)
    out_kernel[0] = 0.0
    attention._output_dense.kernel.assign(out_kernel)
    inner = layer._feedforward_intermediate_dense
    kernel, bias = np.asarray(inner.kernel), np.asarray(inner.bias)
    kernel[:, :10], bias[:10] = 0.0, 0.0
    inner.kernel.assign(kernel)
    inner.bias.assign(bias)
    outer = layer._feedforward_output_dense
    kernel = np.asarray(outer.kernel)
    kernel[:10] = 0.0
    outer.kernel.assign(kernel)

    x = _ids(8)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    heads, neurons = taylor_importance(model, model.backbone, [(x, np.arange(8) % 2)], loss)
    assert heads[1, 0] == 0.0 and heads[1, 1] > 0 and (heads[0] > 0).all()
    assert (neurons[1, :10] == 0).all() and (neurons[1, 10:] > 0).mean() > 0.9


def test_structured_prune_with_distillation_gives_a_smaller_run_that_exports_through_the_gate(
        tiny_run, tmp_path):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_run), "--out", str(out), "--ffn-keep", "0.5",
                 "--heads-keep", "1", "--layers", "1", "--distill", *RECOVERY]) == 0
    report = json.loads((out / "pruning.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(report["kept"]["layers"]) == 1 and report["kept"]["heads"][0] in ([0], [1])
    assert len(report["kept"]["neurons"][0]) == 256
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs_at_128"]["after"] < 0.3 * report["macs_at_128"]["before"]
    assert 0.0 <= report["eval_accuracy_before_recovery"] <= 1.0
    assert metrics["distillation"]["teacher"] == str(tiny_run)
    assert metrics["init"] == str(out / "pruned_init")

    model = load_run_model(out)  # a fresh load: the pruned classes come back by name
    assert isinstance(model.backbone, BertVariantBackbone)
    assert encoder_macs(model.backbone, 128) == report["macs_at_128"]["after"]

    repo = tmp_path / "repo"
    assert main(["export", "--model", str(out), "--out", str(repo / "pruned" / "1"),
                 "--formats", "onnx"]) == 0
    export = json.loads((repo / "pruned" / "1" / "export_report.json").read_text())
    assert export["onnx_graph"]["attention"] == export["onnx_graph"]["layers"] == 1
    assert export["passed"] and export["artifacts"][0]["passed"]


def test_magnitude_sparsity_survives_recovery_and_shrinks_the_compressed_file(tiny_run, tmp_path):
    out = tmp_path / "sparse"
    assert main(["prune", "--model", str(tiny_run), "--out", str(out), "--sparsity", "0.8",
                 *RECOVERY]) == 0
    model = load_run_model(out)
    zeros = [float((np.asarray(k) == 0).mean()) for k in encoder_kernels(model.backbone)]
    assert min(zeros) >= 0.7999  # 80% of each matrix, rounded to whole weights
    dense = len(gzip.compress((tiny_run / "model.keras").read_bytes()))
    sparse = len(gzip.compress((out / "model.keras").read_bytes()))
    assert sparse < 0.75 * dense


@pytest.mark.parametrize("flags, message", [
    (["--heads-keep", "3"], "--heads-keep must be in 1..2"),
    (["--layers", "0"], "--layers must be in 1..2"),
    (["--ffn-keep", "1.5"], "--ffn-keep must be in (0, 1]"),
])
def test_impossible_shapes_are_refused_naming_the_flag(tiny_run, tmp_path, capsys, flags,
                                                       message):
    assert main(["prune", "--model", str(tiny_run), "--out", str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_pruning_something_that_is_not_a_finished_run_is_refused(tmp_path, capsys):
    assert main(["prune", "--model", str(tmp_path), "--out", str(tmp_path / "x"),
                 "--ffn-keep", "0.5"]) == 2
    assert "not a finished fine-tuning RUN_DIR" in capsys.readouterr().err

