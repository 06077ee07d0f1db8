"""What a continual run is scored by, from its accuracy matrix.

R[i][j] = accuracy on task j's test set after training on tasks 0..i; b[j] = the
starting model's accuracy on task j (its untrained head). With T tasks:

- average accuracy = mean_j R[T-1][j]  (the final model, every task)
- backward transfer (BWT) = mean_{j<T-1} R[T-1][j] - R[j][j]  (< 0: forgetting)
- forgetting = mean_{j<T-1} max_{l<T-1} R[l][j] - R[T-1][j]  (Chaudhry et al. 2018)
- forward transfer (FWT) = mean_{j>0} R[j-1][j] - b[j]  (Lopez-Paz & Ranzato 2017)

Example:

>>> from tfllm.continual.scores import continual_scores
>>> scores = continual_scores([[0.9, 0.5], [0.8, 0.95]], baseline=[0.5, 0.5])
>>> {k: round(v, 3) for k, v in scores.items() if k != "R"}
{'average_accuracy': 0.875, 'bwt': -0.1, 'forgetting': 0.1, 'fwt': 0.0}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def continual_scores(matrix: list[list[float]], baseline: list[float] | None = None) -> dict:
    """`R`, `average_accuracy`, `bwt`, `forgetting`, `fwt` (None where one task, or one
    row: a joint run)."""
    R = np.asarray(matrix, dtype=float)
    rows, tasks = R.shape
    scores = {"R": R.round(6).tolist(), "average_accuracy": float(R[-1].mean()),
              "bwt": None, "forgetting": None, "fwt": None}
    if rows != tasks or tasks < 2:
        return scores
    last = tasks - 1
    scores["bwt"] = float(np.mean([R[last, j] - R[j, j] for j in range(last)]))
    scores["forgetting"] = float(np.mean([R[:last, j].max() - R[last, j] for j in range(last)]))
    if baseline is not None:
        scores["fwt"] = float(np.mean([R[j - 1, j] - baseline[j] for j in range(1, tasks)]))
    return scores


def save_heatmap(path: Path, matrix: list[list[float]], names: list[str], title: str) -> None:
    """R as a heatmap with the accuracies written in (rows: after task i; columns: task j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R = np.asarray(matrix, dtype=float) * 100
    rows = names if len(R) == len(names) else ["joint"] * len(R)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 0.8 * len(R) + 1.8))
    ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for i in range(R.shape[0]):
        for j in range(R.shape[1]):
            ax.text(j, i, f"{R[i, j]:.1f}", ha="center", va="center",
                    color="white" if R[i, j] < 60 else "black", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(R)), [f"after {name}" for name in rows])
    ax.set_xlabel("test set")
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
