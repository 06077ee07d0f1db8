"""`tfllm monitor` on streams built from real Financial PhraseBank sentences."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tfllm.cli import main
from tfllm.data.tasks import read_examples, stratified_split

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def held_out(data_dir) -> dict[str, list[str]]:
    """The 20% of FPB the fixture model never trained on, by label."""
    examples = read_examples(data_dir / "financial_phrasebank" / "sentences_allagree.tsv",
                             text_column="sentence", label_column="label")
    _, held = stratified_split(examples, 0.2, 42)
    by_label: dict[str, list[str]] = {}
    for e in held:
        by_label.setdefault(e.label, []).append(e.text)
    return by_label


def write_stream(path: Path, by_label: dict, minutes: int, burst_at: int | None,
                 seed: int = 7, bad_lines: dict[int, str] | None = None) -> None:
    """One text a minute; negative share 12% (36% from `burst_at` on: tripled)."""
    rng = random.Random(seed)
    lines = []
    for minute in range(minutes):
        share = 0.36 if burst_at is not None and minute >= burst_at else 0.12
        if rng.random() < share:
            label = "negative"
        else:
            label = "neutral" if rng.random() < 0.7 else "positive"
        time = (START + timedelta(minutes=minute)).isoformat()
        lines.append(json.dumps({"time": time, "text": rng.choice(by_label[label])}))
        if bad_lines and len(lines) in bad_lines:
            lines.append(bad_lines[len(lines)])
    path.write_text("\n".join(lines) + "\n")


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


MONITOR = ["--window", "2h", "--baseline", "8h", "--threshold", "2", "--z", "3",
           "--min-count", "40", "--cooldown", "3h"]


def test_a_tripled_negative_share_alerts_within_one_window_and_the_webhook_gets_the_same(
        tmp_path, fpb_repo, held_out, capsys):
    stream = tmp_path / "news.jsonl"
    burst = 10 * 60
    write_stream(stream, held_out, 12 * 60, burst_at=burst,
                 bad_lines={5: "{not json", 50: json.dumps({"time": "yesterday", "text": "x"}),
                            300: json.dumps({"time": START.isoformat()})})
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rc = main(["monitor", "--input", str(stream), "--model", str(fpb_repo), "--alerts",
                   str(tmp_path / "alerts.jsonl"), "--plot", str(tmp_path / "timeline.png"),
                   "--webhook", f"http://127.0.0.1:{server.server_port}/alerts", *MONITOR])
    finally:
        server.shutdown()
    assert rc == 0
    err = capsys.readouterr().err
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts, err
    burst_start = (START + timedelta(minutes=burst)).timestamp()
    assert all(a["time"] >= burst_start for a in alerts)  # nothing before the burst
    assert alerts[0]["time"] - burst_start <= 2 * 3600  # within one window
    assert alerts[0]["entity"] == "*" and alerts[0]["ratio"] >= 2
    assert Receiver.received == alerts
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["malformed"] == 3 and summary["records"] == 12 * 60
    for line, reason in ((6, "not valid JSON"), (51, "bad time 'yesterday'"),
                         (301, "no text in field 'text'")):
        assert f"{stream}:{line}: {reason}" in err
    assert (tmp_path / "timeline.png").stat().st_size > 10_000


def test_the_stable_stream_alone_raises_no_alert(tmp_path, fpb_repo, held_out, capsys):
    stream = tmp_path / "stable.jsonl"
    write_stream(stream, held_out, 12 * 60, burst_at=None)
    assert main(["monitor", "--input", str(stream), "--model", str(fpb_repo),
                 "--alerts", str(tmp_path / "alerts.jsonl"), *MONITOR]) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["alerts"] == 0 and summary["records"] == 12 * 60
    assert not (tmp_path / "alerts.jsonl").read_text()


def test_per_ticker_windows_alert_for_the_ticker_that_surges(tmp_path, fpb_repo, held_out,
                                                             capsys):
    rng = random.Random(3)
    lines = []
    for minute in range(12 * 60):
        for ticker in ("NOKIA", "FSKRS"):
            surge = ticker == "FSKRS" and minute >= 10 * 60
            negative = rng.random() < (0.45 if surge else 0.1)
            label = "negative" if negative else ("neutral" if rng.random() < 0.7 else "positive")
            lines.append(json.dumps({"time": (START + timedelta(minutes=minute)).isoformat(),
                                     "ticker": ticker, "text": rng.choice(held_out[label])}))
    stream = tmp_path / "tickers.jsonl"
    stream.write_text("\n".join(lines) + "\n")
    assert main(["monitor", "--input", str(stream), "--model", str(fpb_repo), *MONITOR]) == 0
    alerts = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert "FSKRS" in {a["entity"] for a in alerts}
    assert "NOKIA" not in {a["entity"] for a in alerts}


def test_stdin_mode_runs_without_tensorflow_and_a_followed_folder_picks_up_new_files(
        tmp_path, fpb_repo, held_out):
    stream = tmp_path / "news.jsonl"
    write_stream(stream, held_out, 30, burst_at=None)
    code = ("import sys; from tfllm.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "monitor", "--input", "-", "--model",
                           str(fpb_repo)], input=stream.read_text(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1])["records"] == 30

    from tfllm.apps.classify import load_classifier
    from tfllm.apps.monitor import LineSource, MonitorConfig, run_monitor

    folder = tmp_path / "feed"
    folder.mkdir()
    (folder / "a.jsonl").write_text(stream.read_text())
    source = LineSource(str(folder), follow=True, poll=0.1, idle_exit=1.5)
    result = {}
    worker = threading.Thread(target=lambda: result.update(run_monitor(
        source, load_classifier(str(fpb_repo)), MonitorConfig())))
    worker.start()
    later = [json.loads(line) for line in stream.read_text().splitlines()]
    for row in later:
        row["time"] = (datetime.fromisoformat(row["time"]) + timedelta(hours=1)).isoformat()
    (folder / "b.jsonl").write_text("\n".join(json.dumps(r) for r in later) + "\n")
    worker.join(timeout=60)
    assert not worker.is_alive() and result["records"] == 60
