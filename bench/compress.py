"""Compression on SST-2: pruned and sparse MiniLM models against the full one, in one run.

    .venv/bin/python bench/compress.py --out bench/runs/compress [--rows full,ffn50,...]
    .venv/bin/python bench/compress.py --task ncbi_disease  # the best two rows on NCBI-disease

Every row is one command (printed and recorded): the full model is a `tfllm finetune` of
all-MiniLM-L6-v2 on the 8,000-row SST-2 slice (2 epochs, lr 1e-4, validation = 5% carved
from train, dev = the reported split); every other row is a `tfllm prune` of it, recovered
with the same recipe. Recipes are fixed in advance (nothing is chosen on dev). Finished runs
are kept, so the script resumes. Then each run is exported (SavedModel, onnx, onnx-int8,
tflite-dynamic; gate on dev) and every artifact of every row is timed in rounds on the same
token ids padded to L=128, B=1 and B=32, each keeping its best round; ratios are against the
full model's SavedModel (ids in) of this run. Results: `bench/results/compress.json` and the
"Compression" table in docs/results.md.

`--task ncbi_disease` does the same for entity F1: the full model is the shipped NCBI recipe
(configs/finetune/ncbi_disease.yaml, early stopping on valid.txt), pruned rows recover with
it, the gate and the reported score are test.txt (`compress-ncbi` results).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import REPO, machine, markdown_table, tree_state, write_results  # noqa: E402

SEQ = 128
FORMATS = ["savedmodel", "onnx", "onnx-int8", "tflite-dynamic"]
# name -> (what it is, tfllm prune flags; None = the full fine-tune)
ROWS: dict[str, tuple[str, list[str] | None]] = {
    "full": ("full fine-tune (reference)", None),
    "ffn50": ("FFN 50%", ["--ffn-keep", "0.5"]),
    "heads8-ffn50-kd": ("heads 12->8 + FFN 50% + KD", ["--heads-keep", "8", "--ffn-keep", "0.5",
                                                      "--distill"]),
    "layers3-kd": ("3 layers + KD", ["--layers", "3", "--distill"]),
    "layers3-ffn50-kd": ("3 layers + FFN 50% + KD", ["--layers", "3", "--ffn-keep", "0.5",
                                                    "--distill"]),
    "sparse50": ("50% unstructured (magnitude)", ["--sparsity", "0.5"]),
    "sparse80": ("80% unstructured (magnitude)", ["--sparsity", "0.8"]),
}


@dataclass(frozen=True)
class Task:
    """What the full row fine-tunes and where its reported score comes from."""

    config: str
    full_flags: list[str]
    reported: str  # data file under the data root: the gate's data and the reported split
    metric: str  # metrics.json key
    columns: tuple[str, str]  # (eval split, reported split) column names
    rows: str  # default --rows
    out: str
    section: str
    title: str
    recipe: str  # the notes' first sentence


TASKS = {
    "sst2": Task(
        "configs/finetune/sst2.yaml",
        ["--set", "train.epochs=2", "--set", "train.learning_rate=1e-4", "--set",
         "task.eval=null", "--set", "task.eval_split=0.05", "--set",
         "task.test=${TFLLM_DATA}/sst2/dev.tsv"],
        "sst2/dev.tsv", "accuracy", ("val acc % (5% of train)", "dev acc %"), ",".join(ROWS),
        "bench/runs/compress", "compress", "Compression: pruning, distillation, sparsity (SST-2)",
        "Every row: SST-2, all-MiniLM-L6-v2, the 8,000-row training slice, recipe fixed in "
        "advance (2 epochs, lr 1e-4, batch 32; pruned rows recover with the same recipe, KD = "
        "distillation from the full row, alpha 0.5, T 2); val = 5% of train carved off "
        "(stratified, seed 42), dev = SST-2 dev (872), scored once."),
    "ncbi_disease": Task(
        "configs/finetune/ncbi_disease.yaml", ["--set", "train.bucket_by_length=true"],
        "ncbi_disease/test.txt", "entity_f1", ("valid entity F1 %", "test entity F1 %"),
        "full,heads8-ffn50-kd,layers3-kd", "bench/runs/compress-ncbi", "compress-ncbi",
        "Compression: the best two pruned rows on NCBI-disease (entity F1)",
        "Every row: NCBI-disease, all-MiniLM-L6-v2, the shipped recipe fixed in advance "
        "(configs/finetune/ncbi_disease.yaml: up to 8 epochs, lr 1e-4, batch 32, early stopping "
        "on valid.txt entity F1, patience 2; length-bucketed batches; pruned rows recover with "
        "the same recipe, KD = distillation from the full row, alpha 0.5, T 2); the rows are the "
        "two best SST-2 pruned rows at <= 0.56x MACs; test.txt (940 sentences) is the gate's "
        "data and the reported split, scored once; entity F1 with the run's BIO decoding."),
}


def command(name: str, out: Path, minilm: str, task: Task) -> list[str]:
    flags = ROWS[name][1]
    if flags is None:
        return ["tfllm", "finetune", "--config", task.config, "--init", minilm,
                "--out", str(out / name), *task.full_flags]
    return ["tfllm", "prune", "--model", str(out / "full"), "--out", str(out / name), *flags]


def train(names: list[str], out: Path, minilm: str, task: Task) -> None:
    for name in names:
        if (out / name / "metrics.json").is_file():
            continue
        cmd = command(name, out, minilm, task)
        print("+", shlex.join(cmd), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.provenance.json").write_text(json.dumps(
            {**tree_state(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        cmd[0] = str(Path(sys.executable).parent / "tfllm")
        started = time.time()
        subprocess.run(cmd, cwd=REPO, check=True)
        (out / f"{name}.seconds").write_text(f"{time.time() - started:.0f}\n")


def latency_inputs(task: Task, tokenizer) -> tuple[dict, dict]:
    """B=1 and B=32 token ids at L=SEQ from the reported split's first texts."""
    from tfllm_serving.wordpiece import encode_batch

    from tfllm.data.locations import data_root
    from tfllm.data.tasks import read_tagged

    path = data_root() / task.reported
    if task.metric == "accuracy":
        texts = [line.split("\t")[0] for line in path.read_text().splitlines()[1:]]
    else:
        texts = [" ".join(sentence.words) for sentence in read_tagged(path)]
    return (encode_batch(tokenizer, texts[:1], max_len=SEQ, pad_to_max_len=True),
            encode_batch(tokenizer, texts[:32], max_len=SEQ, pad_to_max_len=True))


def measure(names: list[str], out: Path, work: Path, rounds: int, repeats: int,
            task: Task) -> dict:
    """Per row: params, MACs, accuracies, sizes, and {format: {b1, b32}} ms."""
    from tfllm_export.artifacts import backbone_of
    from tfllm_export.gate import onnx_runner, savedmodel_ids_runner, tflite_runner
    from tfllm_export.stage import export_run
    from tfllm_serving.wordpiece import load_tokenizer

    from export import interleaved  # bench/export.py: the same timing in turns
    from tfllm.compression.prune import encoder_macs
    from tfllm.data.locations import data_root
    from tfllm.models.run_dir import load_run_model

    reported = data_root() / task.reported
    b1, b32 = latency_inputs(task, load_tokenizer(out / "full" / "tokenizer"))
    rows, runners = {}, {}
    for name in names:
        model = load_run_model(out / name)
        metrics = json.loads((out / name / "metrics.json").read_text())
        version = work / name / "1"
        report = export_run(out / name, version, FORMATS, eval_data=str(reported))
        entries = {a["format"]: a for a in report["artifacts"]}
        onnx_bytes = (version / entries["onnx"]["path"]).read_bytes()
        rows[name] = {
            "params": int(model.count_params()), "macs_128": encoder_macs(backbone_of(model), SEQ),
            "dev_accuracy": metrics["test"][task.metric], "eval_accuracy": metrics[task.metric],
            "train_seconds": metrics["train_seconds"],
            "pruning": json.loads((out / name / "pruning.json").read_text())
            if (out / name / "pruning.json").is_file() else None,
            "artifacts": {f: {k: e.get(k) for k in ("size_bytes", "metric_value", "passed",
                                                       "failed_checks")}
                          for f, e in entries.items()},
            "onnx_gzip_bytes": len(gzip.compress(onnx_bytes)),
            "commit": json.loads((out / f"{name}.provenance.json").read_text())
            if (out / f"{name}.provenance.json").is_file() else None,
        }
        for fmt, entry in entries.items():
            if entry["passed"]:
                path = version / entry["path"]
                runners[(name, fmt)] = (savedmodel_ids_runner(version) if fmt == "savedmodel"
                                        else onnx_runner(path) if fmt.startswith("onnx")
                                        else tflite_runner(path))
        del model
    lat = interleaved(runners, b1, b32, rounds, repeats)
    for (name, fmt), t in lat.items():
        rows[name]["artifacts"][fmt]["latency_ms"] = t
    return rows


def table(rows: dict, task: Task) -> tuple[str, dict]:
    full = rows["full"]
    base = full["artifacts"]["savedmodel"]["latency_ms"]
    out, checks = [], {}
    for name, r in rows.items():
        cells = [name, ROWS[name][0], f"{r['params'] / 1e6:.1f}M",
                 f"{r['macs_128'] / full['macs_128']:.2f}", f"{r['eval_accuracy'] * 100:.2f}",
                 f"{r['dev_accuracy'] * 100:.2f}",
                 f"{(r['dev_accuracy'] - full['dev_accuracy']) * 100:+.2f}",
                 f"{r['onnx_gzip_bytes'] / full['onnx_gzip_bytes']:.2f}"]
        for fmt in FORMATS:
            t = r["artifacts"].get(fmt, {}).get("latency_ms")
            cells.append(f"{t['b1'] / base['b1']:.3f} / {t['b32'] / base['b32']:.3f}" if t
                         else "gate failed")
        out.append(cells)
        int8 = r["artifacts"].get("onnx-int8", {})
        checks[name] = {
            "macs_ratio": r["macs_128"] / full["macs_128"],
            "dev_delta_pts": (r["dev_accuracy"] - full["dev_accuracy"]) * 100,
            "onnx_int8_dev_delta_pts": ((int8["metric_value"] - full["dev_accuracy"]) * 100
                                        if int8.get("metric_value") is not None else None),
            "onnx_int8_b1_vs_full_savedmodel": (int8["latency_ms"]["b1"] / base["b1"]
                                                if int8.get("latency_ms") else None)}
    header = ["row", "what", "params", "MACs / full (L=128)", *task.columns,
              f"Δ {task.columns[1].split()[0]} (pts)", "gzip ONNX / full",
              *[f"{fmt} B=1 / B=32 vs full SavedModel" for fmt in FORMATS]]
    return markdown_table(header, out), checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="sst2")
    parser.add_argument("--out", help="where the RUN_DIRs go (default: per task, bench/runs/)")
    parser.add_argument("--rows", help="comma-separated (default: every row for sst2, the best "
                                       "two for ncbi_disease)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from tfllm.models.checkpoints import minilm_dir

    task = TASKS[args.task]
    names = [n for n in (args.rows or task.rows).split(",") if n]
    if "full" not in names:
        names.insert(0, "full")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown} (choose from {', '.join(ROWS)})")
    out = Path(args.out or task.out)
    train(names, out, str(minilm_dir()), task)
    work = Path(tempfile.mkdtemp(prefix="tfllm-bench-compress-"))
    try:
        rows = measure(names, out, work, args.rounds, args.repeats, task)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text, checks = table(rows, task)
    commands = "\n".join(
        f"- `{name}`: `{shlex.join(command(name, Path('RUNS'), 'MINILM', task))}`"
        for name in names)
    notes = (
        f"{task.recipe} Importance: first-order "
        "Taylor on 1,024 training rows (heads, neurons), training loss without the layer "
        "(layers). MACs: encoder + pooler for one sequence of 128 tokens. Latency: token ids "
        f"padded to L={SEQ}, every artifact of every row timed in turn, best of "
        f"{args.rounds} rounds, ratios to the full row's SavedModel (ids in, same L) "
        f"= {rows['full']['artifacts']['savedmodel']['latency_ms']['b1']:.2f} ms B=1, "
        f"{rows['full']['artifacts']['savedmodel']['latency_ms']['b32']:.1f} ms B=32. gzip: "
        "the fp32 ONNX file compressed (what unstructured zeros buy: size, not speed).\n\n"
        f"Commands (RUNS = --out, MINILM = the checkpoint folder):\n{commands}\n"
    )
    write_results(task.section, task.title,
                  {"task": args.task, "seq_len": SEQ, "rows": rows, "checks": checks,
                   "host": machine()["cpu"]}, text, notes)
    print(text)
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
