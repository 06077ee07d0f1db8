"""`tfllm finetune` for classification on real SST-2 slices, the MiniLM import, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from tfllm_serving.wordpiece import encode_batch, load_tokenizer

from tests.finetune.conftest import TINY_FT
from tfllm.cli import main
from tfllm.data.tasks import Example
from tfllm.finetune.features import classification_features, predict_logits
from tfllm.models.checkpoints import load_checkpoint
from tfllm.models.run_dir import load_run_model


def test_random_init_run_writes_valid_metrics_labels_plots_and_preset(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert set(metrics["per_class"]) == {"0", "1"}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 200
    assert np.array(metrics["confusion_matrix"]).sum() == 200
    assert json.loads((tiny_run / "labels.json").read_text()) == ["0", "1"]
    for name in ("model.keras", "backbone/config.json", "tokenizer/tokenizer.json",
                 "config.yaml", "training_curves.png", "confusion_matrix.png"):
        assert (tiny_run / name).is_file(), name


def test_saved_run_reloads_with_safe_mode_and_predicts_identically(tiny_run, sst2_dev_sentences):
    model = load_run_model(tiny_run)
    tokenizer = load_tokenizer(tiny_run / "tokenizer")
    examples = [Example(s, "0") for s in sst2_dev_sentences[:32]]
    first = predict_logits(model, tokenizer, examples, 48)
    again = predict_logits(load_run_model(tiny_run), tokenizer,
                           examples, 48)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (32, 2)


def test_predictions_come_back_in_input_order_whatever_their_lengths(tiny_run, sst2_dev_sentences):
    model = load_run_model(tiny_run)
    tokenizer = load_tokenizer(tiny_run / "tokenizer")
    # Longest first, so predicting shortest-first must put every row back in its place.
    examples = [Example(s, "0") for s in sorted(sst2_dev_sentences[:24], key=len, reverse=True)]
    logits = predict_logits(model, tokenizer, examples, 48, batch=8)
    in_order = model.predict_on_batch(classification_features(tokenizer, examples, 48, "head"))
    np.testing.assert_allclose(logits, np.asarray(in_order), atol=1e-4)


def test_a_run_dir_is_a_valid_init_and_a_finished_run_is_not_overwritten(tmp_path, tiny_run,
                                                                        sst2_slice, capsys):
    out = tmp_path / "again"
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", str(tiny_run),
                 "--out", str(out), "--train", str(sst2_slice["train"]), "--eval",
                 str(sst2_slice["dev"]), *TINY_FT]) == 0
    assert json.loads((out / "metrics.json").read_text())["init_kind"] == "run_dir"
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", str(tiny_run),
                 "--out", str(out), "--train", str(sst2_slice["train"]), *TINY_FT]) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def _numpy_bert(weights: dict, ids: np.ndarray, mask: np.ndarray, layers: int, heads: int):
    """An independent BERT forward pass (HF weight layout, exact erf GELU) in numpy."""
    from math import erf, sqrt

    def w(name):
        for key in (name, "bert." + name):
            if key in weights:
                return weights[key].astype(np.float64)
        raise KeyError(name)

    def norm(x, prefix):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w(prefix + ".weight") + w(prefix + ".bias")

    def dense(x, prefix):
        return x @ w(prefix + ".weight").T + w(prefix + ".bias")

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))))
    seq = ids.shape[1]
    x = (w("embeddings.word_embeddings.weight")[ids] + w("embeddings.position_embeddings.weight")
         [:seq][None] + w("embeddings.token_type_embeddings.weight")[0][None, None])
    x = norm(x, "embeddings.LayerNorm")
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q, k, v = (dense(x, f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
        d = x.shape[-1] // heads

        def split(t, d=d):
            return t.reshape(t.shape[0], seq, heads, d).transpose(0, 2, 1, 3)

        scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(d)
        scores = scores + (1 - mask[:, None, None, :]) * -1e9
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ split(v)).transpose(0, 2, 1, 3).reshape(x.shape)
        x = norm(x + dense(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        ffn = dense(gelu(dense(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
        x = norm(x + ffn, f"{p}.output.LayerNorm")
    return x


def test_huggingface_minilm_import_matches_an_independent_numpy_forward_pass(tmp_path, minilm_dir):
    checkpoint = load_checkpoint(str(minilm_dir), tmp_path)
    assert checkpoint.kind == "huggingface"
    config = json.loads((minilm_dir / "config.json").read_text())
    tokenizer = load_tokenizer(checkpoint.tokenizer_dir)
    sentences = ["A man is playing a guitar.", "Someone plays an instrument on stage.",
                 "The stock market fell sharply today."]
    enc = encode_batch(tokenizer, sentences, max_len=32)
    got = checkpoint.backbone({"token_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"],
                               "padding_mask": enc["attention_mask"]})["sequence_output"]
    want = _numpy_bert(load_file(str(minilm_dir / "model.safetensors")), enc["input_ids"],
                       enc["attention_mask"], config["num_hidden_layers"],
                       config["num_attention_heads"])
    mask = enc["attention_mask"][..., None]

    def pooled(x):
        v = (np.asarray(x) * mask).sum(1) / mask.sum(1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    a, b = pooled(got), pooled(want)
    # keras-hub's BERT uses the tanh GELU, HF the erf one: equal to about 1e-3, not bitwise.
    assert np.all(np.sum(a * b, axis=1) > 0.9999)
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=2e-3)
    assert (a @ a.T)[0, 1] > (a @ a.T)[0, 2] + 0.2  # the paraphrase is closer than the unrelated


@pytest.mark.parametrize("case, message", [
    ("no_label_column", "no column 'sentiment' (columns: sentence, label)"),
    ("empty_train", "no examples"),
    ("unseen_eval_label", "eval label '7' never seen in training"),
])
def test_bad_input_fails_with_file_and_line_and_leaves_no_run(tmp_path, sst2_slice, case,
                                                             message, capsys):
    train, dev = sst2_slice["train"], sst2_slice["dev"]
    extra = []
    if case == "no_label_column":
        extra = ["--label-column", "sentiment"]
    elif case == "empty_train":
        train = tmp_path / "empty.tsv"
        train.write_text("sentence\tlabel\n")
    else:
        dev = tmp_path / "dev.tsv"
        dev.write_text("sentence\tlabel\nfine\t1\nodd one\t7\n")
        message = f"{dev}:3: " + message
    out = tmp_path / "run"
    rc = main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", "none",
               "--out", str(out), "--train", str(train), "--eval", str(dev), *TINY_FT, *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_reproduces_the_run_metrics_and_predict_writes_jsonl(tiny_run, sst2_slice,
                                                                     tmp_path, capsys):
    assert main(["evaluate", "--model", str(tiny_run), "--data", str(sst2_slice["dev"])]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tiny_run / "metrics.json").read_text())
    assert printed["accuracy"] == pytest.approx(saved["accuracy"]) and printed["examples"] == 200
    texts = tmp_path / "texts.txt"
    texts.write_text("a gripping film\n\nthe worst movie of the year\n")
    assert main(["predict", "--model", str(tiny_run), "one more", "--file", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == ["one more", "a gripping film", "the worst movie of the year"]
    for row in rows:
        assert row["label"] in ("0", "1")
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert main(["predict", "--model", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_run), "--data", str(sst2_slice["dev"]),
                 "--decoding", "argmax"]) == 2
    assert "--decoding is for NER runs" in capsys.readouterr().err
