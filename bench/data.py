"""Throughput of `tfllm data pretrain` on the WikiText-2 files (tokens/s), side by side
with the tokenization step alone (`tokenizers` batch encoding) as the floor.

    .venv/bin/python bench/data.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import markdown_table, write_results  # noqa: E402

from tfllm.data.locations import data_root  # noqa: E402

TFLLM = [sys.executable, "-m", "tfllm.cli"]


def run(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    data = data_root() / "wikitext2"
    corpus = [str(data / "wiki.valid.tokens"), str(data / "wiki.test.tokens")]
    work = Path(tempfile.mkdtemp(prefix="tfllm-bench-data-"))
    try:
        vocab_seconds = run([*TFLLM, "vocab", "--corpus", *corpus, "--vocab-size", "8000",
                             "--out", str(work / "v")])
        rows, results = [], []
        for label, extra in [
            ("static masking, NSP, dupe 5 (defaults)", []),
            ("static masking, whole-word, NSP, dupe 5", ["--whole-word-mask"]),
            ("dynamic masking, no NSP, dupe 1", ["--masking", "dynamic", "--no-nsp",
                                                 "--dupe-factor", "1"]),
        ]:
            out = work / f"d{len(rows)}"
            wall = run([*TFLLM, "data", "pretrain", "--corpus", *corpus, "--tokenizer",
                        str(work / "v"), "--seq-len", "128", "--out", str(out), *extra])
            stats = json.loads((out / "stats.json").read_text())
            result = {"config": label, "wall_seconds": round(wall, 2),
                      "stage_seconds": stats["seconds"], "corpus_tokens": stats["tokens"],
                      "examples": stats["examples"], "example_tokens": stats["example_tokens"],
                      "tokens_per_second": stats["tokens_per_second"],
                      "corpus_tokens_per_second": round(stats["tokens"] / wall, 1)}
            results.append(result)
            rows.append([label, f"{stats['tokens']:,}", f"{stats['examples']:,}",
                         f"{stats['seconds']:.1f}", f"{wall:.1f}",
                         f"{stats['tokens_per_second']:,.0f}",
                         f"{result['corpus_tokens_per_second']:,.0f}"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = markdown_table(
        ["config", "corpus tokens", "examples", "stage s", "process s (incl. TF import)",
         "example tokens/s (stage)", "corpus tokens/s (process)"], rows)
    notes = (
        "Input: `wiki.valid.tokens` + `wiki.test.tokens` (WikiText-2), vocab 8,000 trained by "
        f"`tfllm vocab` on the same files in {vocab_seconds:.1f} s. *Example tokens* are the "
        "non-padding tokens written to TFRecords (each corpus token appears `dupe_factor` times); "
        "*stage s* is measured inside the stage (cleaning, sentence split, tokenization, masking, "
        "serialization, writing); *process s* adds Python start-up and the TensorFlow import."
    )
    write_results("data", "Pretraining data: `tfllm data pretrain` throughput", {
        "results": results, "vocab_seconds": round(vocab_seconds, 2)}, table, notes)
    print(table)


if __name__ == "__main__":
    main()
