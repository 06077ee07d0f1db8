"""Every export format of one fine-tuned classifier: size, latency at B=1 and B=32 (L=128),
SST-2 dev accuracy, side by side in one run against a TF SavedModel of the same model and
against the same BERT exported from PyTorch to onnxruntime.

    .venv/bin/python bench/export.py --model RUN_DIR [--torch-python .venv-st/bin/python]

The baseline is what a Keras user ships without tfllm: `ExportArchive` SavedModel of the
Keras classifier (token ids in), run with TensorFlow. The anchor is what a PyTorch user ships:
the checkpoint folder's `BertModel` through `torch.onnx.export` (bench/torch_onnx_anchor.py, in
the torch venv), fp32, and int8 by `quantize_dynamic` as onnxruntime documents it and by
tfllm's own int8 recipe. Every row gets the same token ids padded to L=128; all are timed in
rounds, one artifact after the other, and each keeps its best round (this host's speed
drifts by 10-30% within minutes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from report import markdown_table, write_results  # noqa: E402
from tfllm_export import artifacts  # noqa: E402
from tfllm_export.gate import onnx_runner, savedmodel_ids_runner, tflite_runner  # noqa: E402
from tfllm_export.stage import export_run  # noqa: E402
from tfllm_serving.wordpiece import encode_batch, load_tokenizer  # noqa: E402

from tfllm.data.locations import data_root  # noqa: E402
from tfllm.models.checkpoints import minilm_dir  # noqa: E402
from tfllm.models.run_dir import load_run_model  # noqa: E402

SEQ = 128


def timed(run, inputs: dict, repeats: int) -> float:
    run(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def interleaved(runners: dict, b1: dict, b32: dict, rounds: int, repeats: int) -> dict:
    """label -> {b1, b32} ms: per round the median of `repeats` calls (B=32: a fifth), every
    runner in turn; the best round kept."""
    best: dict = {}
    for _ in range(rounds):
        for label, run in runners.items():
            now = {"b1": timed(run, b1, repeats), "b32": timed(run, b32, max(3, repeats // 5))}
            best[label] = {k: min(v, best.get(label, now)[k]) for k, v in now.items()}
    return best


def savedmodel_baseline(model, directory: Path):
    def logits(input_ids, attention_mask, token_type_ids):
        return model({"token_ids": input_ids, "padding_mask": attention_mask,
                      "segment_ids": token_type_ids}, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", logits, input_signature=artifacts._signature())
    archive.write_out(str(directory), verbose=False)
    loaded = tf.saved_model.load(str(directory))  # keep alive: it owns the variables
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())

    def run(inputs: dict):
        return loaded.serve(**{k: tf.constant(v) for k, v in inputs.items()}).numpy()

    return run, size


def torch_anchors(python: str, work: Path) -> tuple[dict, dict]:
    """label -> ONNX path of the PyTorch-exported checkpoint (fp32 and two int8 builds), and
    what exported it; empty when the torch venv is missing."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not Path(python).exists():
        return {}, {"skipped": f"{python} not found (see bench/torch_onnx_anchor.py)"}
    fp32 = work / "torch.onnx"
    done = subprocess.run([python, str(Path(__file__).parent / "torch_onnx_anchor.py"),
                           str(minilm_dir()), str(fp32)], check=True, capture_output=True,
                          text=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    quantize_dynamic(str(fp32), str(work / "torch-int8.onnx"), weight_type=QuantType.QInt8)
    artifacts.quantize_onnx_int8(fp32, work / "torch-int8-tfllm.onnx")
    return {"PyTorch -> onnxruntime fp32 (anchor)": fp32,
            "PyTorch -> onnxruntime int8, quantize_dynamic defaults (anchor)":
                work / "torch-int8.onnx",
            "PyTorch -> onnxruntime int8, tfllm's int8 recipe (anchor)":
                work / "torch-int8-tfllm.onnx"}, info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a fine-tuned SST-2 RUN_DIR")
    parser.add_argument("--torch-python", default=".venv-st/bin/python",
                        help="python of the torch venv, for the PyTorch anchor rows")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    run_dir = Path(args.model)
    work = Path(tempfile.mkdtemp(prefix="tfllm-bench-export-"))
    try:
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        lines = (data_root() / "sst2" / "dev.tsv").read_text().splitlines()[1:]
        texts = [line.split("\t")[0] for line in lines]
        b1 = encode_batch(tokenizer, texts[:1], max_len=SEQ, pad_to_max_len=True)
        b32 = encode_batch(tokenizer, texts[:32], max_len=SEQ, pad_to_max_len=True)
        model = load_run_model(run_dir)
        base_run, base_size = savedmodel_baseline(model, work / "baseline")
        formats = [f for f in artifacts.FORMATS if f != "savedmodel"]
        report = export_run(run_dir, work / "repo" / "m" / "1", ["savedmodel", *formats],
                            eval_data=str(data_root() / "sst2" / "dev.tsv"))
        version = work / "repo" / "m" / "1"
        # tf2onnx's graph as it is, and its int8: what the lean rewrite is measured against
        artifacts.export_onnx(model, work / "tf2onnx.onnx", lean=False)
        artifacts.quantize_onnx_int8(work / "tf2onnx.onnx", work / "tf2onnx-int8.onnx")
        anchors, anchor_info = torch_anchors(args.torch_python, work)
        runners = {"baseline": base_run,
                   "savedmodel": savedmodel_ids_runner(version)}
        for entry in report["artifacts"]:
            if entry["format"] != "savedmodel" and entry["passed"]:
                runners[entry["format"]] = (onnx_runner if entry["format"].startswith("onnx")
                                            else tflite_runner)(version / entry["path"])
        runners["onnx, tf2onnx graph as it is"] = onnx_runner(work / "tf2onnx.onnx")
        runners["onnx-int8, tf2onnx graph as it is"] = onnx_runner(work / "tf2onnx-int8.onnx")
        for label, path in anchors.items():
            runners[label] = onnx_runner(path, "pooler_output")
        lat = interleaved(runners, b1, b32, args.rounds, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = lat["baseline"]
    onnx_size = next(a["size_bytes"] for a in report["artifacts"] if a["format"] == "onnx")
    entries = {a["format"]: a for a in report["artifacts"]}

    def row(label: str, key: str, entry: dict | None, size: float | None = None) -> list:
        t = lat.get(key)
        size = entry["size_bytes"] if entry else size
        return [label, f"{size / 1e6:.1f}" if size else "",
                f"{size / onnx_size:.2f}" if size and entry else "",
                f"{entry['metric_value'] * 100:.2f}" if entry else "",
                f"{entry['metric_delta'] * 100:+.2f}" if entry else "",
                f"{t['b1']:.2f}" if t else "", f"{t['b32']:.1f}" if t else "",
                f"{t['b1'] / base['b1']:.2f}" if t else "",
                f"{t['b32'] / base['b32']:.2f}" if t else "",
                ("passed" if entry["passed"] else f"FAILED {entry['failed_checks']}")
                if entry else ""]

    rows = [["TF SavedModel, ids in (baseline)", f"{base_size / 1e6:.1f}", "",
             f"{report['reference']['value'] * 100:.2f}", "", f"{base['b1']:.2f}",
             f"{base['b32']:.1f}", "1.00", "1.00", ""]]
    rows += [row(fmt + (" (token_ids signature)" if fmt == "savedmodel" else ""), fmt, entry)
             for fmt, entry in entries.items()]
    rows += [row(label, label, None) for label in runners if label not in entries
             and label != "baseline"]
    table = markdown_table(["format", "MB", "size / ONNX fp32", "SST-2 dev acc %",
                            "Δ vs Keras (pts)", "B=1 ms", "B=32 ms", "B=1 / SavedModel",
                            "B=32 / SavedModel", "gate"], rows)
    int8, fp32 = lat.get("onnx-int8"), lat.get("onnx")
    torch_int8 = [lat[k] for k in anchors if "int8" in k]
    versus = {}
    if anchors and int8 and fp32:
        best = {k: min(t[k] for t in torch_int8) for k in ("b1", "b32")}
        torch_fp32 = lat["PyTorch -> onnxruntime fp32 (anchor)"]
        versus = {"int8_vs_best_torch_int8": {k: int8[k] / best[k] for k in best},
                  "fp32_vs_torch_fp32": {k: fp32[k] / torch_fp32[k] for k in fp32}}
    notes = (
        f"Model: `{run_dir}` ({report['reference']['examples']} SST-2 dev sentences, Keras "
        f"accuracy {report['reference']['value'] * 100:.2f}%). Latency: token ids padded to "
        f"L={SEQ} for every row (tokenization not timed), {args.rounds} rounds with every row "
        f"in turn, each row's best round of median-of-{args.repeats} calls (B=32: "
        f"{max(3, args.repeats // 5)}), one process on this CPU. Lean graph: "
        f"{json.dumps(report.get('onnx_graph'))}. PyTorch anchor: {json.dumps(anchor_info)}; "
        "its graph has the same encoder, pooler and shapes (the checkpoint's own weights, no "
        "2-way classifier on top: a 384x2 MatMul). "
        + (f"tfllm onnx-int8 / best PyTorch int8: B=1 {versus['int8_vs_best_torch_int8']['b1']:.2f}, "
           f"B=32 {versus['int8_vs_best_torch_int8']['b32']:.2f}; tfllm onnx / PyTorch fp32: "
           f"B=1 {versus['fp32_vs_torch_fp32']['b1']:.2f}, "
           f"B=32 {versus['fp32_vs_torch_fp32']['b32']:.2f}." if versus else "")
    )
    write_results("export", "Export formats: size, latency, accuracy (SST-2)",
                  {"model": str(run_dir), "seq_len": SEQ, "latency_ms": lat,
                   "anchor": anchor_info, "ratios": versus, "report": report,
                   "results": [{"label": r[0], "row": r} for r in rows]}, table, notes)
    print(table)


if __name__ == "__main__":
    main()
