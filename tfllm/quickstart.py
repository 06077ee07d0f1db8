"""`tfllm quickstart`: the whole chain on bundled defaults, each stage timed.

vocab -> pretraining data -> pretrain (tiny) -> fine-tune (SST-2 slice) -> export (onnx,
onnx-int8, tflite-dynamic, gated) -> start tfllm-serve -> one real request -> stop.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

from tfllm.config import load_config
from tfllm.data.locations import data_root
from tfllm.data.stages import PretrainDataConfig, build_pretraining_data, build_vocab

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _serve_one_request(repo: Path, name: str, text: str, log: Path) -> dict:
    """Start tfllm-serve on 127.0.0.1, wait until ready, POST one :predict, stop it."""
    from tfllm_serving.process import ServerProcess, free_port

    port = free_port()
    args = ["--model-repo", str(repo), "--host", "127.0.0.1", "--port", str(port),
            "--grpc-port", "0"]
    with ServerProcess(args, port, log) as server:
        server.wait_ready(timeout=120)
        request = urllib.request.Request(
            f"{server.base}/v1/models/{name}:predict",
            data=json.dumps({"instances": [{"text": text}]}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def run_quickstart(out: str | Path, tiny: bool = False, from_minilm: bool = False) -> int:
    """Run every stage into `out` (replacing an earlier quickstart there); print a summary."""
    from tfllm_export.stage import export_run

    from tfllm.finetune.train import FinetuneConfig, finetune
    from tfllm.training.pretrain import PretrainConfig, pretrain

    out = Path(out)
    for sub in ("vocab", "pretrain-data", "pretrain-eval", "pretrain-run", "finetune-run",
                "models"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    data = data_root()
    wiki = [data / "wikitext2" / "wiki.valid.tokens"]
    rows: list[tuple[str, float, str]] = []

    def stage(name: str, func, summary):
        print(f"\n== {name}", flush=True)
        started = time.perf_counter()
        result = func()
        rows.append((name, time.perf_counter() - started, summary(result)))
        return result

    stage("vocab", lambda: build_vocab(wiki + [data / "sst2" / "train.tsv"], out / "vocab",
                                       vocab_size=4000 if tiny else 8000),
          lambda s: f"{s['vocab_size']} tokens")
    data_cfg = load_config(PretrainDataConfig, CONFIGS / "data" / "pretrain.yaml",
                           ["examples.dupe_factor=1", "examples.seq_len=64",
                            "examples.max_predictions_per_seq=10"])
    stage("pretraining data",
          lambda: build_pretraining_data(wiki, out / "vocab", out / "pretrain-data", data_cfg),
          lambda s: f"{s['examples']} examples, {s['tokens_per_second']:,.0f} tokens/s")
    stage("held-out data", lambda: build_pretraining_data(
        [data / "wikitext2" / "wiki.test.tokens"], out / "vocab", out / "pretrain-eval", data_cfg,
        quiet=True), lambda s: f"{s['examples']} examples from wiki.test.tokens")
    pre_cfg = load_config(PretrainConfig, CONFIGS / "pretrain" / "tiny.yaml", [
        f"train.steps={30 if tiny else 600}", "train.log_every=10", "train.checkpoint_every=200",
        "train.eval_batches=5"])
    pre = stage("pretrain (tiny)",
                lambda: pretrain(pre_cfg, out / "pretrain-data", out / "pretrain-run",
                                 out / "pretrain-eval"),
                lambda m: f"{m['steps']} steps, {m['samples_per_second']:.0f} samples/s, "
                          f"held-out MLM acc {m['mlm_accuracy']:.3f} "
                          f"(unigram {m['unigram_mlm_accuracy']:.3f})")
    init = str(out / "pretrain-run")
    if from_minilm:
        from tfllm.models.checkpoints import minilm_dir

        init = str(minilm_dir())
    ft_cfg = load_config(FinetuneConfig, CONFIGS / "finetune" / "sst2.yaml", [
        f"task.max_train_examples={400 if tiny else 8000}", f"train.epochs={1 if tiny else 2}",
        f"train.learning_rate={5e-5 if from_minilm else 3e-4}"])
    ft = stage("fine-tune (SST-2 slice)", lambda: finetune(ft_cfg, init, out / "finetune-run"),
               lambda m: f"dev accuracy {m['accuracy']:.4f} ({m['train_examples']} examples, "
                         f"init {m['init_kind']})")
    report = stage("export (gated)",
                   lambda: export_run(out / "finetune-run", out / "models" / "sst2" / "1",
                                      ["onnx", "onnx-int8", "tflite-dynamic"]),
                   lambda r: "passed" if r["passed"] else "FAILED")
    text = "a gripping , beautifully acted film that stays with you ."
    answer = stage("serve + one request",
                   lambda: _serve_one_request(out / "models", "sst2", text, out / "serve.log"),
                   lambda a: f"{a['predictions'][0]}")

    print("\n== summary")
    print(f"{'stage':26s} {'seconds':>8s}  result")
    for name, seconds, summary in rows:
        print(f"{name:26s} {seconds:8.1f}  {summary[:90]}")
    print(f"\n{'artifact':16s} {'MB':>7s} {'accuracy':>9s} {'b1 ms':>7s}  gate")
    for a in report["artifacts"]:
        print(f"{a['format']:16s} {a['size_bytes'] / 1e6:7.1f} {a['metric_value']:9.4f} "
              f"{a['latency_ms']['b1']:7.2f}  {'passed' if a['passed'] else 'FAILED'}")
    print(f"\nheld-out MLM accuracy {pre.get('mlm_accuracy', float('nan')):.4f}; "
          f"SST-2 dev accuracy {ft['accuracy']:.4f}; served: {text!r} -> "
          f"{json.dumps(answer['predictions'][0])[:120]}")
    print(f"total {sum(r[1] for r in rows):.0f} s; outputs in {out.resolve()}"
          + ("" if os.environ.get("TFLLM_DATA") else f" (data from {data})"))
    return 0 if report["passed"] else 1
