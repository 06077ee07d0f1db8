"""User feedback on served predictions (a tfllm extension beside the TF Serving API).

With `feedback.enabled`, every text prediction gets an id (`<request id>-<row>`, the request
id in the `X-Request-Id` response header; the TF Serving body is unchanged) and a line in
`feedback.log_dir/predictions.jsonl` (rotated by size; the text itself only with
`feedback.log_text`). `POST /v1/models/NAME:feedback` with `{"id": ..., "label": ...}` or
`{"text": ..., "label": ...}` appends one line to `feedback.log_dir/feedback.jsonl`, which
`tfllm continual --feedback` trains the next version from.

Each feedback line is one `os.write` on a file opened for appending, then fsync: a crash
leaves at most a torn last line, which `read_feedback` skips (and counts). Several workers
(`tfllm_serving.workers`) append to the one feedback file that way; each keeps its own
prediction log (`predictions.jsonl` for the first worker slot, `predictions-wK.jsonl` for
slot K, a slot held by a file lock while the worker lives), and a `:feedback` naming an id
that another worker answered finds it in that worker's log (which then needs `log_text`).

Example:

>>> import tempfile
>>> from tfllm_serving.feedback import FeedbackConfig, FeedbackStore, read_feedback
>>> store = FeedbackStore(FeedbackConfig(enabled=True, log_dir=tempfile.mkdtemp(),
...                                      log_text=True))
>>> ids = store.record_predictions("sst2", 1, ["a fine film"], ["positive"], "req1")
>>> ids
['req1-0']
>>> store.add_feedback("sst2", 1, ["negative", "positive"], {"id": "req1-0", "label": "negative"})
{'id': 'req1-0', 'label': 'negative', 'text': 'a fine film', 'predicted': 'positive'}
>>> [(r["text"], r["label"]) for r in read_feedback(store.feedback_path)[0]]
[('a fine film', 'negative')]
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInput, NotFound

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass
class FeedbackConfig:
    """Opt-in prediction log and feedback file."""

    enabled: bool = False
    log_dir: str = "feedback"
    log_text: bool = False  # keep the texts in predictions.jsonl (privacy: off by default)
    max_log_bytes: int = 64 << 20  # predictions.jsonl rotates at this size
    backup_count: int = 5
    remember_ids: int = 100_000  # recent prediction ids that :feedback can name


def request_id(header: str | None) -> str:
    """The client's `X-Request-Id` when it is a plain token, else a fresh one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


class FeedbackStore:
    """The prediction log, the ids it remembers, and the feedback file."""

    def __init__(self, config: FeedbackConfig, shared: bool = False) -> None:
        """`shared`: other worker processes use the same `log_dir`."""
        self.config, self.shared = config, shared
        folder = Path(config.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.feedback_path = folder / "feedback.jsonl"
        slot = self._claim_slot(folder) if shared else 0
        self.predictions_path = folder / ("predictions.jsonl" if slot == 0
                                          else f"predictions-w{slot}.jsonl")
        handler = logging.handlers.RotatingFileHandler(
            self.predictions_path, maxBytes=config.max_log_bytes,
            backupCount=config.backup_count, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        # A logger of its own (not under tfllm_serving): these lines are data, not server logs.
        self._log = logging.Logger(f"tfllm-predictions-{id(self)}")
        self._log.addHandler(handler)
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _claim_slot(self, folder: Path) -> int:
        """The lowest worker slot no live process holds (the lock goes with the process)."""
        slot = 0
        while True:
            fd = os.open(folder / f".worker-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                slot += 1
                continue
            self._slot_lock = fd  # held open for the life of the store
            return slot

    def record_predictions(self, model: str, version: int, texts: list[str],
                           predicted: list[str], request: str) -> list[str]:
        """Log one line per row and remember its id; returns the ids."""
        ids = [f"{request}-{row}" for row in range(len(texts))]
        now = time.time()
        with self._lock:
            for pid, text, label in zip(ids, texts, predicted, strict=True):
                entry = {"id": pid, "time": now, "model": model, "version": version,
                         "predicted": label}
                if self.config.log_text:
                    entry["text"] = text
                self._log.info(json.dumps(entry, ensure_ascii=False))
                self._recent[pid] = {**entry, "text": text}
                while len(self._recent) > self.config.remember_ids:
                    self._recent.popitem(last=False)
        return ids

    def add_feedback(self, model: str, version: int, labels: list[str], body: Any) -> dict:
        """Check a :feedback body and append it; 4xx errors name the field at fault."""
        if not isinstance(body, dict):
            raise InvalidInput("feedback body must be a JSON object with 'label' and 'id' or "
                               "'text'")
        unknown = sorted(set(body) - {"id", "text", "label"})
        if unknown:
            raise InvalidInput(f"feedback: unknown field {unknown[0]!r} (expected id or text, "
                               "and label)")
        label = body.get("label")
        if not isinstance(label, str) or label not in labels:
            raise InvalidInput(f"feedback.label must be one of the model's labels "
                               f"({', '.join(labels[:20])}), got {label!r}")
        if ("id" in body) == ("text" in body):
            raise InvalidInput("feedback needs exactly one of 'id' (a prediction id) or 'text'")
        if "id" in body:
            with self._lock:
                seen = self._recent.get(body["id"]) if isinstance(body["id"], str) else None
            if seen is None and self.shared and isinstance(body["id"], str):
                seen = self._logged_elsewhere(body["id"])
            if seen is None or seen["model"] != model:
                raise NotFound(f"feedback.id {body['id']!r}: no recent prediction of model "
                               f"{model!r} has this id")
            record = {"id": body["id"], "label": label, "text": seen["text"],
                      "predicted": seen["predicted"]}
            version = seen["version"]
        else:
            if not isinstance(body["text"], str) or not body["text"].strip():
                raise InvalidInput("feedback.text must be a non-empty string")
            record = {"label": label, "text": body["text"]}
        line = json.dumps({"time": time.time(), "model": model, "version": version, **record},
                          ensure_ascii=False) + "\n"
        self._append(line.encode("utf-8"))
        return record

    def _logged_elsewhere(self, pid: str) -> dict[str, Any] | None:
        """The prediction `pid` from another worker's current log (the newest line wins)."""
        needle = json.dumps(pid)
        for path in sorted(self.predictions_path.parent.glob("predictions*.jsonl")):
            if path == self.predictions_path:
                continue
            found = None
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if needle in line:
                        try:
                            entry = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if entry.get("id") == pid and "text" in entry:
                            found = entry
            if found is not None:
                return found
        return None

    def _append(self, data: bytes) -> None:
        with self._lock:
            fd = os.open(self.feedback_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)


def read_feedback(path: str | Path, model: str | None = None) -> tuple[list[dict], int]:
    """Feedback records (of `model`, or all) and the count of torn or unreadable lines
    skipped (a crash mid-write leaves at most one)."""
    records, skipped = [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line) if line.endswith("\n") else None
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or "label" not in record or "text" not in record:
                skipped += 1
                continue
            if model is None or record.get("model") == model:
                records.append(record)
    return records, skipped
