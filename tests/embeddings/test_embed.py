"""`tfllm embed` with the real all-MiniLM-L6-v2: the published STS-B number, rows in input
order, and bad input refused with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfllm.cli import main
from tfllm.embeddings.embed import embed_texts, load_embedder
from tfllm.embeddings.similarity import correlations, read_stsb


@pytest.fixture(scope="module")
def minilm_embedder(minilm_dir):
    return load_embedder(str(minilm_dir))


def test_zero_shot_minilm_matches_the_published_stsb_test_spearman(minilm_embedder, data_dir):
    model, tokenizer, max_len = minilm_embedder
    assert max_len == 256  # sentence-transformers' max_seq_length for this checkpoint
    pairs = read_stsb(data_dir / "stsb" / "sts-test.csv")
    assert len(pairs.scores) == 1379
    scores = correlations(embed_texts(model, tokenizer, pairs.first, max_len),
                          embed_texts(model, tokenizer, pairs.second, max_len), pairs.scores)
    assert abs(scores["spearman"] - 82.03) <= 0.3, scores  # MTEB: 82.03 (Pearson 82.74)


def test_embed_writes_unit_rows_in_input_order(tmp_path, minilm_dir, minilm_embedder,
                                               sst2_dev_sentences):
    texts = sst2_dev_sentences[:40]  # mixed lengths: batches are sorted by length inside
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "body": t}) + "\n"
                              for i, t in enumerate(texts)))
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", str(minilm_dir), "--input", str(source),
                 "--text-column", "body", "--out", str(out), "--batch-size", "8"]) == 0
    rows = np.load(out)
    assert rows.shape == (40, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    model, tokenizer, max_len = minilm_embedder
    one_by_one = np.concatenate([embed_texts(model, tokenizer, [t], max_len) for t in texts[:5]])
    np.testing.assert_allclose(rows[:5], one_by_one, atol=1e-5)


@pytest.mark.parametrize("case,content,message", [
    ("empty_text", "id\ttext\n1\tgood film\n2\t  \n3\tbad film\n", "texts.tsv:3: empty text"),
    ("bad_json", '{"text": "fine"}\nnot json\n', "texts.jsonl:2: not valid JSON"),
    ("missing_column", "sentence\ngood film\n", "no column 'body'"),
])
def test_bad_input_exits_2_naming_file_and_line_and_writes_nothing(tmp_path, minilm_dir, capsys,
                                                                   case, content, message):
    name = "texts.jsonl" if case == "bad_json" else "texts.tsv"
    (tmp_path / name).write_text(content)
    column = ["--text-column", "body"] if case == "missing_column" else []
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / name),
                 *column, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.npy*"))


def test_a_checkpoint_asking_for_cls_pooling_is_refused(tmp_path, minilm_dir, capsys):
    folder = tmp_path / "cls-model"
    folder.mkdir()
    for item in minilm_dir.iterdir():
        if item.name != "1_Pooling":
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (tmp_path / "t.txt").write_text("a film\n")
    assert main(["embed", "--model", str(folder), "--input", str(tmp_path / "t.txt"),
                 "--out", str(tmp_path / "e.npy")]) == 2
    assert "asks for cls pooling" in capsys.readouterr().err
