"""`tfllm batch` on Beam's DirectRunner: every good record answered exactly as `tfllm
predict` answers it from the same export, every bad one in the dead-letter output with its
file and line, embeddings equal to the export's."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")

from tfllm.batch.exported import ExportedModel  # noqa: E402
from tfllm.batch.pipeline import BatchConfig, run_batch  # noqa: E402
from tfllm.errors import InputError  # noqa: E402


def _read_lines(pattern: str) -> list[dict]:
    return [json.loads(line) for path in sorted(glob.glob(pattern))
            for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _shards(folder: Path, texts: list[str]) -> dict[tuple[str, int], str]:
    """Two JSONL shards, a TSV shard and a CSV shard with bad records; (file, line) -> text
    of every good record."""
    folder.mkdir()
    good: dict[tuple[str, int], str] = {}
    for k in range(2):
        path = folder / f"part-{k}.jsonl"
        chunk = texts[k * 20:(k + 1) * 20]
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
        good.update({(str(path), i + 1): t for i, t in enumerate(chunk)})
    tsv = folder / "part-2.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in texts[40:50]))
    good.update({(str(tsv), i + 2): t for i, t in enumerate(texts[40:50])})
    bad = folder / "part-3.jsonl"
    bad.write_bytes(
        json.dumps({"text": texts[50]}).encode() + b"\n"      # 1 good
        + b'{"text": "unterminated\n'                         # 2 malformed JSON
        + json.dumps({"body": "no text field"}).encode() + b"\n"  # 3 missing field
        + b'{"text": "caf\xe9 latin-1"}\n'                    # 4 invalid UTF-8
        + json.dumps({"text": "   "}).encode() + b"\n"        # 5 empty text
        + json.dumps({"text": texts[51]}).encode() + b"\n")   # 6 good
    good[(str(bad), 1)] = texts[50]
    good[(str(bad), 6)] = texts[51]
    return good


def test_beam_answers_equal_predicts_and_bad_records_land_in_the_dead_letter_with_file_line(
    tmp_path: Path, write_export, sentences: list[str],
) -> None:
    version = write_export(tmp_path / "repo", "sst2", 1)
    good = _shards(tmp_path / "in", sentences)
    out = tmp_path / "out" / "sst2"
    result = run_batch(BatchConfig(model=str(tmp_path / "repo" / "sst2"),
                                   inputs=str(tmp_path / "in" / "part-*"), output=str(out),
                                   batch_size=8))
    rows = {(r["file"], r["line"]): r for r in _read_lines(f"{out}-predictions-*.jsonl")}
    assert set(rows) == set(good)
    want = ExportedModel(version).rows(list(good.values()))
    for key, expected in zip(good, want, strict=True):
        assert rows[key]["label"] == expected["label"]
        np.testing.assert_allclose(list(rows[key]["probabilities"].values()),
                                   list(expected["probabilities"].values()), atol=2e-6)
    dead = sorted((d["line"], d["error"]) for d in _read_lines(f"{out}-dead-letter-*.jsonl"))
    assert [line for line, _ in dead] == [2, 3, 4, 5]
    assert all(d["file"] == str(tmp_path / "in" / "part-3.jsonl")
               for d in _read_lines(f"{out}-dead-letter-*.jsonl"))
    assert "UTF-8" in dead[2][1] and "empty" in dead[3][1] and "text" in dead[1][1]
    assert result == {"rows": len(good), "dead_letters": 4, "output": str(out)}


def test_embed_task_writes_npy_shards_equal_to_the_exports_embeddings(
    tmp_path: Path, write_export, sentences: list[str],
) -> None:
    version = write_export(tmp_path / "repo", "emb", 1, task="embedding")
    good = _shards(tmp_path / "in", sentences)
    out = tmp_path / "out" / "emb"
    result = run_batch(BatchConfig(model=str(version), inputs=str(tmp_path / "in" / "*"),
                                   output=str(out), task="embed"))
    got: dict[tuple[str, int], np.ndarray] = {}
    for keys in sorted(glob.glob(f"{out}-embeddings-*.jsonl")):
        rows = np.load(keys.removesuffix(".jsonl") + ".npy")
        lines = Path(keys).read_text().splitlines()
        assert rows.shape == (len(lines), 8) and rows.dtype == np.float32
        got.update({(k["file"], k["line"]): row
                    for k, row in zip(map(json.loads, lines), rows, strict=True)})
    assert set(got) == set(good) and result["rows"] == len(good)
    want = ExportedModel(version).embeddings(list(good.values()))
    np.testing.assert_allclose(np.stack([got[k] for k in good]), want, atol=1e-5)
    assert not list((tmp_path / "out").glob("*.tmp"))
    made = json.loads((tmp_path / "out" / "emb-embeddings.json").read_text())
    assert made["model"] == str(version) and len(made["fingerprint"]) == 64


def test_a_model_that_is_not_an_export_or_the_wrong_task_is_refused(
    tmp_path: Path, write_export,
) -> None:
    write_export(tmp_path / "repo", "sst2", 1)
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n')
    with pytest.raises(InputError, match="not an exported model"):
        run_batch(BatchConfig(model=str(tmp_path), inputs=str(tmp_path / "in.jsonl"),
                              output=str(tmp_path / "o")))
    with pytest.raises(InputError, match="use --task predict"):
        run_batch(BatchConfig(model=str(tmp_path / "repo" / "sst2"), task="embed",
                              inputs=str(tmp_path / "in.jsonl"), output=str(tmp_path / "o")))
    with pytest.raises(InputError, match="no files match"):
        run_batch(BatchConfig(model=str(tmp_path / "repo" / "sst2"),
                              inputs=str(tmp_path / "nothing-*.jsonl"),
                              output=str(tmp_path / "o")))
