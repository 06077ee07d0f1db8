"""Serve what was measured: a tagger trained on NCBI-disease with BIO-constrained decoding
answers, through `tfllm-serve`'s REST API, the same entities as `tfllm predict` on every one
of the 940 NCBI-disease test sentences; and the export gate scores entity F1 under the
run's decoding."""

from __future__ import annotations

import io
import json

import httpx

from tests.serving.conftest import launch_server
from tfllm.cli import main
from tfllm.data.readers import ReadReport, read_conll
from tfllm.finetune.inference import predict_texts

# lr 1e-3: at 2e-3-3e-3 this tiny random-init tagger sometimes collapses to all-O
TINY_NCBI = ["--set", "model.size=tiny", "--set", "train.batch_size=16", "--set", "train.epochs=4",
             "--set", "train.learning_rate=1e-3", "--set", "task.max_len=64",
             "--set", "task.test=null", "--set", "task.decoding=bio"]


def test_served_entities_equal_tfllm_predict_on_all_ncbi_test_sentences(tmp_path, data_dir):
    ncbi = data_dir / "ncbi_disease"
    train = tmp_path / "train.txt"
    train.write_text("\n\n".join((ncbi / "train.txt").read_text().split("\n\n")[:1200]) + "\n")
    assert main(["vocab", "--corpus", str(ncbi / "train.txt"), "--vocab-size", "4000",
                 "--out", str(tmp_path / "vocab")]) == 0
    run = tmp_path / "run"
    assert main(["finetune", "--config", "configs/finetune/ncbi_disease.yaml", "--init", "none",
                 "--out", str(run), "--train", str(train), "--eval", str(ncbi / "valid.txt"),
                 "--set", f"model.tokenizer={tmp_path / 'vocab'}", *TINY_NCBI]) == 0
    repo = tmp_path / "repo"
    assert main(["export", "--model", str(run), "--out", str(repo / "ncbi" / "1"),
                 "--formats", "onnx"]) == 0
    version = repo / "ncbi" / "1"
    config = json.loads((version / "model_config.json").read_text())
    assert config["decoding"] == "bio"
    gate = json.loads((version / "export_report.json").read_text())["artifacts"][0]
    assert gate["passed"] and gate["label_agreement"] == 1.0

    sentences = [" ".join(s.words) for s in read_conll(ncbi / "test.txt", ReadReport())]
    assert len(sentences) == 940
    expected = predict_texts(run, sentences, out=io.StringIO())
    assert sum(len(row["entities"]) for row in expected) > 200  # the tagger does find diseases

    server = launch_server(repo, tmp=tmp_path)
    try:
        server.wait_ready()
        served = []
        for start in range(0, len(sentences), 128):
            r = httpx.post(f"{server.base}/v1/models/ncbi:predict", timeout=60,
                           json={"instances": sentences[start:start + 128]})
            assert r.status_code == 200, r.text
            served += r.json()["predictions"]
    finally:
        server.stop()
    assert [p["words"] for p in served] == [row["words"] for row in expected]
    assert [p["word_labels"] for p in served] == [row["tags"] for row in expected]
    assert [p["entities"] for p in served] == [row["entities"] for row in expected]
