"""Fine-tuning quality from the real all-MiniLM-L6-v2 checkpoint on the shared datasets.

Each run is one `tfllm finetune` command (printed and recorded in the table); finished
runs (metrics.json present) are kept, so the script can be re-run to add runs. Results:
`bench/results/quality.json` and the "Fine-tuning quality" table in docs/results.md.

    python bench/quality.py --runs financial_phrasebank,banking77 --out bench/runs
    python bench/quality.py --runs ncbi_disease-fgm+bio --out bench/runs   # re-score a run
    python bench/quality.py --table-only --out bench/runs
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, RESULTS, machine, markdown_table, tree_state, write_results  # noqa: E402

# name -> (config, --set overrides, what is measured, target). "MINILM" is the checkpoint.
RUNS: dict[str, tuple[str, list[str], str, str]] = {
    "financial_phrasebank": ("financial_phrasebank", [], "test accuracy (20% split)", ">= 95.0"),
    "financial_phrasebank-lr1e-4": ("financial_phrasebank", [
        "train.learning_rate=1e-4", "train.epochs=10", "train.early_stopping_patience=3",
        "train.bucket_by_length=true"],
        "test accuracy (20% split)", ">= 95.0"),
    "financial_phrasebank-lr1e-4-fgm": ("financial_phrasebank", [
        "train.learning_rate=1e-4", "train.epochs=10", "train.early_stopping_patience=3",
        "train.bucket_by_length=true", "method.fgm_epsilon=1.0"],
        "test accuracy (20% split)", ">= 95.0"),
    "financial_phrasebank-lr1e-4-ls": ("financial_phrasebank", [
        "train.learning_rate=1e-4", "train.epochs=10", "train.early_stopping_patience=3",
        "train.bucket_by_length=true", "train.label_smoothing=0.1"],
        "test accuracy (20% split)", ">= 95.0"),
    "banking77": ("banking77", [], "test accuracy", ">= 92.0"),
    # sentence embeddings: the sentence-transformers anchor's recipe, its epoch chosen on dev
    "stsb": ("stsb", ["train.learning_rate=2e-5"], "test Spearman (cosine)", ">= 86.5"),
    **{f"stsb-lr{lr}": ("stsb", [f"train.learning_rate={lr}"], "test Spearman (cosine)",
                        ">= 86.5") for lr in ("5e-5", "1e-4")},
    # The SST-2 recipes choose on 5% of train (stratified, seed 42); dev is scored once each.
    **{f"sst2-sel-{name}": ("sst2", [
        "task.max_train_examples=null", "task.eval=null", "task.eval_split=0.05",
        "task.test=${TFLLM_DATA}/sst2/dev.tsv", "train.bucket_by_length=true", *sets],
        "dev accuracy", ">= 90.0") for name, sets in [
            ("lr1e-4", ["train.learning_rate=1e-4"]),
            ("lr1e-4-fgm", ["train.learning_rate=1e-4", "method.fgm_epsilon=1.0"]),
            ("2ep", ["train.epochs=2"]),
            ("fgm-2ep", ["train.epochs=2", "method.fgm_epsilon=1.0"])]},
    "conll2003": ("conll2003", ["train.bucket_by_length=true"], "test entity F1", ">= 86.0"),
    "ncbi_disease": ("ncbi_disease", ["train.bucket_by_length=true"], "test entity F1",
                     ">= 84.0"),
    "ncbi_disease-fgm": ("ncbi_disease", ["train.bucket_by_length=true", "method.fgm_epsilon=1.0"],
                         "test entity F1", ">= 84.0"),
    "ncbi_disease-b16": ("ncbi_disease", ["train.bucket_by_length=true", "train.batch_size=16",
                                          "train.learning_rate=5e-5", "train.epochs=15",
                                          "train.early_stopping_patience=3"],
                         "test entity F1", ">= 84.0"),
    # valid joins train; the epoch count (8) and FGM come from ncbi_disease-fgm, whose valid F1
    # peaked at epoch 7 of 8, so nothing here is chosen on the test set
    "ncbi_disease-fgm-train+valid": ("ncbi_disease", [
        "task.train=JOINED:ncbi_disease-train+valid.txt", "train.bucket_by_length=true",
        "method.fgm_epsilon=1.0", "train.early_stopping_patience=0"],
        "test entity F1", ">= 84.0"),
    "imdb": ("imdb", ["train.bucket_by_length=true"], "test accuracy", ">= 91.0"),
    "imdb-full": ("imdb", ["task.max_train_examples=null", "train.bucket_by_length=true"],
                  "test accuracy", ">= 91.0"),
    # The methods, on the same SST-2 slice (8,000 rows, 2 epochs) so they compare 1:1.
    "sst2-slice-full": ("sst2", ["train.epochs=2", "train.learning_rate=1e-4"], "dev accuracy",
                        "reference"),
    "sst2-slice-lora": ("sst2", ["train.epochs=2", "method.name=lora", "method.lora_rank=8",
                                 "method.lora_alpha=16", "train.learning_rate=1e-3"],
                        "dev accuracy", "within 2.0 of full, < 3% params"),
    "sst2-slice-adapter": ("sst2", ["train.epochs=2", "method.name=adapter",
                                    "method.adapter_size=64", "train.learning_rate=1e-3"],
                           "dev accuracy", "within 1.0 of full, < 5% params"),
    # adapters against bench/compress.py's full row (same slice, val carved from train, dev
    # reported): two recipes, the one the val split prefers is reported
    **{f"sst2-slice-adapter-{name}": ("sst2", [
        "task.eval=null", "task.eval_split=0.05", "task.test=${TFLLM_DATA}/sst2/dev.tsv",
        "method.name=adapter", "method.adapter_size=64", *sets],
        "dev accuracy", "within 1.0 of full (85.55, bench/compress.py), < 5% params")
       for name, sets in [("lr1e-3-3ep", ["train.learning_rate=1e-3", "train.epochs=3"]),
                          ("lr2e-3-3ep", ["train.learning_rate=2e-3", "train.epochs=3"])]},
    "sst2-slice-freeze": ("sst2", ["train.epochs=2", "train.learning_rate=1e-4", "method.name=freeze",
                                   "method.freeze_layers=3"], "dev accuracy", "report"),
    "sst2-slice-fgm": ("sst2", ["train.epochs=2", "train.learning_rate=1e-4",
                                "method.fgm_epsilon=1.0"], "dev accuracy", "report"),
    # distillation from the full-data SST-2 run (RUN: = a run under --out, trained first)
    "sst2-slice-distill": ("sst2", ["train.epochs=2", "train.learning_rate=1e-4",
                                    "method.distill_from=RUN:sst2-sel-2ep"], "dev accuracy",
                           "report"),
    "sst2-slice-random": ("sst2", ["train.epochs=2", "model.size=l6h384",
                                   "model.tokenizer=MINILM", "train.learning_rate=1e-4"],
                          "dev accuracy", "below MiniLM init"),
    # Domain adaptation (issue 22): the same fine-tune from MiniLM and from MiniLM after
    # continued MLM on the task's unlabelled text (PRETRAINED), three seeds each. The seed
    # changes the head's init and the batch order; the labelled rows stay the same.
    **{f"imdb-1k{arm}-s{seed}": ("imdb", [
        "task.max_train_examples=1000", "task.eval_split=0.02", "train.epochs=2",
        "train.bucket_by_length=true", "task.test=SAMPLED:imdb-test-2000.tsv",
        f"train.seed={seed}"], "test accuracy (2,000 sampled test reviews)", "report")
       for arm in ("", "-dapt") for seed in (1, 2, 3)},
    **{f"ncbi_disease-fgm{arm}-s{seed}": ("ncbi_disease", [
        "train.bucket_by_length=true", "method.fgm_epsilon=1.0", f"train.seed={seed}"],
        "test entity F1", "report") for arm in ("", "-tapt") for seed in (1, 2, 3)},
}

# Continued MLM pretraining from MiniLM (`tfllm pretrain --init MINILM`), the init of the
# runs that name it in INITS: name -> (corpus files under DATA, `tfllm data pretrain`
# options, `tfllm pretrain` --set overrides). Recipes fixed in advance: a budget this CPU
# trains in ~15 minutes, a peak learning rate of 1e-4 (the MLM head is new: MiniLM ships
# none, and at 5e-5 its loss was still 6.8 after 80 steps), bf16 (1.4x on this CPU).
PRETRAINED: dict[str, tuple[list[str], list[str], list[str]]] = {
    "imdb-mlm": (["imdb/train.tsv"],
                 ["--no-nsp", "--seq-len", "128", "--dupe-factor", "1", "--set", "corpus.column=text"],
                 ["train.steps=500", "train.batch_size=32", "optimizer.learning_rate=1e-4",
                  "optimizer.warmup_steps=50", "train.precision=mixed_bfloat16"]),
    "ncbi-mlm": (["ncbi_disease/train.txt", "ncbi_disease/valid.txt"],
                 ["--no-nsp", "--seq-len", "128", "--dupe-factor", "10",
                  "--set", "corpus.format=conll"],
                 ["train.steps=500", "train.batch_size=32", "optimizer.learning_rate=1e-4",
                  "optimizer.warmup_steps=50", "train.precision=mixed_bfloat16"]),
}
INITS: dict[str, str] = {
    **{f"imdb-1k-dapt-s{seed}": "imdb-mlm" for seed in (1, 2, 3)},
    **{f"ncbi_disease-fgm-tapt-s{seed}": "ncbi-mlm" for seed in (1, 2, 3)},
}
# arm groups of the domain-adaptation table: (data set, with/without continued pretraining)
DOMAIN_ARMS: dict[str, tuple[str, str, list[str]]] = {
    "imdb-1k": ("imdb", "MiniLM", [f"imdb-1k-s{s}" for s in (1, 2, 3)]),
    "imdb-1k-dapt": ("imdb", "MiniLM + MLM on IMDB train text (imdb-mlm)",
                     [f"imdb-1k-dapt-s{s}" for s in (1, 2, 3)]),
    "ncbi_disease-fgm": ("ncbi_disease", "MiniLM",
                         [f"ncbi_disease-fgm-s{s}" for s in (1, 2, 3)]),
    "ncbi_disease-fgm-tapt": ("ncbi_disease", "MiniLM + MLM on NCBI train+valid (ncbi-mlm)",
                              [f"ncbi_disease-fgm-tapt-s{s}" for s in (1, 2, 3)]),
}

# Recipes compared for one data set: the run with the best score on the validation split
# (the run's eval split, carved from training data or the data set's own) is the one
# reported; the reported split is scored once per run and chooses nothing. A run in no group
# had its recipe fixed in advance.
SELECTIONS: dict[str, list[str]] = {
    "financial_phrasebank": ["financial_phrasebank", "financial_phrasebank-lr1e-4",
                             "financial_phrasebank-lr1e-4-fgm", "financial_phrasebank-lr1e-4-ls"],
    "sst2": [f"sst2-sel-{name}" for name in ("lr1e-4", "lr1e-4-fgm", "2ep", "fgm-2ep")],
    "ncbi_disease": ["ncbi_disease", "ncbi_disease-fgm", "ncbi_disease-b16"],
    # each run's epoch (of 4) is the one chosen on sts-dev; then the runs compare on sts-dev
    "stsb": ["stsb", "stsb-lr5e-5", "stsb-lr1e-4"],
    "sst2-adapter": ["sst2-slice-adapter-lr1e-3-3ep", "sst2-slice-adapter-lr2e-3-3ep"],
}


# name -> (fine-tuned run, labelled file): a finished run scored again by `tfllm evaluate`.
# The NER runs trained before BIO-constrained decoding existed were scored with argmax.
RESCORED: dict[str, tuple[str, str]] = {
    f"{run}+bio": (run, "ncbi_disease/test.txt")
    for run in ("ncbi_disease-fgm", "ncbi_disease-b16", "ncbi_disease-fgm-train+valid")}


# Training files joined from shared ones (runs name them as JOINED:<name>); written under --out.
JOINED = {"ncbi_disease-train+valid.txt": ["ncbi_disease/train.txt", "ncbi_disease/valid.txt"]}


# Seeded samples of shared files (runs name them as SAMPLED:<name>): (file, rows, seed).
SAMPLED = {"imdb-test-2000.tsv": ("imdb/test.tsv", 2000, 0)}


def write_sampled(name: str, out: Path) -> None:
    import random

    from tfllm.atomic import atomic_write_text
    from tfllm.data.locations import data_root

    source, rows, seed = SAMPLED[name]
    # split("\n"), not splitlines(): reviews hold \r and other breaks inside a row
    header, *lines = (data_root() / source).read_text(encoding="utf-8").rstrip("\n").split("\n")
    picked = sorted(random.Random(seed).sample(range(len(lines)), rows))
    atomic_write_text(out / name, "\n".join([header, *(lines[i] for i in picked)]) + "\n")


def write_joined(name: str, out: Path) -> None:
    from tfllm.atomic import atomic_write_text
    from tfllm.data.locations import data_root

    parts = [(data_root() / part).read_text(encoding="utf-8") for part in JOINED[name]]
    # CoNLL sentences end at a blank line, so every part must end with one
    atomic_write_text(out / name, "".join(p.rstrip("\n") + "\n\n" for p in parts))


def minilm() -> str:
    from tfllm.models.checkpoints import minilm_dir

    return str(minilm_dir())


def command(name: str, out: Path) -> list[str]:
    config, sets, _, _ = RUNS[name]
    init = "none" if name.endswith("-random") else "MINILM"
    if name in INITS:
        init = str(out / INITS[name])
    cmd = ["tfllm", "finetune", "--config", f"configs/finetune/{config}.yaml", "--init", init,
           "--out", str(out / name)]
    for value in sets:
        for tag in ("JOINED:", "RUN:", "SAMPLED:"):
            value = value.replace(tag, f"{out}/")
        cmd += ["--set", value]
    return cmd


def pretrain_commands(name: str, out: Path) -> list[list[str]]:
    """`tfllm data pretrain` then `tfllm pretrain --init MINILM` (DATA = the shared data)."""
    corpus, data_options, sets = PRETRAINED[name]
    data = ["tfllm", "data", "pretrain", "--corpus", *(f"DATA/{c}" for c in corpus),
            "--tokenizer", "MINILM", "--out", str(out / f"{name}-data"), *data_options]
    train = ["tfllm", "pretrain", "--init", "MINILM", "--data", str(out / f"{name}-data"),
             "--out", str(out / name)]
    for value in sets:
        train += ["--set", value]
    return [data, train]


def run_logged(cmd: list[str], log_path: Path) -> int:
    """Run a `tfllm ...` command (the venv's entry point, MINILM and DATA filled in) with
    its output in `log_path`; return its exit code."""
    from tfllm.data.locations import data_root

    cmd = [c.replace("MINILM", minilm()) for c in cmd]
    cmd = [f"{data_root()}/{c[5:]}" if c.startswith("DATA/") else c for c in cmd]
    print("+", shlex.join(cmd), flush=True)
    cmd[0] = str(Path(sys.executable).parent / "tfllm")
    started = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"  {log_path.stem}: exit {rc} in {time.perf_counter() - started:.0f} s", flush=True)
    return rc


def pretrain(name: str, out: Path) -> None:
    """Continued pretraining `name` under `out` unless finished (re-running resumes it)."""
    if (out / name / "metrics.json").is_file():
        return
    data_cmd, train_cmd = pretrain_commands(name, out)
    if not (out / f"{name}-data").is_dir() and run_logged(data_cmd, out / f"{name}-data.log"):
        raise SystemExit(f"{name}: `tfllm data pretrain` failed (see {name}-data.log)")
    write_provenance(out, name)
    if run_logged(train_cmd, out / f"{name}.log"):
        raise SystemExit(f"{name}: `tfllm pretrain` failed (see {name}.log)")


def rescore_command(name: str, out: Path) -> list[str]:
    run, data = RESCORED[name]
    return ["tfllm", "evaluate", "--model", str(out / run), "--data", f"DATA/{data}"]


def rescore(name: str, out: Path) -> None:
    """`out/<name>.json`: the run's metrics with `test` from `tfllm evaluate` (its printed
    JSON line), written only when the evaluation succeeds."""
    from tfllm.atomic import atomic_write_text
    from tfllm.data.locations import data_root

    cmd = rescore_command(name, out)
    print("+", shlex.join(cmd), flush=True)
    write_provenance(out, name)
    cmd[0] = str(Path(sys.executable).parent / "tfllm")
    cmd[-1] = str(data_root() / RESCORED[name][1])
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    metrics = json.loads((out / RESCORED[name][0] / "metrics.json").read_text())
    metrics["test"] = json.loads(done.stdout.strip().splitlines()[-1])
    metrics["decoding"] = metrics["test"]["decoding"]
    atomic_write_text(out / f"{name}.json", json.dumps(metrics, indent=1))


def write_provenance(out: Path, name: str) -> None:
    """`out/<name>.provenance.json`: the commit (and dirty flag) of the code that trains or
    scores the run, written when it starts, so a later table rebuild cannot misstate it."""
    from tfllm.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.provenance.json", json.dumps(
        {**tree_state(), "host": host(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


def host() -> str:
    """The CPU and its matrix ISA: 2-core hosts of one name differ in speed by these."""
    info = machine()
    return f"{info['cpu']} ({', '.join(info['cpu_matrix_isa'])}), {info['cores']} cores"


def score(metrics: dict, split: str = "test") -> float:
    """The run's task metric in percent on the reported split (`test`) or on its validation
    split (`valid`: the eval split that early stopping and recipe choice may look at)."""
    source = metrics.get("test", metrics) if split == "test" else metrics
    if "spearman" in source:  # already x 100
        return round(source["spearman"], 2)
    key = "entity_f1" if "entity_f1" in source else "accuracy"
    return round(100 * source[key], 2)


def selection(name: str, valid_scores: dict[str, float]) -> dict:
    """How the run's recipe was chosen: `selected_on` (`valid` or `fixed in advance`), and for
    a run among compared recipes, the group and whether it is the one the validation split
    chose. A re-scored run (`+bio`) is chosen as its run is."""
    run = RESCORED[name][0] if name in RESCORED else name
    for group, members in SELECTIONS.items():
        if run in members:
            scored = {m: valid_scores[m] for m in members if m in valid_scores}
            return {"selected_on": "valid", "group": group,
                    "chosen": bool(scored) and max(scored, key=scored.get) == run}
    return {"selected_on": "fixed in advance"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", default="bench/runs", help="where the RUN_DIRs go")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.table_only:
        for name in [n.strip() for n in args.runs.split(",") if n.strip()]:
            if name not in RUNS and name not in RESCORED:
                parser.error(f"unknown run {name!r} "
                             f"(choose from {', '.join([*RUNS, *RESCORED])})")
            if name in RESCORED:
                done, base = out / f"{name}.json", out / RESCORED[name][0] / "metrics.json"
                if not done.is_file() or (base.is_file()
                                          and done.stat().st_mtime < base.stat().st_mtime):
                    rescore(name, out)  # again when the run it scores was trained again
                continue
            if (out / name / "metrics.json").is_file():
                continue
            if name in INITS:
                pretrain(INITS[name], out)
            for value in RUNS[name][1]:
                if "JOINED:" in value:
                    write_joined(value.split("JOINED:", 1)[1], out)
                if "SAMPLED:" in value and not (out / value.split("SAMPLED:", 1)[1]).is_file():
                    write_sampled(value.split("SAMPLED:", 1)[1], out)
            write_provenance(out, name)
            run_logged(command(name, out), out / f"{name}.log")

    # Runs measured earlier (another machine or session) stay in the table until re-run here.
    stored = RESULTS / "quality.json"
    previous = json.loads(stored.read_text()) if stored.is_file() else {}
    data: dict[str, dict] = {}
    entries = [(name, out / name / "metrics.json", command(name, Path("RUNS")), measured, target)
               for name, (_, _, measured, target) in RUNS.items()]
    for name, (run, _) in RESCORED.items():
        _, _, measured, target = RUNS[run]
        entries.append((name, out / f"{name}.json", rescore_command(name, Path("RUNS")),
                        measured, target))
    for name, path, cmd, measured, target in entries:
        made = out / f"{name}.provenance.json"
        if path.is_file() and made.is_file():
            metrics = {k: v for k, v in json.loads(path.read_text()).items()
                       if k not in ("confusion_matrix", "per_class")}
            data[name] = {"command": shlex.join(cmd), **json.loads(made.read_text()),
                          "metrics": metrics}
        elif isinstance(previous.get(name), dict) and "metrics" in previous[name]:
            data[name] = previous[name]
        else:
            continue
        data[name]["measured"], data[name]["target"] = measured, target
    for name, (run, _) in RESCORED.items():  # a re-scored model was trained by its run's commit
        if name in data and run in data and "scored_with" not in data[name]:
            row = data[name]
            row["scored_with"] = {"commit": row.get("commit"), "dirty": row.get("dirty")}
            row["commit"], row["dirty"] = data[run].get("commit"), data[run].get("dirty")
    # a run that trained on its own validation split has no valid score to choose by
    valid = {name: score(row["metrics"], "valid") for name, row in data.items()
             if not any("JOINED:" in value for value in RUNS[RESCORED.get(name, (name,))[0]][1])}
    rows = []
    for name, row in data.items():
        row.update(selection(name, valid))
        metrics, measured = row["metrics"], row["measured"]
        if "entity" in measured:  # runs from before BIO decoding existed used argmax
            measured = f"{measured} ({metrics.get('decoding', 'argmax')})"
        chosen = {True: "**chosen**", False: "compared"}.get(row.get("chosen"), "")
        rows.append([name, measured, score(metrics), row["target"],
                     valid.get(name, "(trained on)"),
                     f"{row['selected_on']} {chosen}".strip(),
                     metrics.get("train_examples", metrics.get("train_pairs")),
                     metrics["epochs_run"], f"{metrics['trainable_params']:,}",
                     f"{100 * metrics['trainable_params'] / metrics['total_params']:.2f}%",
                     f"{metrics['train_seconds'] / 60:.1f}",
                     (row.get("commit") or "?") + ("+dirty" if row.get("dirty") else ""),
                     row.get("host", "?"),
                     f"`{row['command']}`"])
    table = markdown_table(["run", "metric", "score", "target", "valid score", "recipe chosen",
                            "train examples", "epochs", "trainable params", "trainable share",
                            "train min", "commit", "host", "command"], rows)
    notes = ("`MINILM` is the all-MiniLM-L6-v2 checkpoint directory "
             "(`python -c 'from tfllm.models.checkpoints import minilm_dir; print(minilm_dir())'`). "
             "CPU only, one run at a time. Subsampling is in each config "
             "(`task.max_train_examples`) and stated in the train examples column. "
             "`DATA` is the shared data folder (`$TFLLM_DATA`). "
             "*valid score* is the run's validation split (its eval split: carved from training "
             "data, or the data set's own validation file; early stopping watches it). "
             "*recipe chosen*: `valid` rows are recipes compared for one data set (groups: "
             + "; ".join(f"{g}: {', '.join(m)}" for g, m in SELECTIONS.items())
             + "); the one with the best valid score is **chosen** and is the number reported "
             "for that data set; the score column of the others is shown, never used to choose. "
             "`fixed in advance`: the recipe was set before any score of this run was seen. "
             "*commit*: the code the run trained with (`+dirty`: with uncommitted changes); "
             "rows trained before runs recorded their tree carry the commit before the one that "
             "recorded them (`commit_source` in the JSON). *host*: the CPU the run trained on "
             "(the Machine line above is the host that rebuilt the table). NER scores name their decoding: "
             "`bio` is the BIO-constrained Viterbi default, `argmax` each word's own best tag "
             "(runs trained before `task.decoding` existed; their `+bio` rows re-score the same "
             "model). "
             + " ".join(f"`RUNS/{name}` is {' and '.join(parts)} joined (`bench/quality.py` "
                        "writes it)." for name, parts in JOINED.items()))
    write_results("quality", "Fine-tuning quality from all-MiniLM-L6-v2 (CPU)", data, table, notes)
    print(table)
    domain_table(data, valid, out)
    return 0


def domain_table(data: dict[str, dict], valid: dict[str, float], out: Path) -> None:
    """The domain-adaptation section: each arm's seeds as mean +- sample std, and the
    continued-pretraining runs they start from."""
    import statistics

    stored = RESULTS / "domain_adaptation.json"
    previous = json.loads(stored.read_text()).get("pretrained", {}) if stored.is_file() else {}
    pretrained = {}
    for name in PRETRAINED:
        metrics, made = out / name / "metrics.json", out / f"{name}.provenance.json"
        if metrics.is_file() and made.is_file():
            cmds = pretrain_commands(name, Path("RUNS"))
            pretrained[name] = {"commands": [shlex.join(c) for c in cmds],
                                **json.loads(made.read_text()),
                                "metrics": json.loads(metrics.read_text())}
        elif name in previous:
            pretrained[name] = previous[name]
    rows, arms = [], {}
    for arm, (dataset, init, runs) in DOMAIN_ARMS.items():
        done = [r for r in runs if r in data]
        tests = [score(data[r]["metrics"]) for r in done]
        valids = [valid[r] for r in done if r in valid]
        arms[arm] = {"dataset": dataset, "init": init, "runs": done, "test": tests,
                     "valid": valids}
        if not tests:
            continue

        def spread(xs: list[float]) -> str:
            return (f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1
                    else f"{xs[0]:.2f}")

        rows.append([dataset, init, RUNS[done[0]][2], spread(tests),
                     spread(valids) if valids else "", f"{len(tests)} of {len(runs)}",
                     ", ".join(f"{t:.2f}" for t in tests),
                     ", ".join(sorted({data[r].get("commit") or "?" for r in done}))])
    table = markdown_table(["data set", "init", "metric", "test mean ± std", "valid mean ± std",
                            "seeds done", "test per seed (s1, s2, s3)", "commit"], rows)
    lines = []
    for name, row in pretrained.items():
        m = row["metrics"]
        lines.append(f"`{name}`: {m.get('steps', '?')} steps of 32, last loss window: "
                     + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in m.items()
                                 if k in ("loss", "samples_per_second", "precision"))
                     + f", commit {row.get('commit')}; commands: "
                     + "; ".join(f"`{c}`" for c in row["commands"]) + ".")
    notes = ("Both arms of a data set run the same fine-tune command (recipe, budget, labelled "
             "rows) and differ only in `--init`; the three seeds (`train.seed` 1, 2, 3) change "
             "the head's init and the batch order. Fine-tune commands: the `imdb-1k*` and "
             "`ncbi_disease-fgm*-s*` rows of the fine-tuning quality table. IMDB: 1,000 "
             "labelled reviews (the config's seeded subsample), 2 epochs, scored on 2,000 test "
             "reviews sampled with seed 0 (`RUNS/imdb-test-2000.tsv`, written by "
             "`bench/quality.py`: the full test set takes ~23 min per run on this CPU). "
             "NCBI-disease: the recipe of the 84.09 row (ncbi_disease-fgm, BIO decoding). "
             "Continued pretraining (recipes fixed in advance, MLM only since MiniLM has no "
             "NSP head):\n\n" + "\n\n".join(lines))
    write_results("domain_adaptation",
                  "Domain adaptation: continued MLM pretraining before fine-tuning (CPU)",
                  {"arms": arms, "pretrained": pretrained}, table, notes)
    print(table)


if __name__ == "__main__":
    raise SystemExit(main())
