"""`tfllm finetune` with `task.type: embedding` on real STS-B slices (tiny random-init model):
CoSENT keeps the best epoch on the eval pairs, the run embeds and exports like an INIT, and
in-batch negatives train on positive pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfllm.cli import main
from tfllm.embeddings.losses import pair_loss
from tfllm.embeddings.similarity import correlations, read_stsb

TINY_EMB = ["--set", "model.size=tiny", "--set", "train.epochs=2",
            "--set", "train.learning_rate=1e-3", "--set", "task.max_len=48"]


@pytest.fixture(scope="module")
def stsb_slices(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("stsb")
    for name, source, rows in (("train", "sts-train.csv", 400), ("dev", "sts-dev.csv", 150)):
        lines = (data_dir / "stsb" / source).read_text(encoding="utf-8").splitlines(keepends=True)
        (root / f"{name}.csv").write_text("".join(lines[:rows]), encoding="utf-8")
    return root


def test_cosent_ranks_by_the_gold_order_and_only_the_order():
    a = tf.math.l2_normalize(tf.random.stateless_normal((6, 8), seed=(1, 2)), -1)
    b = tf.math.l2_normalize(a + tf.random.stateless_normal((6, 8), seed=(3, 4)), -1)
    cos = tf.reduce_sum(a * b, -1).numpy()
    y = tf.concat([a, b], -1)
    loss = pair_loss("cosent")
    in_order, reversed_order = loss(cos, y), loss(-cos, y)
    assert float(in_order) < float(reversed_order)
    assert float(loss(3 * cos + 1, y)) == pytest.approx(float(in_order))  # ranks only


def test_an_embedding_run_keeps_its_best_epoch_and_embeds_and_exports_like_an_init(
        tmp_path, stsb_slices, sst2_vocab, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--config", "configs/finetune/stsb.yaml", "--init", "none",
                 "--out", str(run), "--train", str(stsb_slices / "train.csv"),
                 "--eval", str(stsb_slices / "dev.csv"), "--set", "task.test=null",
                 "--set", f"model.tokenizer={sst2_vocab}", *TINY_EMB]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["loss"] == "cosent" and metrics["train_pairs"] == 400
    curve = metrics["history"]["val_spearman"]
    assert metrics["spearman"] == pytest.approx(max(curve), abs=1e-3)
    assert metrics["best_epoch"] == curve.index(max(curve)) + 1
    # the RUN_DIR embeds (as --init) to the same Spearman on the eval pairs
    pairs = read_stsb(stsb_slices / "dev.csv")
    (tmp_path / "first.txt").write_text("\n".join(pairs.first) + "\n")
    (tmp_path / "second.txt").write_text("\n".join(pairs.second) + "\n")
    for side in ("first", "second"):
        assert main(["embed", "--model", str(run), "--input", str(tmp_path / f"{side}.txt"),
                     "--out", str(tmp_path / f"{side}.npy")]) == 0
    again = correlations(np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy"),
                         pairs.scores)
    assert again["spearman"] == pytest.approx(metrics["spearman"], abs=1e-3)
    # and exports as an embedder without --task
    version = tmp_path / "repo" / "sts" / "1"
    assert main(["export", "--model", str(run), "--out", str(version), "--formats", "onnx",
                 "--eval-data", str(stsb_slices / "dev.csv")]) == 0
    assert json.loads((version / "model_config.json").read_text())["task"] == "embedding"


def test_in_batch_negatives_train_on_positive_pairs(tmp_path, stsb_slices, sst2_vocab):
    lines = (stsb_slices / "train.csv").read_text(encoding="utf-8").splitlines()
    positives = tmp_path / "positives.tsv"
    positives.write_text("anchor\tpositive\n" + "".join(
        f"{f[5]}\t{f[6]}\n" for f in (line.split("\t") for line in lines) if float(f[4]) >= 3.0))
    run = tmp_path / "mnrl"
    assert main(["finetune", "--config", "configs/finetune/stsb.yaml", "--init", "none",
                 "--out", str(run), "--train", str(positives), "--eval",
                 str(stsb_slices / "dev.csv"), "--set", "task.test=null", "--set", "task.format=tsv",
                 "--set", "task.text_column=anchor", "--set", "task.text_pair_column=positive",
                 "--set", "task.label_column=null", "--set", "task.loss=mnrl",
                 "--set", f"model.tokenizer={sst2_vocab}", *TINY_EMB]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    loss = metrics["history"]["loss"]
    assert metrics["loss"] == "mnrl" and loss[-1] < loss[0]


def test_bad_pairs_exit_2_naming_the_line(tmp_path, sst2_vocab, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("main-captions\tMSRvid\t2012\t0001\t5.000\tA man.\tA man.\nshort\tline\n")
    assert main(["finetune", "--config", "configs/finetune/stsb.yaml", "--init", "none",
                 "--out", str(tmp_path / "run"), "--train", str(bad),
                 "--set", f"model.tokenizer={sst2_vocab}", *TINY_EMB]) == 2
    assert "bad.csv:2: expected 7 tab-separated fields" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.json").exists()
