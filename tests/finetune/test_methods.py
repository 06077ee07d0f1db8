"""Fine-tuning methods on a real SST-2 slice: LoRA, adapters, freezing, FGM, EDA augmentation."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.finetune.conftest import TINY_FT
from tfllm.cli import main
from tfllm.errors import InputError
from tfllm.finetune.augment import AugmentConfig, augment_texts, eda


def _finetune(init: Path, out: Path, sst2_slice: dict, *sets: str) -> dict:
    args = [a for s in sets for a in ("--set", s)]
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", str(init),
                 "--out", str(out), "--train", str(sst2_slice["train"]), "--eval",
                 str(sst2_slice["dev"]), *TINY_FT, *args]) == 0
    return json.loads((out / "metrics.json").read_text())


def _weights(run: Path) -> dict[str, np.ndarray]:
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(str(run / "backbone"))
    return {v.path: np.array(v) for v in backbone.weights}


def test_lora_trains_a_few_percent_and_leaves_the_backbone_weights_unchanged(tmp_path, tiny_run,
                                                                             sst2_slice):
    import keras_hub

    from tfllm.finetune.peft import enable_lora

    out = tmp_path / "lora"
    metrics = _finetune(tiny_run, out, sst2_slice, "method.name=lora", "method.lora_rank=4",
                        "method.lora_alpha=8")
    assert 0 < metrics["trainable_params"] < 0.05 * metrics["total_params"]
    before, after = _weights(tiny_run), _weights(out)
    adapted = [k for k in before if ("query" in k or "value" in k) and k.endswith("kernel")]
    assert len(adapted) == 4  # query and value in each of the 2 layers
    for key in before:
        if key in adapted:
            assert not np.allclose(before[key], after[key])
        elif "pooled_dense" not in key:  # the pooler trains as part of the head
            np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    # The saved adapter alone turns the initial backbone into the merged one.
    base = keras_hub.models.BertBackbone.from_preset(str(tiny_run / "backbone"))
    enable_lora(base, rank=4, alpha=8)
    base.load_lora_weights(str(out / "adapter.lora.h5"))
    merged = {v.path: np.array(v) for v in base.weights}
    for layer in base.transformer_layers:
        for dense in (layer._self_attention_layer._query_dense,
                      layer._self_attention_layer._value_dense):
            key = dense._kernel.path
            np.testing.assert_allclose(np.array(dense.kernel), after[key], atol=1e-6)
    assert merged  # the LoRA-enabled backbone loaded


def test_adapters_train_a_few_percent_save_alone_and_export_through_the_gate(
        tmp_path, tiny_run, sst2_slice):
    import onnx
    from onnx import numpy_helper

    from tfllm.finetune.peft import load_trained_weights, with_adapters
    from tfllm.finetune.train import build_classifier
    from tfllm.models.checkpoints import load_checkpoint
    from tfllm.models.run_dir import load_run_model

    out = tmp_path / "adapter"
    metrics = _finetune(tiny_run, out, sst2_slice, "method.name=adapter",
                        "method.adapter_size=16")
    assert metrics["method"] == "adapter"
    assert 0 < metrics["trainable_params"] < 0.05 * metrics["total_params"]
    before, after = _weights(tiny_run), _weights(out)
    assert sum("adapter/" in key for key in after) == 2 * 2 * 4  # 2 per layer, 2 Dense each
    for key in before:
        if "layer_norm" in key or "pooled_dense" in key:
            assert not np.allclose(before[key], after[key]), key
        else:
            np.testing.assert_array_equal(before[key], after[key], err_msg=key)

    # The adapter file alone turns the initial checkpoint into the fine-tuned model.
    model = load_run_model(out)
    base = load_checkpoint(str(tiny_run), tmp_path / "base").backbone
    rebuilt = build_classifier(with_adapters(base, 16), 2, 0.1)
    assert load_trained_weights(rebuilt, out / "adapter.safetensors") == len(
        rebuilt.trainable_weights)
    x = {"token_ids": np.array([[2, 50, 60, 70, 3]], "int32"),
         "segment_ids": np.zeros((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32")}
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)

    version = tmp_path / "repo" / "adapter" / "1"
    rc = main(["export", "--model", str(out), "--out", str(version),
               "--formats", "onnx,onnx-int8"])
    report = json.loads((version / "export_report.json").read_text())
    assert rc == (0 if report["passed"] else 1)  # the tiny run's int8 may miss the gate
    onnx_fp32, int8 = report["artifacts"]
    assert onnx_fp32["format"] == "onnx" and onnx_fp32["passed"]
    # onnx-int8 keeps in float the adapters' MatMuls (2 layers x 2 adapters x (down, up))
    # and the feed-forward output projections they read (2 layers)
    assert int8["float_islands"] == {"layer": "_adapter", "layer_nodes": 8 + 2}
    down = np.asarray(model.backbone.transformer_layers[1]._feedforward_dropout.down.kernel)
    graph = onnx.load(str(version / "model.onnx")).graph
    assert any(tuple(t.dims) == down.shape and np.allclose(numpy_helper.to_array(t), down)
               for t in graph.initializer)  # the exported graph computes the adapters


def test_freezing_keeps_embeddings_and_first_layer_and_augmentation_adds_copies(
        tmp_path, tiny_run, sst2_slice):
    out = tmp_path / "freeze"
    metrics = _finetune(tiny_run, out, sst2_slice, "method.name=freeze", "method.freeze_layers=1",
                        "augment.copies=1")
    assert metrics["train_examples"] == 2 * 400
    before, after = _weights(tiny_run), _weights(out)
    for key in before:
        frozen = "embedding" in key or "transformer_layer_0/" in key
        assert np.array_equal(before[key], after[key]) == frozen, key


def test_fgm_restores_the_embeddings_after_each_step_and_changes_the_training(
        tmp_path, tiny_run, sst2_slice):
    plain = _finetune(tiny_run, tmp_path / "plain", sst2_slice, "method.name=freeze")
    fgm = _finetune(tiny_run, tmp_path / "fgm", sst2_slice, "method.name=freeze",
                    "method.fgm_epsilon=1.0")
    assert fgm["fgm_epsilon"] == 1.0 and plain["fgm_epsilon"] == 0.0
    before, with_fgm = _weights(tiny_run), _weights(tmp_path / "fgm")
    without = _weights(tmp_path / "plain")
    for key in before:
        if "embedding" in key:  # frozen: any leftover perturbation would show here
            np.testing.assert_array_equal(before[key], with_fgm[key], err_msg=key)
    layer = [k for k in before if "transformer_layer_1/" in k and k.endswith("kernel")][0]
    assert not np.allclose(with_fgm[layer], without[layer])


def test_eda_is_seeded_uses_synonyms_only_when_given_and_calls_back_translation(tmp_path):
    texts = ["the film is a quiet and moving portrait of grief",
             "a dull , overlong mess with nothing to say"]
    cfg = AugmentConfig(copies=3, alpha=0.2, seed=5)
    first, again = augment_texts(texts, cfg), augment_texts(texts, cfg)
    assert first == again and all(len(row) == 3 for row in first)
    assert any(copy != text for row, text in zip(first, texts, strict=True) for copy in row)
    synonyms = tmp_path / "syn.tsv"
    synonyms.write_text("film\tmovie\tpicture\nmess\tshambles\n")
    rng = random.Random(0)
    seen = {eda(texts[0], AugmentConfig(alpha=0.5, synonyms=str(synonyms)), rng,
                {"film": ["movie"]}) for _ in range(40)}
    assert any("movie" in s for s in seen)
    assert not any("movie" in s for row in first for s in row)  # no synonym file, no synonyms
    module = tmp_path / "my_translate.py"
    module.write_text("def back(texts):\n    return [t.upper() for t in texts]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        rows = augment_texts(texts, AugmentConfig(copies=0, back_translate="my_translate:back"))
    finally:
        sys.path.remove(str(tmp_path))
    assert rows == [[t.upper()] for t in texts]
    with pytest.raises(InputError, match="cannot import 'nowhere:fn'"):
        augment_texts(texts, AugmentConfig(back_translate="nowhere:fn"))
