"""The sentence-transformers side of bench/embed.py's training rows, run in `.venv-st`:

    .venv-st/bin/pip install datasets accelerate   # SentenceTransformerTrainer needs them
    .venv-st/bin/python bench/sentence_transformers_train_anchor.py CHECKPOINT sts-train.csv \\
        --steps 60 --warmup-steps 10 --batch-size 16 --lr 2e-5

Fine-tunes the checkpoint on STS-B train pairs the way issue 21's anchor did
(`SentenceTransformerTrainer`, CoSENT, batch 16, lr 2e-5, AdamW, float32, CPU) for `steps`
optimizer steps and prints one JSON line: training pairs/s over the steps after the first
`warmup_steps` (model load, first-step allocation and the data loader's start are excluded,
as on the tfllm side). Nothing is saved.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time

import torch
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.losses import CoSENTLoss
from transformers import TrainerCallback


def read_stsb(path: str) -> Dataset:
    """STS-B's tab-separated release file, quoting off (its README says why)."""
    first, second, scores = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            scores.append(float(row[4]))
            first.append(row[5])
            second.append(row[6])
    return Dataset.from_dict({"sentence1": first, "sentence2": second, "score": scores})


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("pairs")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    args = parser.parse_args()
    model = SentenceTransformer(args.checkpoint, device="cpu")
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        training = SentenceTransformerTrainingArguments(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_steps=max(1, args.steps // 10), weight_decay=0.01,
            seed=42,
            save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
            use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
        SentenceTransformerTrainer(model=model, args=training, train_dataset=read_stsb(args.pairs),
                                   loss=CoSENTLoss(model), callbacks=[clock]).train()
    timed = clock.ends[args.warmup_steps:]
    seconds = timed[-1] - clock.ends[args.warmup_steps - 1]
    print(json.dumps({"steps_timed": len(timed), "batch_size": args.batch_size,
                      "seconds": seconds, "pairs_per_second": len(timed) * args.batch_size / seconds,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "sentence_transformers": __import__("sentence_transformers").__version__}))


if __name__ == "__main__":
    main()
