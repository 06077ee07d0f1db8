"""A tiny NER tagger on real CoNLL-2003 slices exports, passes the gate and serves word tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfllm.cli import main

TINY_NER = ["--set", "model.size=tiny", "--set", "train.batch_size=16", "--set", "train.epochs=2",
            "--set", "train.learning_rate=2e-3", "--set", "task.test=null"]


def _conll(source: Path, target: Path, sentences: int) -> Path:
    target.write_text("\n\n".join(source.read_text().split("\n\n")[:sentences]) + "\n")
    return target


def test_a_ner_tagger_exports_every_fp32_format_within_the_gate_and_serves_word_tags(
        tmp_path, data_dir):
    conll = data_dir / "conll2003"
    train = _conll(conll / "train.txt", tmp_path / "train.txt", 400)
    valid = _conll(conll / "valid.txt", tmp_path / "valid.txt", 100)
    assert main(["vocab", "--corpus", str(conll / "train.txt"), "--vocab-size", "3000",
                 "--cased", "--out", str(tmp_path / "vocab")]) == 0
    assert main(["finetune", "--config", "configs/finetune/conll2003.yaml", "--init", "none",
                 "--out", str(tmp_path / "run"), "--train", str(train), "--eval", str(valid),
                 "--set", f"model.tokenizer={tmp_path / 'vocab'}", *TINY_NER]) == 0
    version = tmp_path / "repo" / "ner" / "1"
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(version),
                 "--formats", "savedmodel,onnx,tflite,onnx-int8"]) == 0
    report = json.loads((version / "export_report.json").read_text())
    assert report["reference"]["metric"] == "entity_f1" and report["passed"]
    graph = report["onnx_graph"]  # the lean rewrite took every block of the tagger too
    assert graph["attention"] == graph["layers"] and graph["feed_forward_dense"] == 2 * graph[
        "layers"]
    for entry in report["artifacts"]:
        assert entry["label_agreement"] >= 0.98, entry
        if entry["format"] != "onnx-int8":
            assert entry["max_abs_logit_diff"] <= 1e-4, entry
    config = json.loads((version / "model_config.json").read_text())
    assert config["task"] == "token_classification"

    from tfllm_serving.runtime import ModelRuntime

    runtime = ModelRuntime.load(version)
    text = "Peter Blackburn of the European Commission spoke in Brussels ."
    out = runtime.run(runtime.encode_texts([text]))
    assert out.logits.shape[0] == 1 and out.logits.shape[2] == len(runtime.labels) == 9
    assert np.allclose(out.probabilities.sum(-1), 1.0, atol=1e-5)
