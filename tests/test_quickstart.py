"""`tfllm quickstart --tiny` runs every stage that exists, end to end, on the real data."""

from __future__ import annotations

import json

from tfllm.cli import main


def test_tiny_quickstart_runs_every_stage_and_prints_the_summary(tmp_path, capsys):
    rc = main(["quickstart", "--tiny", "--out", str(tmp_path / "qs")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "== vocab" in out and "== pretraining data" in out and "== summary" in out
    stats = json.loads((tmp_path / "qs" / "pretrain-data" / "stats.json").read_text())
    assert stats["examples"] > 1000
    assert (tmp_path / "qs" / "vocab" / "tokenizer.json").is_file()
