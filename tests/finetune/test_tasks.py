"""Every shipped fine-tuning config trains a tiny model on a slice of its real dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.finetune.conftest import TINY_FT
from tfllm.cli import main

CONFIGS = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv", None),
    "imdb": ("imdb/train.tsv", None, "imdb/test.tsv"),
    "banking77": ("banking77/train.csv", None, "banking77/test.csv"),
    "financial_phrasebank": ("financial_phrasebank/sentences_allagree.tsv", None, None),
    "conll2003": ("conll2003/train.txt", "conll2003/valid.txt", "conll2003/test.txt"),
    "ncbi_disease": ("ncbi_disease/train.txt", "ncbi_disease/valid.txt", "ncbi_disease/test.txt"),
}


def _slice(source: Path, target: Path, rows: int) -> Path:
    """Every k-th row (sorted files like BANKING77 keep many labels) or the first sentences."""
    lines = source.read_text(encoding="utf-8").rstrip("\n").split("\n")  # not splitlines: \x85 in text
    if source.suffix == ".txt":
        blocks = "\n".join(lines).split("\n\n")
        target.write_text("\n\n".join(blocks[:rows]) + "\n")
    else:
        body = lines[1:]
        step = max(1, len(body) // rows)
        target.write_text("\n".join([lines[0], *body[::step][:rows]]) + "\n")
    return target


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory, data_dir) -> Path:
    vocab = tmp_path_factory.mktemp("vocab") / "v"
    assert main(["vocab", "--corpus", str(data_dir / "sst2" / "train.tsv"),
                 str(data_dir / "conll2003" / "train.txt"), "--vocab-size", "4000",
                 "--out", str(vocab)]) == 0
    return vocab


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_shipped_config_trains_a_tiny_model_and_writes_valid_metrics(
        name, tmp_path, data_dir, tiny_tokenizer):
    train, evaluation, test = CONFIGS[name]
    args = ["--train", str(_slice(data_dir / train, tmp_path / Path(train).name, 240))]
    if evaluation:
        args += ["--eval", str(_slice(data_dir / evaluation, tmp_path / "eval.txt"
                                      if evaluation.endswith(".txt") else tmp_path / "eval.tsv",
                                      60))]
    if test:
        args += ["--test", str(_slice(data_dir / test, tmp_path / ("test" + Path(test).suffix),
                                      60))]
    out = tmp_path / "run"
    assert main(["finetune", "--config", f"configs/finetune/{name}.yaml", "--init", "none",
                 "--out", str(out), *args, "--set", f"model.tokenizer={tiny_tokenizer}",
                 *TINY_FT]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    if name in ("conll2003", "ncbi_disease"):
        for key in ("entity_f1", "entity_precision", "entity_recall"):
            assert 0.0 <= metrics[key] <= 1.0
        assert "O" in labels and all(t == "O" or t[:2] in ("B-", "I-") for t in labels)
        kinds = {"PER", "ORG", "LOC", "MISC"} if name == "conll2003" else {"Disease"}
        assert set(metrics["per_type"]) <= kinds
        assert 0.0 <= metrics["test"]["entity_f1"] <= 1.0
    else:
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert len(metrics["confusion_matrix"]) == len(labels) >= 2
    if test:
        assert "test" in metrics
    assert (out / "training_curves.png").is_file() and (out / "confusion_matrix.png").is_file()


def test_sentence_pairs_train_and_evaluate_from_named_columns(tmp_path, data_dir, tiny_tokenizer,
                                                              capsys):
    """Pairs the test builds from real SST-2 dev sentences: do both have the same label?"""
    rows = [line.split("\t") for line in
            (data_dir / "sst2" / "dev.tsv").read_text().splitlines()[1:401]]
    lines = ["first\tsecond\tsame"]
    for (a, la), (b, lb) in zip(rows[::2], rows[1::2], strict=True):
        lines.append(f"{a}\t{b}\t{'yes' if la == lb else 'no'}")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", "none",
                 "--out", str(out), "--train", str(pairs), "--set", "task.eval=null",
                 "--text-column", "first", "--text-pair-column", "second",
                 "--label-column", "same", "--set", f"model.tokenizer={tiny_tokenizer}",
                 *TINY_FT]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_examples"] == 20 and "held-out split 0.1" in metrics["eval_source"]
    assert json.loads((out / "labels.json").read_text()) == ["no", "yes"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(pairs)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["examples"] == 200
