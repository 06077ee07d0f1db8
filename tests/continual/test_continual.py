"""`tfllm continual` on small slices of real data with a tiny random-init model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfllm.cli import main
from tfllm.continual.scores import continual_scores

TINY = ["--set", "model.size=tiny", "--set", "train.epochs=1", "--set", "train.batch_size=16",
        "--set", "train.learning_rate=1e-3", "--set", "eval_split=0.2"]


def _sentiment(data_dir: Path, rows: int = 160) -> str:
    return f"""
labels: [negative, positive]
tasks:
  - name: sst2
    train: {data_dir}/sst2/train.tsv
    test: {data_dir}/sst2/dev.tsv
    text_column: sentence
    rename: {{0: negative, 1: positive}}
    max_train_examples: {rows}
    max_test_examples: 60
    max_len: 32
  - name: fpb
    train: {data_dir}/financial_phrasebank/sentences_allagree.tsv
    test_split: 0.2
    text_column: sentence
    labels: [negative, positive]
    max_train_examples: {rows}
    max_len: 48
"""


def _banking(data_dir: Path, intents: list[list[str]]) -> str:
    tasks = "".join(f"""
  - name: part-{i + 1}
    train: {data_dir}/banking77/train.csv
    test: {data_dir}/banking77/test.csv
    text_column: text
    label_column: category
    labels: [{', '.join(group)}]
    max_len: 32""" for i, group in enumerate(intents))
    return f"tasks:{tasks}\n"


def _run(tmp_path: Path, protocol: str, vocab: Path, *flags: str) -> tuple[int, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "protocol.yaml"
    config.write_text(protocol)
    out = tmp_path / "out"
    rc = main(["continual", "--config", str(config), "--init", "none", "--out", str(out),
               "--set", f"model.tokenizer={vocab}", *TINY, *flags])
    return rc, out


def test_scores_follow_their_definitions_on_a_three_task_matrix():
    R = [[0.9, 0.4, 0.5], [0.7, 0.8, 0.6], [0.6, 0.7, 0.9]]
    scores = continual_scores(R, baseline=[0.5, 0.5, 0.5])
    assert scores["average_accuracy"] == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert scores["bwt"] == pytest.approx(((0.6 - 0.9) + (0.7 - 0.8)) / 2)
    assert scores["forgetting"] == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7)) / 2)
    assert scores["fwt"] == pytest.approx(((0.4 - 0.5) + (0.6 - 0.5)) / 2)
    joint = continual_scores([[0.9, 0.8, 0.7]])
    assert joint["average_accuracy"] == pytest.approx(0.8) and joint["bwt"] is None


def test_sentiment_sequence_writes_R_scores_heatmap_and_a_run_per_stage(
        tmp_path, data_dir, sst2_vocab):
    rc, out = _run(tmp_path, _sentiment(data_dir), sst2_vocab, "--method", "replay")
    assert rc == 0
    report = json.loads((out / "continual.json").read_text())
    assert report["tasks"] == ["sst2", "fpb"] and report["labels"] == ["negative", "positive"]
    R = np.array(report["R"])
    assert R.shape == (2, 2) and ((R >= 0) & (R <= 1)).all()
    for key in ("average_accuracy", "bwt", "forgetting", "fwt"):
        assert isinstance(report[key], float)
    assert report["average_accuracy"] == pytest.approx(R[-1].mean())
    # replay keeps at most 5% of the past task (plus one row per label at the least)
    assert 0 < report["replay_rows"] <= 0.05 * 128 + 2
    assert (out / "continual.png").stat().st_size > 0
    assert report["stages"] == ["stages/01-sst2", "stages/02-fpb"]
    last = out / report["stages"][-1]
    metrics = json.loads((last / "metrics.json").read_text())
    assert metrics["continual"]["test_accuracy"]["sst2"] == pytest.approx(R[1, 0])
    # a stage is an ordinary classifier RUN_DIR: evaluate reads it like a finetune run
    rows = [line for line in (data_dir / "financial_phrasebank" / "sentences_allagree.tsv")
            .read_text().splitlines() if line.endswith(("\tpositive", "\tnegative"))][:40]
    (tmp_path / "fpb.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    from tfllm.finetune.inference import evaluate_run

    scored = evaluate_run(last, tmp_path / "fpb.tsv", quiet=True)
    assert scored["examples"] == 40 and 0 <= scored["accuracy"] <= 1


def test_class_incremental_head_grows_and_unseen_intents_count_as_wrong(
        tmp_path, data_dir, sst2_vocab):
    intents = [["card_arrival", "pin_blocked", "top_up_failed"],
               ["atm_support", "age_limit", "cash_withdrawal_charge"]]
    rc, out = _run(tmp_path, _banking(data_dir, intents), sst2_vocab)
    assert rc == 0
    report = json.loads((out / "continual.json").read_text())
    assert report["labels"] == sorted(intents[0]) + sorted(intents[1])
    first = json.loads((out / report["stages"][0] / "labels.json").read_text())
    assert first == sorted(intents[0])
    assert report["R"][0][1] == 0.0  # the head held none of task 2's intents yet
    assert report["baseline"][1] == 0.0 and report["fwt"] == pytest.approx(0.0)


def _old_logits(run: Path, rows: list, old: int) -> np.ndarray:
    from tfllm_serving.wordpiece import load_tokenizer

    from tfllm.finetune.features import predict_logits
    from tfllm.models.run_dir import load_run_model

    logits = predict_logits(load_run_model(run), load_tokenizer(run / "tokenizer"), rows, 32)
    # softmax (and so the soft term) ignores a shift shared by a row's logits: compare without it
    return logits[:, :old] - logits[:, :old].mean(1, keepdims=True)


def test_learning_without_forgetting_holds_the_old_intents_logits(tmp_path, data_dir,
                                                                   sst2_vocab):
    from tfllm.data.tasks import Example

    intents = [["card_arrival", "pin_blocked", "top_up_failed"],
               ["atm_support", "age_limit", "cash_withdrawal_charge"]]
    # the second task's own texts: what the soft term sees while stage 2 trains
    rows = [Example(text, label) for text, label in
            _csv_rows(data_dir / "banking77" / "train.csv", set(intents[1]))]
    drift = {}
    for name, flags in (("naive", []), ("lwf", ["--set", "method.distill_old=0.9"])):
        rc, out = _run(tmp_path / name, _banking(data_dir, intents), sst2_vocab,
                       "--set", "train.epochs=2", *flags)
        assert rc == 0
        stages = json.loads((out / "continual.json").read_text())["stages"]
        before, after = (_old_logits(out / stage, rows, 3) for stage in stages)
        drift[name] = float(np.abs(after - before).mean())
    # the soft term pins the first task's three logits on the rows stage 2 trains on
    assert drift["lwf"] < 0.5 * drift["naive"], drift


def _csv_rows(path: Path, labels: set[str]) -> list[tuple[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f) if r["category"] in labels]


def test_joint_trains_every_task_in_one_stage(tmp_path, data_dir, sst2_vocab):
    rc, out = _run(tmp_path, _sentiment(data_dir, rows=80), sst2_vocab, "--method", "joint")
    assert rc == 0
    report = json.loads((out / "continual.json").read_text())
    assert len(report["R"]) == 1 and report["stages"] == ["stages/01-sst2+fpb"]
    assert report["bwt"] is None and report["forgetting"] is None


def _encoder_weights(run: Path) -> dict[str, np.ndarray]:
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(run / "backbone" / "model.weights.h5") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset)
                     and ("transformer" in name or "encoder_layer" in name) else None)
    return arrays


def _stage_weights(out: Path) -> tuple[dict, dict]:
    return tuple(_encoder_weights(out / "stages" / s) for s in ("01-sst2", "02-fpb"))


def test_a_strong_l2sp_penalty_holds_the_encoder_where_the_first_task_left_it(
        tmp_path, data_dir, sst2_vocab):
    drift = {}
    for method in ("naive", "l2sp"):
        rc, out = _run(tmp_path / method, _sentiment(data_dir, rows=320), sst2_vocab,
                       "--method", method, "--set", "method.penalty=1e6")
        assert rc == 0
        before, after = _stage_weights(out)
        drift[method] = sum(float(np.abs(before[k] - after[k]).sum()) for k in before)
    # Adam moves every weight by about the learning rate a step whatever the gradient's size,
    # so a held weight oscillates around its anchor while a free one keeps walking away
    assert drift["l2sp"] < 0.25 * drift["naive"], drift


def test_adapters_leave_the_pretrained_matrices_untouched_across_tasks(
        tmp_path, data_dir, sst2_vocab):
    rc, out = _run(tmp_path, _sentiment(data_dir, rows=96), sst2_vocab, "--method", "adapters",
                   "--set", "method.adapter_size=8")
    assert rc == 0
    before, after = _stage_weights(out)
    # the adapters sit where keras-hub's dropouts were (tfllm.models.encoder)
    adapters = [k for k in before if "/down/" in k or "/up/" in k]
    kernels = [k for k in before if "dense" in k and k not in adapters]
    assert kernels and adapters
    assert all(np.array_equal(before[k], after[k]) for k in kernels)
    assert any(not np.array_equal(before[k], after[k]) for k in adapters)


def _tiny_classifier():
    from tfllm.finetune.train import build_classifier
    from tfllm.models.backbone import BackboneConfig, build_backbone

    backbone = build_backbone(BackboneConfig(num_layers=2, hidden_dim=32, num_heads=2,
                                             intermediate_dim=64), vocab_size=50)
    return backbone, build_classifier(backbone, num_classes=3, dropout=0.0)


def test_fisher_is_zero_for_embedding_rows_of_tokens_never_seen_and_positive_for_seen_ones():
    from tfllm.continual.penalties import fisher_diagonal

    backbone, model = _tiny_classifier()
    ids = np.random.default_rng(0).integers(1, 20, (8, 6)).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    embedding = backbone.token_embedding.embeddings
    position = [i for i, v in enumerate(backbone.trainable_weights) if v is embedding][0]
    fisher = fisher_diagonal(model, backbone.trainable_weights, x, seed=0)[position]
    seen = np.unique(ids)
    assert (fisher[seen].sum(axis=1) > 0).all()
    assert (fisher[20:] == 0).all()


def test_ewc_holds_the_weights_its_fisher_marks_and_frees_the_others():
    import keras

    from tfllm.continual.penalties import Anchored

    backbone, model = _tiny_classifier()
    weights = backbone.trainable_weights
    held = {id(v) for v in backbone.transformer_layers[0].trainable_weights}
    fisher = [np.full(v.shape, 2.0 if id(v) in held else 0.0, "float32") for v in weights]
    start = [np.asarray(v).copy() for v in weights]
    trainer = Anchored(model, weights, fisher, strength=1e6)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 50, (64, 8)).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    trainer.fit(x, rng.integers(0, 3, 64), batch_size=16, epochs=5, verbose=0)
    moved = {True: [], False: []}
    for v, s in zip(weights, start, strict=True):
        if "embedding" not in v.path:
            moved[id(v) in held].append(float(np.abs(np.asarray(v) - s).mean()))
    assert np.mean(moved[True]) < 0.2 * np.mean(moved[False]), moved


def test_bad_protocols_are_refused_with_exit_2_and_nothing_written(
        tmp_path, data_dir, sst2_vocab, capsys):
    good = _sentiment(data_dir)
    cases = {
        "missing file": (good.replace("sst2/dev.tsv", "sst2/nope.tsv"), "nope.tsv"),
        "label outside the head": (good.replace("    labels: [negative, positive]\n", ""),
                                   "'neutral' is outside the head"),
        "unknown label in a subset": (good.replace("labels: [negative, positive]\n    max",
                                                   "labels: [negative, bullish]\n    max"),
                                      "'bullish' is not in"),
        "test file and split": (good.replace("    test_split: 0.2\n", "    test_split: 0.2\n"
                                             f"    test: {data_dir}/sst2/dev.tsv\n"),
                                "one of them"),
    }
    for name, (protocol, message) in cases.items():
        rc, out = _run(tmp_path / name.replace(" ", "-"), protocol, sst2_vocab)
        err = capsys.readouterr().err
        assert rc == 2, name
        assert message in err, (name, err)
        assert not (out / "continual.json").exists() and not (out / "stages").exists(), name


def test_the_shipped_protocols_load_and_split_banking77_into_seven_disjoint_sets_of_eleven():
    import csv

    from tfllm.continual.protocol import load_protocol

    assert [t.name for t in load_protocol("configs/continual/sentiment.yaml").tasks] == [
        "sst2", "imdb", "financial_phrasebank"]
    tasks = load_protocol("configs/continual/banking77.yaml").tasks
    intents = [label for task in tasks for label in task.labels]
    with open(tasks[0].train.replace("${TFLLM_DATA}", str(_data_root())), newline="") as f:
        every = {row["category"] for row in csv.DictReader(f)}
    assert len(tasks) == 7 and all(len(t.labels) == 11 for t in tasks)
    assert len(set(intents)) == 77 and set(intents) == every


def _data_root() -> Path:
    from tests.conftest import data_root

    return data_root()


def test_balanced_replay_weighs_each_old_label_like_an_average_new_one():
    from tfllm.continual.protocol import ContinualTask
    from tfllm.continual.train import _balanced_weights
    from tfllm.data.tasks import Example

    task = ContinualTask(name="t")
    new = [Example(f"n{i}", "new-a" if i < 60 else "new-b") for i in range(100)]  # 60 + 40
    stored = [Example(f"s{i}", "old-a" if i < 2 else "old-b") for i in range(7)]  # 2 + 5
    weights = _balanced_weights([(task, stored)], [(task, new)])
    assert weights.shape == (107,) and np.isclose(weights.mean(), 1.0)
    per_label: dict[str, float] = {}
    for e, w in zip(new + stored, weights, strict=True):
        per_label[e.label] = per_label.get(e.label, 0.0) + float(w)
    average_new = (per_label["new-a"] + per_label["new-b"]) / 2
    assert np.isclose(per_label["old-a"], average_new)
    assert np.isclose(per_label["old-b"], average_new)


def test_weight_aligning_scales_the_new_rows_to_the_old_rows_mean_norm():
    import keras

    from tfllm.continual.train import _align_head

    class Head:  # the one attribute _align_head reads: the classifier's output Dense
        output_dense = keras.layers.Dense(5)

    Head.output_dense.build((None, 4))
    kernel = np.ones((4, 5), "float32")
    kernel[:, 3:] *= 3.0  # the two newest labels' rows are 3x longer
    Head.output_dense.set_weights([kernel, np.array([0, 0, 0, 3, 3], "float32")])
    _align_head(Head, old=3)
    kernel, bias = (np.asarray(w) for w in Head.output_dense.weights)
    norms = np.linalg.norm(kernel, axis=0)
    np.testing.assert_allclose(norms[3:], norms[:3].mean(), rtol=1e-6)
    np.testing.assert_allclose(bias, [0, 0, 0, 1, 1], rtol=1e-6)
