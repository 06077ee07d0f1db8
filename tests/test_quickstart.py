"""`tfllm quickstart --tiny` runs the whole chain end to end on the real data."""

from __future__ import annotations

import json

from tfllm.cli import main


def test_tiny_quickstart_runs_every_stage_and_ends_with_a_served_prediction(tmp_path, capsys):
    rc = main(["quickstart", "--tiny", "--out", str(tmp_path / "qs")])
    out = capsys.readouterr().out
    assert rc == 0
    for stage in ("== vocab", "== pretraining data", "== pretrain (tiny)",
                  "== fine-tune (SST-2 slice)", "== export (gated)", "== serve + one request",
                  "== summary"):
        assert stage in out, stage
    assert "served: 'a gripping" in out and "probabilities" in out
    report = json.loads((tmp_path / "qs" / "models" / "sst2" / "1" / "export_report.json")
                        .read_text())
    assert report["passed"] and len(report["artifacts"]) == 3
