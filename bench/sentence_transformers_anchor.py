"""The sentence-transformers side of bench/embed.py, run in its own venv (torch and
sentence-transformers are bench-only and never share an environment with TensorFlow):

    python -m venv .venv-st && .venv-st/bin/pip install torch==2.13.0 sentence-transformers
    .venv-st/bin/python bench/sentence_transformers_anchor.py CHECKPOINT TEXTS.json OUT.npy \\
        --batch-size 64 --max-len 256 --repeats 3

Encodes the texts (a JSON list) with the checkpoint folder as sentence-transformers loads it,
on the CPU, normalised; writes the embeddings and prints one JSON line with the best of
`repeats` timed passes (after one untimed warm-up pass).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("texts")
    parser.add_argument("out")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    model = SentenceTransformer(args.checkpoint, device="cpu")
    model.max_seq_length = args.max_len

    def encode() -> np.ndarray:
        return model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)

    encode()
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        rows = encode()
        seconds.append(time.perf_counter() - started)
    np.save(args.out, rows.astype(np.float32))
    print(json.dumps({"seconds": min(seconds), "sentences_per_second": len(texts) / min(seconds),
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "sentence_transformers": __import__("sentence_transformers").__version__}))


if __name__ == "__main__":
    main()
