"""`tfllm quickstart`: the whole chain on bundled defaults, each stage timed.

Stages so far: vocab -> pretraining data. Later stages (pretrain, fine-tune, export,
serve) join the chain as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from tfllm.config import PretrainDataConfig, load_config
from tfllm.data.locations import data_root
from tfllm.data.stages import build_pretraining_data, build_vocab

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_quickstart(out: str | Path, tiny: bool = False) -> int:
    """Run every available stage into `out`; print each stage's time and a summary table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data_root()
    corpus = [data / "wikitext2" / "wiki.valid.tokens"]
    timings: list[tuple[str, float, str]] = []

    def stage(name: str, func, summary) -> dict:
        print(f"\n== {name}", flush=True)
        started = time.perf_counter()
        result = func()
        seconds = time.perf_counter() - started
        timings.append((name, seconds, summary(result)))
        return result

    vocab_dir, data_dir = out / "vocab", out / "pretrain-data"
    for path in (vocab_dir, data_dir):
        if path.exists():
            import shutil

            shutil.rmtree(path)
    stage(
        "vocab",
        lambda: build_vocab(corpus + [data / "sst2" / "train.tsv"], vocab_dir,
                            vocab_size=4000 if tiny else 8000),
        lambda s: f"{s['vocab_size']} tokens",
    )
    overrides = ["examples.dupe_factor=1"] if tiny else []
    cfg = load_config(PretrainDataConfig, CONFIGS / "data" / "pretrain.yaml", overrides)
    stage(
        "pretraining data",
        lambda: build_pretraining_data(corpus, vocab_dir, data_dir, cfg),
        lambda s: f"{s['examples']} examples, {s['tokens_per_second']:.0f} tokens/s",
    )
    print("\n== summary")
    print(f"{'stage':20s} {'seconds':>8s}  result")
    for name, seconds, summary in timings:
        print(f"{name:20s} {seconds:8.1f}  {summary}")
    print(f"outputs in {out}")
    return 0
