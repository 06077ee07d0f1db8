"""`tfllm export` on a tiny SST-2 classifier: every format gated, failures loud, versions kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfllm_export import artifacts

from tfllm.cli import main
from tfllm.models.run_dir import load_run_model

FORMATS = ("savedmodel,onnx,onnx-fp16,onnx-int8,onnx-int8-static,tflite,tflite-fp16,tflite-dynamic,"
           "tflite-int8")
TINY_FT = ["--set", "model.size=tiny", "--set", "train.batch_size=16", "--set", "train.epochs=1",
           "--set", "task.max_len=48", "--set", "train.learning_rate=1e-3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("export")
    train = (data_dir / "sst2" / "train.tsv").read_text().splitlines()
    dev = (data_dir / "sst2" / "dev.tsv").read_text().splitlines()
    (root / "train.tsv").write_text("\n".join(train[:601]) + "\n")
    (root / "dev.tsv").write_text("\n".join(dev[:1] + dev[1:121] + dev[-120:]) + "\n")
    assert main(["vocab", "--corpus", str(data_dir / "sst2" / "train.tsv"), "--vocab-size",
                 "3000", "--out", str(root / "vocab")]) == 0
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", "none",
                 "--out", str(root / "run"), "--train", str(root / "train.tsv"), "--eval",
                 str(root / "dev.tsv"), "--set", f"model.tokenizer={root / 'vocab'}",
                 *TINY_FT]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_dir) -> Path:
    version = tmp_path_factory.mktemp("repo") / "sst2" / "1"
    assert main(["export", "--model", str(run_dir), "--out", str(version), "--formats",
                 FORMATS]) == 0
    return version


def test_every_format_exports_passes_the_gate_and_is_reported(exported):
    report = json.loads((exported / "export_report.json").read_text())
    assert report["passed"] and report["reference"]["examples"] == 240
    assert [a["format"] for a in report["artifacts"]] == FORMATS.split(",")
    for entry in report["artifacts"]:
        for key in ("path", "size_bytes", "max_abs_logit_diff", "label_agreement",
                    "metric_value", "latency_ms", "passed"):
            assert key in entry, (entry["format"], key)
        assert set(entry["latency_ms"]) == {"b1", "b32"} and entry["passed"]
        assert (exported / entry["path"]).is_file()
    # ids at the same padded length for every format; the SavedModel's strings path apart
    assert set(report["artifacts"][0]["latency_ms_raw_text"]) == {"b1", "b32"}
    assert report["onnx_graph"]["attention"] == report["onnx_graph"]["layers"] == 2
    config = json.loads((exported / "model_config.json").read_text())
    assert config["artifacts"]["onnx"] == "model.onnx" and config["max_len"] == 48
    for name in ("tokenizer.json", "vocab.txt", "labels.json"):
        assert (exported / name).is_file()
    # tflite-int8 keeps every layer's feed-forward output projection in float (the anchor
    # fails loudly should keras-hub rename it)
    islands = report["artifacts"][-1]["float_islands"]
    assert islands["layer"] == "feedforward_output_dense" and islands["layer_nodes"] == 2
    sizes = {a["format"]: a["size_bytes"] for a in report["artifacts"]}
    assert sizes["onnx-int8"] < 0.5 * sizes["onnx"]
    assert sizes["onnx-fp16"] < 0.6 * sizes["onnx"] and sizes["tflite-int8"] < 0.5 * sizes["tflite"]


def test_onnx_formats_are_also_built_from_the_fused_graph_and_the_faster_passing_build_is_kept(
        exported):
    import onnx

    report = json.loads((exported / "export_report.json").read_text())
    for entry in report["artifacts"]:
        if not entry["format"].startswith("onnx"):
            assert "ort_fusion" not in entry
            continue
        fusion = entry["ort_fusion"]
        assert "error" not in fusion, fusion
        # tiny = 2 layers: 2 x 2 layer norms after a residual Add
        assert fusion["fused_ops"]["SkipLayerNormalization"] == 4
        faster = fusion["b1_ms_fused"] < fusion["b1_ms_unfused"]
        assert fusion["kept"] == (fusion["fused_passed"] and faster)
        ops = {n.op_type for n in onnx.load(str(exported / entry["path"])).graph.node}
        assert ("SkipLayerNormalization" in ops) == fusion["kept"]


def test_the_lean_graph_takes_every_block_and_gives_tf2onnx_logits_on_real_sentences(
        tmp_path, run_dir, sst2_dev_sentences):
    import onnx
    import onnxruntime as ort
    from tfllm_serving.wordpiece import encode_batch, load_tokenizer

    model = load_run_model(run_dir)
    artifacts.export_onnx(model, tmp_path / "plain.onnx", lean=False)
    counts = artifacts.export_onnx(model, tmp_path / "lean.onnx")
    # tiny = 2 layers: every attention block and both feed-forward projections of each layer
    # rewritten, 1 embedding + 2 x 2 layer norms as one op each. A Keras / tf2onnx change that
    # the rewrite no longer recognises fails here, not silently in a slower artifact.
    assert counts == {"layers": 2, "layer_norms": 5, "attention": 2, "feed_forward_dense": 4}
    ops = [n.op_type for n in onnx.load(str(tmp_path / "lean.onnx")).graph.node]
    assert ops.count("Softmax") == 2 and ops.count("LayerNormalization") == 5
    assert "Gemm" not in ops and "GlobalAveragePool" not in ops
    features = encode_batch(load_tokenizer(run_dir / "tokenizer"), sst2_dev_sentences[:64],
                            max_len=48)
    assert features["attention_mask"].min() == 0  # padded rows are part of the check
    plain, lean = (ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
                   .run(["logits"], features)[0] for name in ("plain.onnx", "lean.onnx"))
    np.testing.assert_allclose(lean, plain, atol=1e-5)


def test_savedmodel_answers_raw_strings_with_the_keras_probabilities(exported, run_dir,
                                                                   sst2_dev_sentences):
    from tfllm_serving.wordpiece import encode_batch, load_tokenizer

    from tfllm.data.tasks import Example
    from tfllm.finetune.features import predict_logits

    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    texts = sst2_dev_sentences[:40]
    got = serve(text=tf.constant(texts))
    model = load_run_model(run_dir)
    logits = predict_logits(model, load_tokenizer(run_dir / "tokenizer"),
                            [Example(t, "0") for t in texts], 48)
    np.testing.assert_allclose(got["probabilities"].numpy(),
                               tf.nn.softmax(logits).numpy(), atol=1e-5)
    ids = tf.saved_model.load(str(exported)).signatures["token_ids"]
    features = encode_batch(load_tokenizer(run_dir / "tokenizer"), texts, max_len=48)
    np.testing.assert_allclose(ids(**{k: tf.constant(v) for k, v in features.items()})[
        "logits"].numpy(), logits, atol=1e-5)


def test_exporting_to_an_existing_version_is_refused_and_auto_takes_the_next(exported, run_dir,
                                                                            capsys):
    assert main(["export", "--model", str(run_dir), "--out", str(exported), "--formats",
                 "onnx"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main(["export", "--model", str(run_dir), "--out", str(exported.parent),
                 "--version", "auto", "--formats", "onnx"]) == 0
    assert (exported.parent / "2" / "model.onnx").is_file()


def test_a_perturbed_artifact_fails_the_gate_with_exit_1_and_is_not_left_in_the_repo(
        tmp_path, run_dir, monkeypatch):
    real_export = artifacts.export_onnx

    def broken_export(model, path, opset=17, output="logits"):
        saved = [w.numpy() for w in model.weights]
        rng = np.random.default_rng(0)
        for w in model.weights:
            if w.dtype == "float32":
                w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
        counts = real_export(model, path, opset, output)
        for w, value in zip(model.weights, saved, strict=True):
            w.assign(value)
        return counts

    monkeypatch.setattr(artifacts, "export_onnx", broken_export)
    version = tmp_path / "repo" / "sst2" / "1"
    assert main(["export", "--model", str(run_dir), "--out", str(version), "--formats",
                 "onnx,tflite"]) == 1
    report = json.loads((version / "export_report.json").read_text())
    onnx, tflite = report["artifacts"]
    assert not report["passed"] and not onnx["passed"] and tflite["passed"]
    assert onnx["failed_checks"] == ["max_abs_logit_diff"]
    assert not (version / "model.onnx").exists()
    assert "onnx" not in json.loads((version / "model_config.json").read_text())["artifacts"]


@pytest.mark.parametrize("case, message", [
    ("missing_files", "missing model.keras"),
    ("unknown_format", "unknown format onnx-int3"),
    ("unknown_label", "eval label 'maybe' never seen in training"),
    ("missing_calibration", "no-such-file.tsv"),
])
def test_bad_input_fails_before_any_work(tmp_path, run_dir, case, message, capsys):
    model, formats, extra = run_dir, "onnx", []
    if case == "missing_files":
        model = tmp_path / "half"
        model.mkdir()
    elif case == "unknown_format":
        formats = "onnx,onnx-int3"
    elif case == "missing_calibration":
        formats, extra = "onnx,tflite-int8", ["--calibration-data", str(tmp_path / "no-such-file.tsv")]
    else:
        bad = tmp_path / "eval.tsv"
        bad.write_text("sentence\tlabel\nfine\t1\nunsure\tmaybe\n")
        extra = ["--eval-data", str(bad)]
    out = tmp_path / "repo" / "m" / "1"
    assert main(["export", "--model", str(model), "--out", str(out), "--formats", formats,
                 *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_edge_example_classifies_with_litert_alone_matching_keras(exported, run_dir,
                                                                  sst2_dev_sentences):
    import subprocess
    import sys

    from tfllm_serving.wordpiece import load_tokenizer

    from tfllm.data.tasks import Example
    from tfllm.finetune.features import predict_logits

    texts = sst2_dev_sentences[:5]
    code = (
        "import sys, json, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tfllm'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.path.insert(0, 'docs')\n"
        "from edge_classify import classify\n"
        f"print(json.dumps(classify({str(exported)!r}, {texts!r})))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    model = load_run_model(run_dir)
    logits = predict_logits(model, load_tokenizer(run_dir / "tokenizer"),
                            [Example(t, "0") for t in texts], 48)
    probs = tf.nn.softmax(logits).numpy()
    for result, p in zip(results, probs, strict=True):
        assert result["label"] == ["0", "1"][int(p.argmax())]
        assert abs(result["probability"] - p.max()) < 0.02  # int8 weights
