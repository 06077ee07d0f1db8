"""Task metrics (scikit-learn) and the PNG plots saved beside them.

Example:

>>> from tfllm.finetune.metrics import classification_metrics
>>> m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], ["neg", "pos"], quiet=True)
>>> m["accuracy"], m["confusion_matrix"]
(0.75, [[2, 0], [1, 1]])
>>> from tfllm.finetune.metrics import entity_metrics
>>> m = entity_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]], ["B-PER", "I-PER", "O"],
...                    quiet=True)
>>> m["entity_f1"], sorted(m["per_type"])
(0.0, ['PER'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], names: list[str],
                           quiet: bool = False) -> dict:
    """`accuracy`, `macro_f1`, `per_class` (precision/recall/f1/support), `confusion_matrix`."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    labels = list(range(len(names)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=names,
                                   output_dict=True, zero_division=0)
    if not quiet:
        print(classification_report(y_true, y_pred, labels=labels, target_names=names,
                                    digits=4, zero_division=0))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "per_class": {name: {"precision": report[name]["precision"],
                             "recall": report[name]["recall"], "f1": report[name]["f1-score"],
                             "support": int(report[name]["support"])} for name in names},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def entity_metrics(true_tags: list[list[str]], predicted_tags: list[list[str]],
                   names: list[str], quiet: bool = False) -> dict:
    """seqeval entity scores (`entity_f1`, `entity_precision`, `entity_recall`, `per_type`),
    word-level `accuracy` and the word-level tag `confusion_matrix`."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from sklearn.metrics import confusion_matrix

    report = classification_report(true_tags, predicted_tags, output_dict=True, zero_division=0)
    if not quiet:
        print(classification_report(true_tags, predicted_tags, digits=4, zero_division=0))
    flat_true = [t for row in true_tags for t in row]
    flat_pred = [t for row in predicted_tags for t in row]
    return {
        "entity_f1": float(f1_score(true_tags, predicted_tags, zero_division=0)),
        "entity_precision": float(precision_score(true_tags, predicted_tags, zero_division=0)),
        "entity_recall": float(recall_score(true_tags, predicted_tags, zero_division=0)),
        "per_type": {name: {"precision": v["precision"], "recall": v["recall"],
                            "f1": v["f1-score"], "support": int(v["support"])}
                     for name, v in report.items() if not name.endswith(" avg")},
        "accuracy": sum(a == b for a, b in zip(flat_true, flat_pred, strict=True))
        / max(1, len(flat_true)),
        "confusion_matrix": confusion_matrix(flat_true, flat_pred, labels=names).tolist(),
    }


def save_plots(out: Path, history: dict, matrix: list[list[int]], names: list[str]) -> None:
    """`training_curves.png` (loss/accuracy per epoch) and `confusion_matrix.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    second = "accuracy" if "accuracy" in history else "entity_f1"
    for ax, key in zip(axes, ("loss", second), strict=True):
        for prefix in ("", "val_"):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key],
                        marker="o", label=("eval " if prefix else "train ") + key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=100)
    plt.close(fig)

    size = max(4, min(16, len(names) * 0.25 + 3))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if len(names) <= 20:
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
