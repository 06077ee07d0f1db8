"""NER on real CoNLL-2003 slices: label alignment, a tiny run, evaluate/predict, bad input."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from tfllm_serving.tagging import decode_tags
from tfllm_serving.wordpiece import load_tokenizer

from tests.finetune.conftest import TINY_FT
from tfllm.cli import main
from tfllm.data.readers import ReadReport
from tfllm.data.tasks import check_known_labels, read_tagged
from tfllm.errors import InputError
from tfllm.finetune.tagging import IGNORE, check_decoding, encode_tagged
from tfllm.models.checkpoints import load_checkpoint
from tfllm.models.run_dir import load_run_model


@pytest.fixture(scope="module")
def conll_slice(tmp_path_factory, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("conll")
    for split, count in (("train", 300), ("valid", 80)):
        blocks = (data_dir / "conll2003" / f"{split}.txt").read_text().split("\n\n")
        (root / f"{split}.txt").write_text("\n\n".join(blocks[:count]) + "\n")
    return {"train": root / "train.txt", "valid": root / "valid.txt"}


def test_labels_sit_on_the_first_sub_token_of_each_real_conll_word(tmp_path, data_dir,
                                                                   minilm_dir):
    sentences = read_tagged(data_dir / "conll2003" / "valid.txt")[:200]
    names = sorted({t for s in sentences for t in s.tags})
    index = {n: i for i, n in enumerate(names)}
    tokenizer = load_tokenizer(load_checkpoint(str(minilm_dir), tmp_path).tokenizer_dir)
    enc = encode_tagged(tokenizer, [s.words for s in sentences], [s.tags for s in sentences],
                        index, 128)
    assert (enc["labels"] != IGNORE).sum() == sum(len(s.words) for s in sentences)
    split_words = 0
    for row, sentence in enumerate(sentences):
        for word, position in zip(sentence.words, enc["first_token"][row], strict=False):
            piece = tokenizer.id_to_token(int(enc["input_ids"][row, position]))
            assert not piece.startswith("##") and word.lower().startswith(piece.lower()[:1])
        split_words += len(sentence.words) < enc["attention_mask"][row].sum() - 2
    assert split_words > 50  # real words do split into several sub-tokens
    # Gold labels placed on tokens read back as the gold tags, under either decoding.
    gold_logits = 10.0 * np.eye(len(names))[np.maximum(enc["labels"], 0)]
    for decoding in ("bio", "argmax"):
        back = decode_tags(enc["first_token"], gold_logits, names,
                           [len(s.words) for s in sentences], decoding)
        assert back == [s.tags for s in sentences]


def test_a_word_without_sub_tokens_gets_o_and_the_words_after_it_keep_their_tags(
        tmp_path, data_dir, minilm_dir):
    sentences = [s for s in read_tagged(data_dir / "ncbi_disease" / "valid.txt")[:100]
                 if "B-Disease" in s.tags[1:]]
    assert len(sentences) > 20
    names = ["B-Disease", "I-Disease", "O"]
    index = {n: i for i, n in enumerate(names)}
    tokenizer = load_tokenizer(load_checkpoint(str(minilm_dir), tmp_path).tokenizer_dir)
    # a zero-width space normalizes to nothing, so it has no sub-token at all
    words = [[s.words[0], "\u200b", *s.words[1:]] for s in sentences]
    tags = [[s.tags[0], "O", *s.tags[1:]] for s in sentences]
    enc = encode_tagged(tokenizer, words, tags, index, 128)
    assert (enc["first_token"][:, 1] == -1).all()
    gold_logits = 10.0 * np.eye(len(names))[np.maximum(enc["labels"], 0)]
    for decoding in ("bio", "argmax"):
        assert decode_tags(enc["first_token"], gold_logits, names, [len(w) for w in words],
                           decoding) == tags


def test_bio_decoding_finds_the_best_sequence_that_opens_no_entity_with_i(data_dir):
    names = sorted({t for s in read_tagged(data_dir / "ncbi_disease" / "valid.txt")
                    for t in s.tags})
    assert names == ["B-Disease", "I-Disease", "O"]
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(200, 7, 3))
    first = np.tile(np.arange(1, 6), (200, 1))  # five words on tokens 1..5
    argmax = decode_tags(first, logits, names, [5] * 200, "argmax")
    bio = decode_tags(first, logits, names, [5] * 200, "bio")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    def valid(tags) -> bool:
        return all(t != "I-Disease" or p in ("B-Disease", "I-Disease")
                   for p, t in zip(("O", *tags), tags, strict=False))

    def score(row, tags) -> float:
        return sum(log_probs[row, 1 + i, names.index(t)] for i, t in enumerate(tags))

    for row in range(200):
        best = max((tags for tags in itertools.product(names, repeat=5) if valid(tags)),
                   key=lambda tags, row=row: score(row, tags))
        assert bio[row] == list(best)
        if valid(argmax[row]):
            assert bio[row] == argmax[row]
    assert sum(not valid(tags) for tags in argmax) > 50  # random scores do break BIO often


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, conll_slice, data_dir) -> Path:
    vocab = tmp_path_factory.mktemp("v") / "vocab"
    assert main(["vocab", "--corpus", str(data_dir / "conll2003" / "train.txt"),
                 "--vocab-size", "3000", "--out", str(vocab)]) == 0
    out = tmp_path_factory.mktemp("ner") / "run"
    assert main(["finetune", "--config", "configs/finetune/conll2003.yaml", "--init", "none",
                 "--out", str(out), "--train", str(conll_slice["train"]), "--eval",
                 str(conll_slice["valid"]), "--set", f"model.tokenizer={vocab}",
                 "--set", "task.test=null", *TINY_FT, "--set", "train.epochs=2",
                 "--set", "train.early_stopping_patience=2"]) == 0
    return out


def test_ner_run_writes_seqeval_metrics_and_evaluate_and_predict_agree(ner_run, conll_slice,
                                                                      capsys):
    metrics = json.loads((ner_run / "metrics.json").read_text())
    assert {"entity_f1", "entity_precision", "entity_recall", "per_type"} <= set(metrics)
    assert metrics["epochs_run"] == 2 and metrics["decoding"] == "bio"
    names = json.loads((ner_run / "labels.json").read_text())
    assert set(names) == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
                          "I-MISC"}
    capsys.readouterr()
    assert main(["evaluate", "--model", str(ner_run), "--data", str(conll_slice["valid"])]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["entity_f1"] == pytest.approx(metrics["entity_f1"])
    assert printed["decoding"] == "bio"
    assert main(["predict", "--model", str(ner_run), "EU rejects German call to boycott "
                 "British lamb ."]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(row["tags"]) == len(row["words"]) == 9 and set(row["tags"]) <= set(names)


def test_evaluate_refuses_iob1_tags_under_bio_decoding_and_scores_them_with_argmax(
        ner_run, conll_slice, tmp_path, capsys):
    lines = conll_slice["valid"].read_text().splitlines()
    # an entity opened with I- after O: IOB1, which BIO-decoded predictions cannot match
    i = next(n for n, line in enumerate(lines) if line.endswith(" B-ORG")
             and lines[n - 1].endswith(" O"))
    head, _ = lines[i].rsplit(" ", 1)
    lines[i] = f"{head} I-ORG"
    iob1 = tmp_path / "iob1.txt"
    iob1.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["evaluate", "--model", str(ner_run), "--data", str(iob1)]) == 2
    assert f"{iob1}:{i + 1}: tag 'I-ORG' after 'O' is not IOB2" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(ner_run), "--data", str(iob1),
                 "--decoding", "argmax"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["decoding"] == "argmax"


@pytest.mark.parametrize(("line", "replacement", "expected"), [
    (5, "broken", "6: expected 4 columns, found 1"),  # one column where the file has four
    # IOB1 opens an entity with I- after O, which BIO decoding cannot give back
    (2, "EU NNP B-NP I-ORG", "3: tag 'I-ORG' after 'O' is not IOB2; decode IOB1 tags with argmax"),
], ids=["malformed-line", "iob1-tags"])
def test_bad_conll_training_data_names_file_and_line_and_leaves_no_run(
        tmp_path, conll_slice, capsys, line, replacement, expected):
    lines = conll_slice["train"].read_text().splitlines()
    lines[line] = replacement
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    rc = main(["finetune", "--config", "configs/finetune/conll2003.yaml", "--init", "none",
               "--out", str(out), "--train", str(bad), *TINY_FT])
    assert rc == 2
    assert f"{bad}:{expected}" in capsys.readouterr().err
    assert not out.exists()


def test_tag_errors_name_the_line_of_the_word_even_after_a_skipped_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("EU B-ORG\n-DOCSTART- O\nrejects I-ORG\nit I-MISC\n")
    sentences = read_tagged(path, ReadReport())
    check_known_labels(sentences, ["B-ORG", "I-ORG", "I-MISC"], "eval")
    with pytest.raises(InputError, match=re.escape(f"{path}:4: tag 'I-MISC' after 'I-ORG' is not IOB2")):
        check_decoding(sentences, "bio")
    with pytest.raises(InputError, match=re.escape(f"{path}:3: eval label 'I-ORG' never seen")):
        check_known_labels(sentences, ["B-ORG", "I-MISC"], "eval")


def test_strict_reading_is_what_finetuning_uses_and_plain_reading_skips(conll_slice, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("EU NNP B-NP B-ORG\nrejects\n\nPeter NNP B-NP B-PER\n")
    report = ReadReport()
    assert [s.words for s in read_tagged(bad, report)] == [["Peter"]]
    assert report.bad_records == 1


def test_ner_distillation_from_the_run_it_starts_from_brings_the_student_to_the_teacher(
        ner_run, conll_slice, tmp_path):
    out = tmp_path / "student"
    assert main(["finetune", "--config", "configs/finetune/conll2003.yaml", "--init",
                 str(ner_run), "--out", str(out), "--train", str(conll_slice["train"]),
                 "--eval", str(conll_slice["valid"]), "--set", "task.test=null", *TINY_FT,
                 "--set", f"method.distill_from={ner_run}",
                 "--set", "method.distill_alpha=0.9"]) == 0
    kd = json.loads((out / "metrics.json").read_text())["distillation"]
    # KD loss over the scored positions (first sub-tokens): a new random head starts far
    # from the teacher's tags and ends close.
    assert kd["kd_loss_eval_after"] < 0.5 * kd["kd_loss_eval_before"], kd
    # the distilled run loads like any run (its compiled distillation loss is not needed)
    assert load_run_model(out).output_shape[-1] == load_run_model(ner_run).output_shape[-1]
