"""`tfllm monitor`: financial-news sentiment over a stream of timestamped texts, with alerts
when the negative share surges over its baseline.

Read top to bottom: lines come from a file, stdin or a tailed directory -> each line is
parsed into (time, text, entity) or counted as malformed with its line number -> texts are
classified in batches (local ONNX artifact or a serving URL) -> every record updates a
sliding window per entity (and "*" for the whole stream) -> an alert fires when, in the
last `window`, at least `min_count` texts were seen, the negative share is at least
`threshold` x the share over the `baseline` period before the window, and the binomial
z-score of that gap is at least `z`; then the entity is quiet for `cooldown`. Alerts go to
stdout, a JSONL file and optionally a webhook; a PNG timeline is written at the end (and on
SIGUSR1).

Example:

    tfllm monitor --input news.jsonl --model repo/fpb --alerts alerts.jsonl --plot timeline.png
    tail -f feed.jsonl | tfllm monitor --input - --serving-url http://127.0.0.1:8501/v1/models/fpb
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import select
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tfllm.atomic import atomic_write_bytes
from tfllm.errors import InputError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | float) -> float:
    """Seconds from `90`, `30s`, `15m`, `2h` or `1d`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not match:
        raise InputError(f"duration {value!r}: use a number with s, m, h or d (e.g. 15m)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def parse_time(value) -> float:
    """Epoch seconds from an ISO 8601 string (naive = UTC) or a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass
class MonitorConfig:
    window: float = 3600.0  # seconds of recent texts judged
    baseline: float = 6 * 3600.0  # seconds before the window that set the expected share
    threshold: float = 2.0  # window share >= threshold x baseline share
    z: float = 3.0  # and binomial z-score >= z
    min_count: int = 30  # texts needed in the window and in the baseline
    cooldown: float = 3600.0  # seconds of quiet per entity after an alert
    negative_label: str = "negative"
    text_field: str = "text"
    time_field: str = "time"
    entity_field: str = "entity"  # also read from `ticker` when absent


@dataclass
class Record:
    time: float
    text: str
    entity: str | None
    where: str  # file:line


@dataclass
class Counts:
    records: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    def bad(self, where: str, reason: str) -> None:
        self.malformed += 1
        message = f"{where}: {reason}"
        if len(self.malformed_examples) < 20:
            self.malformed_examples.append(message)
        print(f"skipped {message}", file=sys.stderr)


class RollingShare:
    """Negative flags of one entity: the last `window` seconds and the `baseline` before it."""

    def __init__(self, window: float, baseline: float):
        self.window, self.baseline = window, baseline
        self.recent: deque[tuple[float, bool]] = deque()
        self.older: deque[tuple[float, bool]] = deque()
        self.recent_negative = self.older_negative = 0
        self.last_alert = -math.inf
        self.last_time = -math.inf

    def add(self, t: float, negative: bool) -> None:
        self.last_time = t
        self.recent.append((t, negative))
        self.recent_negative += negative
        while self.recent and self.recent[0][0] <= t - self.window:
            moved = self.recent.popleft()
            self.recent_negative -= moved[1]
            self.older.append(moved)
            self.older_negative += moved[1]
        while self.older and self.older[0][0] <= t - self.window - self.baseline:
            self.older_negative -= self.older.popleft()[1]


class SentimentMonitor:
    """Feeds classified records into per-entity rolling shares; returns alerts as dicts.

    >>> m = SentimentMonitor(MonitorConfig(window=10, baseline=100, min_count=5, z=2,
    ...                                    cooldown=50), ["negative", "neutral"])
    >>> alerts = [a for t in range(100) for a in m.observe(Record(float(t), "", None, "-"),
    ...           "negative" if (t % 10 == 0 or t >= 90) else "neutral")]
    >>> [(a["entity"], a["time"], a["negative_share"]) for a in alerts]  # 10% -> 40%
    [('*', 93.0, 0.4)]
    """

    def __init__(self, cfg: MonitorConfig, labels: list[str]):
        if cfg.negative_label not in labels:
            raise InputError(f"--negative-label {cfg.negative_label!r} is not a model label "
                             f"({', '.join(labels)})")
        self.cfg = cfg
        self.streams: dict[str, RollingShare] = {}

    def observe(self, record: Record, label: str) -> list[dict]:
        negative = label == self.cfg.negative_label
        alerts = []
        for entity in ("*", record.entity) if record.entity else ("*",):
            stream = self.streams.setdefault(entity, RollingShare(self.cfg.window,
                                                                  self.cfg.baseline))
            stream.add(record.time, negative)
            alert = self._judge(entity, stream, record.time)
            if alert:
                alerts.append(alert)
        return alerts

    def _judge(self, entity: str, s: RollingShare, t: float) -> dict | None:
        cfg = self.cfg
        n, m = len(s.recent), len(s.older)
        if n < cfg.min_count or m < cfg.min_count or t - s.last_alert < cfg.cooldown:
            return None
        share = s.recent_negative / n
        # Laplace-smoothed baseline: a quiet history with no negatives is not a zero share.
        base = (s.older_negative + 1) / (m + 2)
        z = (share - base) / math.sqrt(base * (1 - base) / n)
        if share < cfg.threshold * base or z < cfg.z:
            return None
        s.last_alert = t
        return {"time": t, "time_iso": datetime.fromtimestamp(t, UTC).isoformat(),
                "entity": entity, "negative_share": round(share, 4),
                "baseline_share": round(base, 4), "ratio": round(share / base, 2),
                "z": round(z, 2), "window_count": n, "baseline_count": m,
                "window_seconds": cfg.window}


# ---- input -------------------------------------------------------------------------------

def _parse_line(raw: str, kind: str, header: list[str] | None, cfg: MonitorConfig,
                where: str, counts: Counts) -> Record | None:
    if kind == "jsonl":
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            counts.bad(where, f"not valid JSON ({err.msg})")
            return None
        if not isinstance(obj, dict):
            counts.bad(where, "not a JSON object")
            return None
    else:
        row = next(csv.reader(io.StringIO(raw)), [])
        if header is None or len(row) != len(header):
            counts.bad(where, f"expected {len(header or [])} CSV fields, found {len(row)}")
            return None
        obj = dict(zip(header, row, strict=True))
    text = obj.get(cfg.text_field)
    if not isinstance(text, str) or not text.strip():
        counts.bad(where, f"no text in field {cfg.text_field!r}")
        return None
    if cfg.time_field not in obj:
        counts.bad(where, f"no time in field {cfg.time_field!r}")
        return None
    try:
        t = parse_time(obj[cfg.time_field])
    except (ValueError, OverflowError):
        counts.bad(where, f"bad time {obj[cfg.time_field]!r} (ISO 8601 or epoch seconds)")
        return None
    entity = obj.get(cfg.entity_field, obj.get("ticker"))
    return Record(t, text, str(entity) if entity not in (None, "") else None, where)


class LineSource:
    """Lines of a file, stdin or a directory (files in name order, then new lines/files).

    Yields (where, text) and `None` whenever nothing new is available, so the caller can
    flush a partial batch; stops at the end unless `follow`, then after `idle_exit` seconds
    without new lines (0 = never)."""

    def __init__(self, spec: str, follow: bool = False, poll: float = 0.5,
                 idle_exit: float = 0.0):
        self.spec, self.follow, self.poll, self.idle_exit = spec, follow, poll, idle_exit
        self.offsets: dict[Path, tuple[int, int]] = {}  # path -> (byte offset, line number)
        if spec != "-" and not Path(spec).exists():
            raise InputError(f"--input {spec}: no such file or directory")

    def kind(self, path: Path | None, fmt: str | None) -> str:
        if fmt:
            return fmt
        if path is not None and path.suffix.lower() == ".csv":
            return "csv"
        return "jsonl"

    def _files(self) -> list[Path]:
        root = Path(self.spec)
        if root.is_dir():
            return sorted(p for p in root.iterdir()
                          if p.is_file() and p.suffix.lower() in (".jsonl", ".json", ".csv"))
        return [root]

    def _read_new(self, path: Path) -> Iterator[tuple[Path, int, str]]:
        offset, number = self.offsets.get(path, (0, 0))
        with path.open("rb") as f:
            f.seek(offset)
            while True:
                raw = f.readline()
                if not raw or (self.follow and not raw.endswith(b"\n")):
                    break  # a partial last line: wait for the writer to finish it
                offset += len(raw)
                number += 1
                self.offsets[path] = (offset, number)
                yield path, number, raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def __iter__(self) -> Iterator[tuple[Path | None, int, str] | None]:
        if self.spec == "-":
            for number, raw in enumerate(sys.stdin, start=1):
                yield None, number, raw.rstrip("\r\n")
                if not _more_waiting(sys.stdin):
                    yield None  # a live pipe went quiet: classify what is pending now
            return
        idle_since = time.monotonic()
        while True:
            got = False
            for path in self._files():
                for item in self._read_new(path):
                    got = True
                    yield item
            yield None
            if not self.follow:
                return
            if got:
                idle_since = time.monotonic()
            elif self.idle_exit and time.monotonic() - idle_since >= self.idle_exit:
                return
            time.sleep(self.poll)


def _more_waiting(stream) -> bool:
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


# ---- output ------------------------------------------------------------------------------

class AlertSink:
    """Alerts to stdout, an append-only JSONL file and an optional webhook (POST JSON)."""

    def __init__(self, path: str | None, webhook: str | None, timeout: float = 5.0):
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.webhook, self.timeout = webhook, timeout
        self.webhook_errors = 0

    def emit(self, alert: dict) -> None:
        line = json.dumps(alert, ensure_ascii=False)
        print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()
        if self.webhook:
            request = urllib.request.Request(self.webhook, data=line.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=self.timeout).close()
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                # A down receiver must not stop monitoring: count, say so, go on.
                self.webhook_errors += 1
                print(f"webhook {self.webhook}: {err}", file=sys.stderr)

    def close(self) -> None:
        if self.file:
            self.file.close()


def plot_timeline(path: str | Path, history: list[tuple[float, str]], labels: list[str],
                  alerts: list[dict], bucket: float) -> None:
    """Share of each label per `bucket` seconds, with the alerts as vertical markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    start = history[0][0]
    buckets: dict[int, dict[str, int]] = {}
    for t, label in history:
        counts = buckets.setdefault(int((t - start) // bucket), {})
        counts[label] = counts.get(label, 0) + 1
    keys = sorted(buckets)
    x = [datetime.fromtimestamp(start + k * bucket, UTC) for k in keys]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for label in labels:
        ax.plot(x, [buckets[k].get(label, 0) / sum(buckets[k].values()) for k in keys],
                label=label, marker=".")
    for i, alert in enumerate(alerts):
        ax.axvline(datetime.fromtimestamp(alert["time"], UTC), color="red",
                   linestyle="--", alpha=0.7, label="alert" if i == 0 else None)
    ax.set_ylabel("share of texts")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


# ---- main path ---------------------------------------------------------------------------

def run_monitor(source: LineSource, classifier, cfg: MonitorConfig, fmt: str | None = None,
                alerts_path: str | None = None, webhook: str | None = None,
                plot: str | None = None, batch_size: int = 32) -> dict:
    """Process the whole stream; returns the summary (also printed to stderr)."""
    monitor = SentimentMonitor(cfg, classifier.labels)
    sink = AlertSink(alerts_path, webhook)
    counts, alerts, history = Counts(), [], []
    headers: dict[Path | None, list[str]] = {}
    pending: list[Record] = []
    plot_now = {"flag": False}
    if plot and hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda *_: plot_now.update(flag=True))

    def flush() -> None:
        if not pending:
            return
        probabilities = classifier.predict([r.text for r in pending])
        for record, p in zip(pending, probabilities, strict=True):
            label = classifier.labels[int(p.argmax())]
            history.append((record.time, label))
            for alert in monitor.observe(record, label):
                alert["text"] = record.text
                alert["where"] = record.where
                alerts.append(alert)
                sink.emit(alert)
        pending.clear()

    last_time: dict[str | None, float] = {}
    try:
        for item in source:
            if item is None:
                flush()
            else:
                path, number, raw = item
                where = f"{path if path is not None else '<stdin>'}:{number}"
                if not raw.strip():
                    continue
                kind = source.kind(path, fmt)
                if kind == "csv" and path not in headers:
                    headers[path] = next(csv.reader(io.StringIO(raw)), [])
                    continue
                record = _parse_line(raw, kind, headers.get(path), cfg, where, counts)
                if record is None:
                    continue
                if record.time < last_time.get(record.entity, -math.inf):
                    counts.bad(where, "time earlier than the previous text of this entity")
                    continue
                last_time[record.entity] = record.time
                counts.records += 1
                pending.append(record)
                if len(pending) >= batch_size:
                    flush()
            if plot_now["flag"]:
                flush()
                plot_timeline(plot, history, classifier.labels, alerts, cfg.window)
                plot_now["flag"] = False
        flush()
    finally:
        sink.close()
    if plot:
        plot_timeline(plot, history, classifier.labels, alerts, cfg.window)
    summary = {"records": counts.records, "malformed": counts.malformed,
               "malformed_examples": counts.malformed_examples, "alerts": len(alerts),
               "webhook_errors": sink.webhook_errors, "model": classifier.source,
               "config": asdict(cfg)}
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}), file=sys.stderr)
    return summary
