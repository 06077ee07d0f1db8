"""Continual learning: every method of `tfllm continual` on the shipped protocols, in one run.

    .venv/bin/python bench/continual.py --out bench/runs/continual [--rows sentiment/naive,...]

Every row is one `tfllm continual` command (printed and recorded) from all-MiniLM-L6-v2 with
the protocol's own recipe, fixed in advance; rows that differ only in a penalty strength are
compared on the eval splits (10% of each task's train), never on the test sets. Finished
runs are kept, so the script resumes. Results: `bench/results/continual.json` and the
"Continual learning" table in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import REPO, machine, markdown_table, tree_state, write_results  # noqa: E402

# name -> extra flags; the name is PROTOCOL/METHOD[-variant]
ROWS: dict[str, list[str]] = {
    "sentiment/naive": [], "sentiment/joint": [], "sentiment/replay": [],
    "sentiment/l2sp": [], "sentiment/ewc": [], "sentiment/adapters": [],
    "banking77/naive": [], "banking77/joint": [], "banking77/replay": [],
    "banking77/ewc": [], "banking77/l2sp": [],
    # the replay fixes for a growing head, compared on the eval splits
    "banking77/replay-balanced": ["--set", "method.balanced_replay=true"],
    "banking77/replay-aligned": ["--set", "method.align_head=true"],
    "banking77/replay-balanced-aligned": ["--set", "method.balanced_replay=true",
                                          "--set", "method.align_head=true"],
    # replay + Learning without Forgetting (alpha 0.5 = equal soft and hard terms, T 2: the
    # LwF paper's settings, fixed in advance)
    "banking77/replay-lwf": ["--set", "method.distill_old=0.5"],
}


def command(name: str, out: Path, minilm: str) -> list[str]:
    protocol, variant = name.split("/")
    method = variant.split("-")[0]
    return ["tfllm", "continual", "--config", f"configs/continual/{protocol}.yaml",
            "--init", minilm, "--out", str(out / protocol / variant), "--method", method,
            *ROWS[name]]


def train(names: list[str], out: Path, minilm: str) -> None:
    for name in names:
        run = out / name
        if (run / "continual.json").is_file():
            continue
        cmd = command(name, out, minilm)
        print("+", shlex.join(cmd), flush=True)
        run.mkdir(parents=True, exist_ok=True)
        (run.parent / f"{run.name}.provenance.json").write_text(json.dumps(
            {**tree_state(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        cmd[0] = str(Path(sys.executable).parent / "tfllm")
        started = time.time()
        subprocess.run(cmd, cwd=REPO, check=True)
        (run.parent / f"{run.name}.seconds").write_text(f"{time.time() - started:.0f}\n")


def pts(value: float | None, sign: bool = False) -> str:
    return "—" if value is None else (f"{value * 100:+.2f}" if sign else f"{value * 100:.2f}")


def table(names: list[str], out: Path) -> tuple[str, dict]:
    rows, data = [], {}
    for name in names:
        path = out / name / "continual.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        provenance = json.loads((out / f"{name}.provenance.json").read_text())
        joint = out / name.split("/")[0] / "joint" / "continual.json"
        joint_acc = (json.loads(joint.read_text())["average_accuracy"]
                     if joint.is_file() else None)
        data[name] = {k: report[k] for k in ("R", "average_accuracy", "bwt", "forgetting",
                                             "fwt", "baseline", "R_eval",
                                             "average_accuracy_eval", "train_seconds",
                                             "trainable_params", "total_params",
                                             "replayed_share")}
        data[name].update(provenance=provenance, command=shlex.join(
            command(name, Path("RUNS"), "MINILM")))
        rows.append([
            name, pts(report["average_accuracy"]), pts(report["average_accuracy_eval"]),
            pts(report["bwt"], True), pts(report["forgetting"]), pts(report["fwt"], True),
            "—" if joint_acc is None else f"{report['average_accuracy'] / joint_acc:.3f}",
            f"{report['trainable_params'] / report['total_params']:.1%}",
            f"{report['train_seconds'] / 60:.1f}", provenance["commit"]])
    header = ["protocol/method", "avg test acc %", "avg eval acc %", "BWT (pts)",
              "forgetting (pts)", "FWT (pts)", "avg acc / joint", "trainable",
              "train min", "commit"]
    return markdown_table(header, rows), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/runs/continual")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--table-only", action="store_true", help="no training")
    args = parser.parse_args()
    from tfllm.models.checkpoints import minilm_dir

    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown} (choose from {', '.join(ROWS)})")
    out = Path(args.out)
    if not args.table_only:
        train(names, out, str(minilm_dir()))
    text, data = table(list(ROWS), out)
    notes = (
        "R[i][j] = test accuracy on task j after training task i; avg acc = mean of the last "
        "row; BWT = mean over j < T-1 of R[T-1][j] - R[j][j]; forgetting = mean over j < T-1 "
        "of max over earlier rows - R[T-1][j]; FWT = mean over j > 0 of R[j-1][j] - the "
        "starting model's accuracy on j (its untrained head). `joint` trains every task at "
        "once (one row: BWT/forgetting/FWT do not apply). Eval = 10% of each task's train, "
        "held out (stratified, seed 42): what recipes are compared on. Protocols and recipes: "
        "configs/continual/sentiment.yaml (SST-2 2,000 rows -> IMDB 1,000 reviews -> "
        "Financial PhraseBank positive/negative, one binary head; 2 epochs a task, lr 5e-5, "
        "batch 16) and configs/continual/banking77.yaml (7 tasks of 11 intents, head grows, "
        "no task id at test; 3 epochs a task, lr 1e-4, batch 32); replay keeps 5% of each "
        "past task's training rows (stratified); l2sp/ewc penalty lambda 1.0 (EWC Fisher "
        "normalised to mean 1, 256 rows a task). Recipes fixed in advance.\n\n"
        "`train min` is the fit wall time on a 2-core machine that also ran tests during some "
        "rows: not a speed measurement.\n\n"
        f"Rows not run yet: {', '.join(n for n in ROWS if n not in data) or 'none'}.\n\n"
        "Commands (RUNS = --out, MINILM = the checkpoint folder): one per row, in "
        "`bench/results/continual.json`.\n")
    write_results("continual", "Continual learning (sentiment, BANKING77)",
                  {"rows": data, "host": machine()["cpu"]}, text, notes)
    print(text)


if __name__ == "__main__":
    main()
