"""`tfllm vocab` + `tfllm data pretrain` on real WikiText-2: shards, stats and masking rules."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfllm_serving.wordpiece import read_vocab

from tfllm.cli import main
from tfllm.data.masking import dynamic_masking
from tfllm.data.pretraining import ExampleOptions, MaskingCounts, MaskingVocab, create_instances
from tfllm.data.tfrecords import load_pretraining_dataset, shard_files


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("vocab") / "v"
    rc = main(["vocab", "--corpus", str(data_dir / "wikitext2" / "wiki.valid.tokens"),
               str(data_dir / "sst2" / "train.tsv"), "--vocab-size", "8000", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def static_data(tmp_path_factory, data_dir, vocab_dir) -> Path:
    out = tmp_path_factory.mktemp("data") / "d"
    rc = main(["data", "pretrain", "--corpus", str(data_dir / "wikitext2" / "wiki.valid.tokens"),
               "--tokenizer", str(vocab_dir), "--seq-len", "128", "--out", str(out),
               "--dupe-factor", "2", "--set", "examples.examples_per_shard=2000"])
    assert rc == 0
    return out


def test_vocab_has_bert_specials_first_and_the_requested_size(vocab_dir):
    vocab = read_vocab(vocab_dir / "vocab.txt")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == 8000
    assert (vocab_dir / "tokenizer.json").is_file()


def test_stats_meet_the_bert_masking_and_nsp_rates(static_data):
    stats = json.loads((static_data / "stats.json").read_text())
    assert abs(stats["masked_fraction"] - 0.15) <= 0.01
    assert abs(stats["mask_token_fraction"] - 0.80) <= 0.02
    assert abs(stats["random_token_fraction"] - 0.10) <= 0.02
    assert abs(stats["keep_fraction"] - 0.10) <= 0.02
    assert abs(stats["nsp_random_fraction"] - 0.50) <= 0.03
    for key in ("documents_in", "documents_out", "exact_duplicates", "near_duplicates", "tokens",
                "examples", "unk_rate", "bad_records"):
        assert key in stats, key
    assert stats["documents_out"] < stats["documents_in"] and stats["examples"] > 5000
    assert len(stats["shards"]) == len(shard_files(static_data)) > 1
    assert (static_data / "tokenizer" / "vocab.txt").is_file()
    assert (static_data / "config.yaml").is_file()


def test_length_buckets_pad_each_batch_to_its_bucket_and_keep_the_examples_whole(static_data):
    def examples(ds) -> list[tuple]:
        found = []
        for batch in ds:
            ids, mask = batch["input_ids"].numpy(), batch["input_mask"].numpy()
            found += [tuple(row[:n]) for row, n in zip(ids, mask.sum(1), strict=True)]
        return found

    plain = examples(load_pretraining_dataset(static_data, 128, 20, 64, shuffle=False))
    bucketed = load_pretraining_dataset(static_data, 128, 20, 64, shuffle=False, bucket_width=32)
    widths = []
    for batch in bucketed:
        width = batch["input_ids"].shape[1]
        lengths = batch["input_mask"].numpy().sum(1)
        assert width % 32 == 0 and (lengths <= width).all() and (lengths > width - 32).all()
        assert batch["segment_ids"].shape[1] == width
        assert (batch["masked_lm_positions"].numpy() < width).all()
        widths.append(width)
    assert set(widths) == {32, 64, 96, 128} and np.mean(widths) < 120
    kept = examples(load_pretraining_dataset(static_data, 128, 20, 64, shuffle=False,
                                             bucket_width=32))
    # only the last partial batch of each of the 4 buckets is left out
    assert set(kept) <= set(plain) and len(kept) >= len(plain) + 64 - 4 * 63


def test_records_decode_to_well_formed_bert_examples(static_data, vocab_dir):
    vocab = read_vocab(vocab_dir / "vocab.txt")
    cls, sep, mask = vocab.index("[CLS]"), vocab.index("[SEP]"), vocab.index("[MASK]")
    batch = next(iter(load_pretraining_dataset(static_data, 128, 20, batch_size=256, shuffle=False)))
    ids, input_mask = batch["input_ids"].numpy(), batch["input_mask"].numpy()
    segments = batch["segment_ids"].numpy()
    positions, weights = batch["masked_lm_positions"].numpy(), batch["masked_lm_weights"].numpy()
    labels = batch["masked_lm_ids"].numpy()
    assert ids.shape == (256, 128) and ids.dtype == np.int32
    for row in range(256):
        length = int(input_mask[row].sum())
        assert ids[row, 0] == cls and ids[row, length - 1] == sep
        assert (ids[row, :length] == sep).sum() == 2 and (ids[row, length:] == 0).all()
        assert segments[row, 0] == 0 and segments[row, length - 1] == 1
        real = weights[row] > 0
        assert 1 <= real.sum() <= 20
        picked = positions[row][real]
        assert (np.diff(picked) > 0).all() and (picked > 0).all() and (picked < length).all()
        assert not np.isin(labels[row][real], [cls, sep, 0]).any()
        # a prediction position holds [MASK], a random token, or the label itself
        assert ((ids[row, picked] == mask) | (ids[row, picked] != cls)).all()
    assert set(np.unique(batch["next_sentence_labels"].numpy())) == {0, 1}


def test_dynamic_masking_data_is_masked_fresh_on_each_read(tmp_path, data_dir, vocab_dir):
    out = tmp_path / "dyn"
    rc = main(["data", "pretrain", "--corpus", str(data_dir / "wikitext2" / "wiki.valid.tokens"),
               "--tokenizer", str(vocab_dir), "--seq-len", "64", "--out", str(out),
               "--dupe-factor", "1", "--masking", "dynamic", "--no-nsp"])
    assert rc == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["masked_fraction"] is None and stats["nsp_random_fraction"] == 0.0
    vocab = read_vocab(vocab_dir / "vocab.txt")
    special = [i for i, t in enumerate(vocab) if t.startswith("[")]
    # As in the trainer: one iterator over repeated data, so epoch 2 re-reads epoch 1's rows.
    # Seeded first, so the result does not hang on what earlier tests did to the global seed.
    tf.random.set_seed(0)
    ds = load_pretraining_dataset(out, 64, 10, batch_size=64, masked=False, shuffle=False)
    ds = ds.take(1).repeat(2)
    ds = ds.map(dynamic_masking(len(vocab), vocab.index("[MASK]"), special, max_predictions=10))
    first, second = iter(ds)
    original = next(iter(load_pretraining_dataset(out, 64, 10, 64, masked=False, shuffle=False)))
    assert not np.array_equal(first["masked_lm_positions"], second["masked_lm_positions"])
    w = first["masked_lm_weights"].numpy() > 0
    rows = np.nonzero(w)[0]
    gathered = np.take_along_axis(original["input_ids"].numpy(),
                                  first["masked_lm_positions"].numpy(), axis=1)
    np.testing.assert_array_equal(gathered[w], first["masked_lm_ids"].numpy()[w])
    assert rows.size > 0 and (original["segment_ids"].numpy() == 0).all()


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(vocab_dir):
    vocab = MaskingVocab(read_vocab(vocab_dir / "vocab.txt"))
    cont = [i for i, t in enumerate(vocab.tokens) if t.startswith("##")][:40]
    heads = [i for i in vocab.replacement_ids if not vocab.is_continuation[i]][100:140]
    docs = [[[heads[i], cont[i], cont[i + 1]] * 6 for i in range(0, 30, 3)],
            [[heads[i], cont[i]] * 8 for i in range(0, 30, 2)]]
    opts = ExampleOptions(seq_len=64, whole_word_mask=True, mask_token_rate=1.0,
                          random_token_rate=0.0, dupe_factor=1)
    instances = create_instances(docs, vocab, opts, random.Random(3), MaskingCounts())
    specials = (vocab.cls_id, vocab.sep_id)
    for inst in instances:
        tokens = list(inst.tokens)
        for p, label in zip(inst.masked_positions, inst.masked_labels, strict=True):
            tokens[p] = label
        picked = set(inst.masked_positions)
        for p in picked:
            # a masked piece's whole word is masked: its neighbours inside the word too
            if vocab.is_continuation[tokens[p]] and tokens[p - 1] not in specials:
                assert p - 1 in picked
            if p + 1 < len(tokens) and vocab.is_continuation[tokens[p + 1]]:
                assert p + 1 in picked
    assert sum(len(i.masked_positions) for i in instances) > 0


@pytest.mark.parametrize("corpus, message", [
    ("missing.txt", "file not found"),
    ("folder", "is a directory"),
    ("empty.txt", "no documents left"),
])
def test_unusable_input_exits_2_with_the_file_named_and_leaves_no_output(
        tmp_path, vocab_dir, capsys, corpus, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.txt").write_text("\n\n")
    out = tmp_path / "out"
    rc = main(["data", "pretrain", "--corpus", str(tmp_path / corpus), "--tokenizer",
               str(vocab_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_bad_records_are_skipped_counted_and_reported(tmp_path, vocab_dir, data_dir, capsys):
    lines = (data_dir / "sst2" / "dev.tsv").read_bytes().splitlines(keepends=True)
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("wb") as f:
        for i, line in enumerate(lines[1:301]):
            text = line.split(b"\t")[0].decode()
            f.write(json.dumps({"text": text + " " + text}).encode() + b"\n")
            if i == 10:
                f.write(b"{not json\n")
            if i == 20:
                f.write(b'{"text": "bad \xff utf8"}\n')
    out = tmp_path / "d"
    rc = main(["data", "pretrain", "--corpus", str(corpus), "--tokenizer", str(vocab_dir),
               "--out", str(out), "--dupe-factor", "1", "--seq-len", "64"])
    assert rc == 0
    assert json.loads((out / "stats.json").read_text())["bad_records"] == 2
    err = capsys.readouterr().err
    assert f"{corpus}:12: not valid JSON" in err and f"{corpus}:23: invalid UTF-8" in err


def test_existing_output_is_refused_not_overwritten(tmp_path, vocab_dir, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a first document long enough\n\na second one that is long too\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = main(["data", "pretrain", "--corpus", str(corpus), "--tokenizer", str(vocab_dir),
               "--out", str(out)])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
