"""A sentence embedder exported straight from an INIT (`tfllm export --task embedding`): the
gate on STS-B pairs, `tfllm embed` on the ONNX artifact equal to Keras, and `tfllm-serve`
answering `{"embedding": [...]}`. A tiny random keras-hub preset stands in for MiniLM
(`tiny_embedder` in tests/conftest.py)."""

from __future__ import annotations

import json

import httpx
import numpy as np

from tests.serving.conftest import launch_server
from tfllm.cli import main


def test_the_gate_scores_spearman_and_cosines_and_the_version_says_embedding(tiny_embedder):
    version = tiny_embedder["repo"] / "emb" / "1"
    report = json.loads((version / "export_report.json").read_text())
    assert report["reference"]["metric"] == "spearman" and report["passed"]
    graph = report["onnx_graph"]  # the lean rewrite took every block of the embedder too
    assert graph["attention"] == graph["layers"] and graph["feed_forward_dense"] == 2 * graph[
        "layers"]
    (onnx,) = report["artifacts"]
    # random weights put every cosine near 1, so float noise may swap a few close ranks
    assert onnx["min_cosine"] > 0.99999 and abs(onnx["metric_delta"]) < 0.05
    config = json.loads((version / "model_config.json").read_text())
    assert config["task"] == "embedding" and config["outputs"] == ["embedding"]
    assert config["embedding_dim"] == 32 and not (version / "labels.json").exists()


def test_embed_on_the_onnx_export_equals_keras_and_the_server_answers_it(tiny_embedder, tmp_path,
                                                                        sst2_dev_sentences):
    texts = sst2_dev_sentences[:50]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    for name, model in (("keras", tiny_embedder["preset"]), ("onnx", tiny_embedder["repo"] / "emb")):
        assert main(["embed", "--model", str(model), "--input", str(source), "--max-len", "64",
                     "--out", str(tmp_path / f"{name}.npy")]) == 0
    keras_rows, onnx_rows = np.load(tmp_path / "keras.npy"), np.load(tmp_path / "onnx.npy")
    assert ((keras_rows * onnx_rows).sum(1) > 0.99999).all()

    server = launch_server(tiny_embedder["repo"], tmp=tmp_path)
    try:
        server.wait_ready()
        base = f"{server.base}/v1/models/emb"
        rows = httpx.post(f"{base}:predict", json={"instances": texts[:8]}, timeout=30).json()
        served = np.array([p["embedding"] for p in rows["predictions"]])
        np.testing.assert_allclose(served, onnx_rows[:8], atol=1e-5)
        columnar = httpx.post(f"{base}:predict", json={"inputs": {"text": texts[:3]}},
                              timeout=30).json()["outputs"]
        assert list(columnar) == ["embedding"] and np.array(columnar["embedding"]).shape == (3, 32)
        refused = httpx.post(f"{base}:classify", json={"examples": [{"text": "a"}]}, timeout=30)
        assert refused.status_code == 400 and "error" in refused.json()
        outputs = httpx.get(f"{base}/metadata", timeout=30).json()["metadata"]["signature_def"][
            "signature_def"]["serving_default"]["outputs"]
        assert list(outputs) == ["embedding"]
    finally:
        server.stop()
