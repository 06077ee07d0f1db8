"""Batch inference: `tfllm batch` on Beam's DirectRunner (1 and 2 workers) vs `tfllm predict`,
the same export over the 25,000 IMDB test reviews, in one run.

    .venv-batch/bin/python bench/batch.py --model REPO/NAME [--out bench/runs/batch]

The reviews go into 4 JSONL shards, plus a fifth shard of malformed records only (bad JSON,
a missing field, invalid UTF-8, an empty text, a non-object line) that must all reach the
dead-letter output. Every run's rows are compared with `tfllm predict`'s (label equal,
largest |Δ probability|). Both sides run the same code on the same artifact
(`tfllm.batch.exported`: the export's tokenizer, onnxruntime, batches of similar lengths);
`tfllm predict` and the 1-worker pipeline use onnxruntime's default threads (all cores), the
2-worker pipeline (`--direct_num_workers=2 --direct_running_mode=multi_processing`) one
thread per worker. Results: `bench/results/batch.json` and the "Batch inference" table in
docs/results.md. Needs the batch environment (`make batch-env`).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import REPO, machine, markdown_table, tree_state, write_results  # noqa: E402

SHARDS = 4
BAD_SHARD = (b'{"text": "unterminated\n'
             b'{"body": "no text field"}\n'
             b'{"text": "caf\xe9 in latin-1"}\n'
             b'{"text": "   "}\n'
             b'["a list, not an object"]\n')


def write_inputs(folder: Path, limit: int) -> dict[tuple[str, int], str]:
    """IMDB test reviews as JSONL shards; (file, line) -> text."""
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(os.environ.get("TFLLM_DATA", REPO.parent / "shared" / "data"))
    with open(data / "imdb" / "test.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:limit + 1]
    texts = [text for text, _ in rows]
    where: dict[tuple[str, int], str] = {}
    size = -(-len(texts) // SHARDS)
    for k in range(SHARDS):
        path = folder / f"imdb-test-{k}.jsonl"
        chunk = texts[k * size:(k + 1) * size]
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                for t in chunk), encoding="utf-8")
        where.update({(str(path), i + 1): t for i, t in enumerate(chunk)})
    (folder / "imdb-test-bad.jsonl").write_bytes(BAD_SHARD)
    return where


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL if "predict" in cmd
                   else None)
    return time.perf_counter() - started


def predict(tfllm: str, model: str, texts: list[str], out: Path) -> tuple[float, list[dict]]:
    """`tfllm predict --file` over the texts (one per line), timed; its JSON lines."""
    listing = out / "texts.txt"
    listing.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    print("+ tfllm predict --model", model, "--file", listing, flush=True)
    started = time.perf_counter()
    with open(out / "predict.jsonl", "w", encoding="utf-8") as f:
        subprocess.run([tfllm, "predict", "--model", model, "--file", str(listing)],
                       check=True, cwd=REPO, stdout=f)
    seconds = time.perf_counter() - started
    return seconds, [json.loads(line) for line in open(out / "predict.jsonl", encoding="utf-8")]


def compare(prefix: Path, where: dict, want: dict[tuple[str, int], dict]) -> dict:
    got = {(r["file"], r["line"]): r for path in glob.glob(f"{prefix}-predictions-*.jsonl")
           for r in map(json.loads, open(path, encoding="utf-8"))}
    dead = [json.loads(line) for path in glob.glob(f"{prefix}-dead-letter-*.jsonl")
            for line in open(path, encoding="utf-8")]
    same = sum(got[k]["label"] == want[k]["label"] for k in where if k in got)
    diff = max(abs(got[k]["probabilities"][n] - want[k]["probabilities"][n])
               for k in where if k in got for n in want[k]["probabilities"])
    return {"rows": len(got), "missing": len(set(where) - set(got)), "labels_equal": same,
            "max_abs_probability_diff": diff,
            "dead_letters": sorted((Path(d["file"]).name, d["line"], d["error"]) for d in dead)}


def embed_check(tfllm: str, embedder: str, where: dict, out: Path, count: int) -> dict:
    """`tfllm embed` on the first `count` reviews (one file) vs `tfllm batch --task embed` on
    the same reviews in 2 shards: the same rows?"""
    keys = list(where)[:count]
    folder = out / "embed-inputs"
    folder.mkdir(parents=True, exist_ok=True)
    combined = folder.parent / "embed-all.jsonl"
    combined.write_text("".join(json.dumps({"text": where[k]}, ensure_ascii=False) + "\n"
                                for k in keys), encoding="utf-8")
    index = {}
    for s in range(2):
        path = folder / f"part-{s}.jsonl"
        part = keys[s::2]
        path.write_text("".join(json.dumps({"text": where[k]}, ensure_ascii=False) + "\n"
                                for k in part), encoding="utf-8")
        index.update({(str(path), i + 1): keys.index(k) for i, k in enumerate(part)})
    seconds_embed = run([tfllm, "embed", "--model", embedder, "--input", str(combined),
                         "--out", str(out / "embed-all.npy")])
    want = np.load(out / "embed-all.npy")
    prefix = out / "beam-embed" / "emb"
    seconds_batch = run([tfllm, "batch", "--model", embedder, "--task", "embed", "--input",
                         str(folder / "part-*.jsonl"), "--output", str(prefix)])
    got = np.zeros_like(want)
    seen = 0
    for keys_file in glob.glob(f"{prefix}-embeddings-*.jsonl"):
        rows = np.load(keys_file.removesuffix(".jsonl") + ".npy")
        for line, row in zip(open(keys_file, encoding="utf-8"), rows, strict=True):
            k = json.loads(line)
            got[index[(k["file"], k["line"])]] = row
            seen += 1
    return {"reviews": count, "rows": seen, "max_abs_diff": float(np.abs(got - want).max()),
            "min_cosine": float((got * want).sum(1).min()),
            "embed_seconds": round(seconds_embed, 1), "batch_seconds": round(seconds_batch, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="REPO/NAME[/VERSION] (a classifier)")
    parser.add_argument("--out", default="bench/runs/batch")
    parser.add_argument("--limit", type=int, default=25000, help="reviews (default all)")
    parser.add_argument("--embedder", help="an exported sentence embedder REPO/NAME: "
                                           "`tfllm embed` vs `tfllm batch --task embed`")
    parser.add_argument("--embed-reviews", type=int, default=2000)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    tfllm = str(Path(sys.executable).parent / "tfllm")
    where = write_inputs(out / "inputs", args.limit)
    texts = list(where.values())
    results: dict = {"model": args.model, "reviews": len(texts), "shards": SHARDS,
                     "provenance": tree_state(), "machine": machine()}

    seconds, lines = predict(tfllm, args.model, texts, out)
    want = dict(zip(where, lines, strict=True))
    results["predict"] = {"seconds": round(seconds, 1),
                          "sequences_per_s": round(len(texts) / seconds, 1)}
    runs = {"beam-1-worker": ["--direct_num_workers=1"],
            "beam-2-workers": ["--direct_num_workers=2", "--direct_running_mode=multi_processing",
                               "--intra-op-threads-per-worker"]}
    for name, options in runs.items():
        prefix = out / name / "imdb"
        threads = ["--intra-op-threads", "1"] if "--intra-op-threads-per-worker" in options \
            else []
        options = [o for o in options if o != "--intra-op-threads-per-worker"]
        seconds = run([tfllm, "batch", "--model", args.model, "--input",
                       str(out / "inputs" / "imdb-test-*.jsonl"), "--output", str(prefix),
                       *threads, "--", "--runner=DirectRunner", *options])
        results[name] = {"seconds": round(seconds, 1),
                         "sequences_per_s": round(len(texts) / seconds, 1),
                         "options": options + threads, **compare(prefix, where, want)}
        print(name, json.dumps({k: v for k, v in results[name].items()
                                if k != "dead_letters"}), flush=True)

    if args.embedder:
        results["embed"] = embed_check(tfllm, args.embedder, where, out, args.embed_reviews)
        print("embed", json.dumps(results["embed"]), flush=True)

    rows = [["tfllm predict (one process)", results["predict"]["seconds"],
             results["predict"]["sequences_per_s"], "1.00×", "–", "–", "–"]]
    for name in runs:
        r = results[name]
        rows.append([f"tfllm batch, DirectRunner, {name.split('-')[1]} worker(s)", r["seconds"],
                     r["sequences_per_s"],
                     f"{r['sequences_per_s'] / results['predict']['sequences_per_s']:.2f}×",
                     f"{r['labels_equal']:,} / {len(texts):,}",
                     f"{r['max_abs_probability_diff']:.1e}", len(r["dead_letters"])])
    table = markdown_table(["run", "seconds", "reviews/s", "vs predict", "labels equal",
                            "max |Δp|", "dead letters"], rows)
    bad = BAD_SHARD.count(b"\n")
    notes = (
        f"The {len(texts):,} IMDB test reviews in {SHARDS} JSONL shards plus a shard of "
        f"{bad} malformed records (every one must reach the dead-letter "
        f"output with its file and line: "
        f"{'; '.join(f'{f}:{n} {e}' for f, n, e in results['beam-1-worker']['dead_letters'])}"
        f"). Model: `{args.model}` (all-MiniLM-L6-v2 fine-tuned on SST-2 then IMDB by "
        "`tfllm continual`, exported fp32 ONNX, max_len 128 head+tail). Seconds are wall time "
        "of the whole command (Python start, model load, Beam's pipeline set-up). Both sides "
        "answer from `tfllm.batch.exported` (each text tokenized alone, batches of similar "
        "lengths); labels compared row by row on (file, line)."
        + (f" Embeddings: `tfllm embed` ({results['embed']['embed_seconds']} s) and `tfllm "
           f"batch --task embed` ({results['embed']['batch_seconds']} s) on the first "
           f"{results['embed']['reviews']:,} reviews with `{args.embedder}` (all-MiniLM-L6-v2 "
           f"exported with `--task embedding`): {results['embed']['rows']:,} rows, max |Δ| "
           f"{results['embed']['max_abs_diff']:.1e}, lowest cosine "
           f"{results['embed']['min_cosine']:.6f}." if "embed" in results else ""))
    write_results("batch", "Batch inference: `tfllm batch` (Beam DirectRunner) vs `tfllm "
                  "predict` (IMDB test)", results, table, notes)
    print(table)


if __name__ == "__main__":
    main()
