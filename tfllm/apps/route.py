"""`tfllm route`: customer-service intent routing with an intent classifier (BANKING77).

A YAML route table maps queues to intents (`configs/route/banking77.yaml`); intents it
does not list go to `default`, and any message whose top intent is below `threshold`
confidence goes to `human_queue`. Batch mode reads a file and writes JSONL (intent,
confidence, route); with labelled input it also reports routing accuracy and the human
share at the threshold, plus a threshold sweep (JSON + PNG). Server mode answers
`POST /route` on 127.0.0.1.

Example:

    tfllm route --model repo/banking77 --routes configs/route/banking77.yaml \\
        --input ../shared/data/banking77/test.csv --out routed.jsonl --report route-report
    tfllm route --model repo/banking77 --routes configs/route/banking77.yaml --serve --port 8600
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from tfllm.atomic import atomic_write_bytes, atomic_write_text
from tfllm.errors import InputError


@dataclass
class RouteTable:
    """Where each intent goes, and when a person should look instead.

    >>> t = RouteTable({"cards": ["card_arrival"]}, default="general", human_queue="human",
    ...                threshold=0.5)
    >>> t.route("card_arrival", 0.9), t.route("exchange_rate", 0.9), t.route("card_arrival", 0.3)
    ('cards', 'general', 'human')
    """

    queues: dict[str, list[str]]
    default: str = "general-support"
    human_queue: str = "human-review"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        self.by_intent: dict[str, str] = {}
        for queue, intents in self.queues.items():
            for intent in intents:
                if intent in self.by_intent:
                    raise InputError(f"route table: intent {intent!r} is in both "
                                     f"{self.by_intent[intent]!r} and {queue!r}")
                self.by_intent[intent] = queue

    def queue_of(self, intent: str) -> str:
        return self.by_intent.get(intent, self.default)

    def route(self, intent: str, confidence: float, threshold: float | None = None) -> str:
        limit = self.threshold if threshold is None else threshold
        return self.human_queue if confidence < limit else self.queue_of(intent)


def load_route_table(path: str | Path, labels: list[str], threshold: float | None = None
                     ) -> RouteTable:
    """Read and check a route table against the model's intents (unknown intent = error)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"--routes {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("queues"), dict):
        raise InputError(f"--routes {path}: expected a mapping with `queues: {{queue: [intent]}}`")
    unknown = sorted({k for k in data} - {"queues", "default", "human_queue", "threshold"})
    if unknown:
        raise InputError(f"--routes {path}: unknown key {unknown[0]!r} "
                         "(queues, default, human_queue, threshold)")
    for queue, intents in data["queues"].items():
        if not isinstance(intents, list):
            raise InputError(f"--routes {path}: queue {queue!r} needs a list of intents")
        missing = [i for i in intents if i not in labels]
        if missing:
            raise InputError(f"--routes {path}: queue {queue!r}: intent {missing[0]!r} is not "
                             "one of the model's labels")
    table = RouteTable({str(q): [str(i) for i in v] for q, v in data["queues"].items()},
                       str(data.get("default", "general-support")),
                       str(data.get("human_queue", "human-review")),
                       float(data.get("threshold", 0.5)))
    if threshold is not None:
        table.threshold = threshold
    if not 0.0 <= table.threshold <= 1.0:
        raise InputError(f"route threshold must be in [0, 1], got {table.threshold}")
    return table


def route_texts(classifier, table: RouteTable, texts: list[str]) -> list[dict]:
    """Intent, confidence and route for each text."""
    probabilities = classifier.predict(texts)
    rows = []
    for text, p in zip(texts, probabilities, strict=True):
        best = int(p.argmax())
        intent, confidence = classifier.labels[best], float(p[best])
        route = table.route(intent, confidence)
        rows.append({"text": text, "intent": intent, "confidence": round(confidence, 6),
                     "route": route, "to_human": route == table.human_queue})
    return rows


def routing_report(rows: list[dict], truth: list[str], table: RouteTable) -> dict:
    """Accuracy of the routes at the table's threshold, and the sweep over thresholds."""
    confidence = np.array([r["confidence"] for r in rows])
    intent_ok = np.array([r["intent"] == t for r, t in zip(rows, truth, strict=True)])
    queue_ok = np.array([table.queue_of(r["intent"]) == table.queue_of(t)
                         for r, t in zip(rows, truth, strict=True)])

    def at(threshold: float) -> dict:
        auto = confidence >= threshold
        return {"threshold": round(threshold, 3), "human_share": float(1 - auto.mean()),
                "auto_route_accuracy": float(queue_ok[auto].mean()) if auto.any() else None,
                "auto_intent_accuracy": float(intent_ok[auto].mean()) if auto.any() else None}

    chosen = at(table.threshold)
    return {"messages": len(rows), "threshold": table.threshold,
            "intent_accuracy": float(intent_ok.mean()), "route_accuracy": float(queue_ok.mean()),
            **{k: v for k, v in chosen.items() if k != "threshold"},
            "sweep": [at(t) for t in np.linspace(0.0, 0.95, 20)]}


def plot_sweep(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = report["sweep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([s["threshold"] for s in sweep], [s["human_share"] for s in sweep], marker=".",
            label="share sent to humans")
    ax.plot([s["threshold"] for s in sweep], [s["auto_route_accuracy"] for s in sweep],
            marker=".", label="accuracy of automatic routes")
    ax.axvline(report["threshold"], color="grey", linestyle="--", label="chosen threshold")
    ax.set_xlabel("confidence threshold")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def read_messages(path: str, text_column: str | None, label_column: str | None
                  ) -> tuple[list[str], list[str] | None]:
    """Texts (and true intents when `label_column` is given) from csv/tsv/jsonl or plain text."""
    from tfllm.data.readers import ReadReport, detect_format, read_text
    from tfllm.data.tasks import read_examples

    kind = detect_format(path)
    if kind == "text":
        if label_column:
            raise InputError(f"--input {path}: plain text has no label column")
        return [d.text for d in read_text(path, ReadReport(), mode="lines")], None
    if label_column:
        examples = read_examples(path, text_column=text_column, label_column=label_column,
                                 report=ReadReport(strict=True))
        return [e.text for e in examples], [e.label for e in examples]
    examples = read_examples(path, text_column=text_column, label_column=text_column,
                             report=ReadReport(strict=True))
    return [e.text for e in examples], None


def route_file(classifier, table: RouteTable, input_path: str, out: str,
               text_column: str | None = None, label_column: str | None = None,
               report_dir: str | None = None) -> dict | None:
    """Batch mode: JSONL out (written whole, then renamed); the report when labelled."""
    texts, truth = read_messages(input_path, text_column, label_column)
    if not texts:
        raise InputError(f"--input {input_path}: no messages")
    if truth is not None:
        unknown = sorted(set(truth) - set(classifier.labels))
        if unknown:
            raise InputError(f"--input {input_path}: intent {unknown[0]!r} is not a model label")
    rows = route_texts(classifier, table, texts)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if truth is None:
        return None
    report = routing_report(rows, truth, table)
    report["model"] = classifier.source
    if report_dir:
        folder = Path(report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plot_sweep(folder / "threshold_sweep.png", report)
        atomic_write_text(folder / "route_report.json", json.dumps(report, indent=2) + "\n")
    return report


def build_app(classifier, table: RouteTable, max_texts: int = 64, max_body: int = 1 << 20):
    """Starlette app: POST /route {"texts": [...]} or {"text": "..."}; GET /healthz."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tfllm.apps.json_api import RequestError, parse_body, texts_from

    async def route(request: Request) -> JSONResponse:
        try:
            texts = texts_from(parse_body(await request.body(), max_body), "texts", "text",
                               max_texts)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        return JSONResponse({"routes": route_texts(classifier, table, texts)})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": classifier.source})

    return Starlette(routes=[Route("/route", route, methods=["POST"]),
                             Route("/healthz", healthz)])
