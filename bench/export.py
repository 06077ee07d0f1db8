"""Every export format of one fine-tuned classifier: size, latency at B=1 and B=32 (L=128),
SST-2 dev accuracy, side by side in one run against a TF SavedModel of the same model.

    .venv/bin/python bench/export.py --model RUN_DIR

The baseline is what a Keras user ships without tfllm: `ExportArchive` SavedModel of the
Keras classifier (token ids in), run with TensorFlow.
"""

from __future__ import annotations

import argparse
import shutil
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
from tfllm_export.gate import onnx_runner, tflite_runner  # noqa: E402
from tfllm_export.stage import export_run  # noqa: E402
from tfllm_serving.wordpiece import encode_batch, load_tokenizer  # noqa: E402

from tfllm.data.locations import data_root  # noqa: E402
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


def time_both(run, b1: dict, b32: dict, repeats: int) -> dict:
    return {"b1": timed(run, b1, repeats), "b32": timed(run, b32, max(3, repeats // 5))}


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a fine-tuned SST-2 RUN_DIR")
    parser.add_argument("--repeats", type=int, default=30)
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
        # Timed before and after the exports; the faster of the two is the baseline, so
        # whatever the exports leave behind in this process cannot flatter the ratios.
        before = time_both(base_run, b1, b32, args.repeats)
        formats = [f for f in artifacts.FORMATS if f != "savedmodel"]
        report = export_run(run_dir, work / "repo" / "m" / "1", ["savedmodel", *formats],
                            eval_data=str(data_root() / "sst2" / "dev.tsv"))
        version = work / "repo" / "m" / "1"
        after = time_both(base_run, b1, b32, args.repeats)
        base = {k: min(before[k], after[k]) for k in before}
        onnx_size = next(a["size_bytes"] for a in report["artifacts"] if a["format"] == "onnx")
        rows = [["TF SavedModel, ids in (baseline)", f"{base_size / 1e6:.1f}", "",
                 f"{report['reference']['value'] * 100:.2f}", "", f"{base['b1']:.2f}",
                 f"{base['b32']:.1f}", "1.00", "1.00", ""]]
        results = [{"format": "savedmodel-ids-baseline", "size_bytes": base_size,
                    "latency_ms_l128": base}]
        for entry in report["artifacts"]:
            fmt = entry["format"]
            if fmt == "savedmodel" or not entry["passed"]:
                lat = None  # raw strings in (own tokenization), or removed by the gate
            else:
                run = (onnx_runner if fmt.startswith("onnx") else tflite_runner)(
                    version / entry["path"])
                lat = time_both(run, b1, b32, args.repeats)
            results.append({**entry, "latency_ms_l128": lat})
            rows.append([
                fmt + (" (raw strings in)" if fmt == "savedmodel" else ""),
                f"{entry['size_bytes'] / 1e6:.1f}", f"{entry['size_bytes'] / onnx_size:.2f}",
                f"{entry['metric_value'] * 100:.2f}", f"{entry['metric_delta'] * 100:+.2f}",
                f"{lat['b1']:.2f}" if lat else f"({entry['latency_ms']['b1']:.2f})",
                f"{lat['b32']:.1f}" if lat else f"({entry['latency_ms']['b32']:.1f})",
                f"{lat['b1'] / base['b1']:.2f}" if lat else "",
                f"{lat['b32'] / base['b32']:.2f}" if lat else "",
                "passed" if entry["passed"] else f"FAILED {entry['failed_checks']}"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = markdown_table(["format", "MB", "size / ONNX fp32", "SST-2 dev acc %",
                            "Δ vs Keras (pts)", "B=1 ms", "B=32 ms", "B=1 / SavedModel",
                            "B=32 / SavedModel", "gate"], rows)
    notes = (
        f"Model: `{run_dir}` ({report['reference']['examples']} SST-2 dev sentences, Keras "
        f"accuracy {report['reference']['value'] * 100:.2f}%). Latency: median of "
        f"{args.repeats} calls (B=32: {max(3, args.repeats // 5)}), inputs padded to L={SEQ}, "
        "token ids in (tokenization not timed), in one process on this CPU. The raw-string "
        "SavedModel row shows the gate's timing at the model's own max_len, in brackets. "
        f"Baseline timed before ({before['b1']:.2f} ms) and after ({after['b1']:.2f} ms) the "
        "exports at B=1; the faster is used."
    )
    write_results("export", "Export formats: size, latency, accuracy (SST-2)",
                  {"model": str(run_dir), "seq_len": SEQ, "baseline_ms": base,
                   "baseline_ms_before_exports": before, "baseline_ms_after_exports": after,
                   "report": report, "results": results}, table, notes)
    print(table)


if __name__ == "__main__":
    main()
