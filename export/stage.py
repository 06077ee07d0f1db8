"""`tfllm export`: a fine-tuned RUN_DIR -> a TF Serving model version with gated artifacts.

Read top to bottom: check the RUN_DIR, formats, output version and eval data (all before
any work) -> reference logits from the Keras model -> per format: write, run with its own
runtime, gate -> beside the artifacts the tokenizer, labels and reports; `model_config.json`
last (the server counts a version as complete once it exists), and the version folder
appears by a rename of a finished temporary folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tfllm_export import artifacts
from tfllm_export.gate import (
    GateThresholds,
    argmax_rows,
    batches,
    best_of_rounds_ms,
    compare,
    compare_embeddings,
    latency_ms,
    onnx_runner,
    savedmodel_ids_runner,
    savedmodel_runner,
    tflite_runner,
)
from tfllm_export.onnx_graph import ort_transformer_fusion
from tqdm import tqdm

from tfllm.atomic import atomic_write_text
from tfllm.errors import InputError

CALIBRATED = {"onnx-int8-static", "tflite-int8"}
CALIBRATION_EXAMPLES = 128  # LiteRT suggests 100-500 representative samples
RUN_DIR_FILES = ("model.keras", "labels.json", "config.yaml", "tokenizer/tokenizer.json",
                 "tokenizer/vocab.txt")


def resolve_version_dir(out: str | Path, version: str | None) -> Path:
    """`REPO/NAME/VERSION`, or the next integer with `version="auto"`; never an existing one."""
    out = Path(out)
    if version == "auto":
        taken = [int(p.name) for p in out.iterdir() if p.name.isdigit()] if out.is_dir() else []
        return out / str(max(taken, default=0) + 1)
    if version is not None:
        out = out / version
    if not out.name.isdigit():
        raise InputError(f"--out {out}: the last folder must be an integer version "
                         "(REPO/NAME/VERSION), or pass --version auto")
    if out.exists():
        raise InputError(f"{out} already exists: a version is never overwritten "
                         "(use --version auto for the next number)")
    return out


@dataclass
class GateData:
    """Real eval data for the gate: raw texts (SavedModel), token-id features (ONNX, TFLite;
    the TF-free tokenizer the server uses), and the scored positions: one row per example, or
    for token classification one row per word (its first sub-token). `score(outputs)` is the
    task metric of the model's outputs, `compare(fmt, outputs, reference, thresholds)` the
    gate's numbers for one artifact against the Keras outputs."""

    texts: list[str]
    pairs: list[str] | None
    features: Callable[[slice, bool], dict]
    pick: Callable[[np.ndarray, slice], np.ndarray]
    score: Callable[[np.ndarray], float]
    compare: Callable[[str, np.ndarray, np.ndarray, GateThresholds], dict]
    metric_name: str
    source: str


def _labelled(texts: list[str], pairs: list[str] | None, features, pick, labels: np.ndarray,
              metric: Callable[[np.ndarray], float], metric_name: str, source: str,
              decode: Callable[[np.ndarray], np.ndarray] = argmax_rows) -> GateData:
    """Gate data of a classifier or tagger: outputs are logits, decoded into label ids as the
    run predicts (argmax, or the run's NER decoding)."""
    return GateData(texts, pairs, features, pick, lambda out: metric(decode(out)),
                    lambda fmt, out, ref, thresholds: compare(fmt, out, ref, labels, thresholds,
                                                              metric, decode),
                    metric_name, source)


def gate_data(task, names: list[str], tokenizer, eval_data: str | None, max_eval: int
              ) -> GateData:
    from tfllm_serving.wordpiece import encode_batch

    from tfllm.data.readers import ReadReport
    from tfllm.data.tasks import check_known_labels, read_examples, stratified_split

    source = eval_data or task.eval
    strict = ReadReport(strict=True)
    if task.type == "token_classification":
        return _tagged_gate_data(task, names, tokenizer, source, max_eval)
    columns = dict(text_column=task.text_column, label_column=task.label_column,
                   text_pair_column=task.text_pair_column, fmt=task.format)
    if source:
        examples = read_examples(source, **columns, report=strict)
    elif task.train:
        # The run held out seeded stratified splits of its training file: the same again
        # (its test split when it has one, which training never saw).
        share = task.test_split or task.eval_split
        source = f"{task.train} (held-out split {share}, seed {task.split_seed})"
        examples = stratified_split(read_examples(task.train, **columns, report=strict),
                                    share, task.split_seed)[1]
    else:
        raise InputError("no eval data: pass --eval-data FILE (the gate runs on real task data)")
    examples = examples[:max_eval]
    check_known_labels(examples, names, "eval")
    texts = [e.text for e in examples]
    pairs = [e.text_pair or "" for e in examples] if task.text_pair_column else None
    labels = np.array([names.index(e.label) for e in examples])

    def features(sl: slice, pad_to_max: bool = False) -> dict:
        return encode_batch(tokenizer, texts[sl], pairs[sl] if pairs else None,
                            max_len=task.max_len, pad_to_max_len=pad_to_max,
                            truncation=task.truncation)

    return _labelled(texts, pairs, features, lambda logits, sl: logits, labels,
                     lambda predicted: float((predicted == labels).mean()), "accuracy",
                     str(source))


def _tagged_gate_data(task, names: list[str], tokenizer, source: str | None, max_eval: int
                      ) -> GateData:
    """CoNLL sentences: one scored row per word that has a sub-token, words decoded per
    sentence under the run's `task.decoding`, entity F1 as the metric."""
    from tfllm_serving.tagging import decode_word_scores
    from tfllm_serving.wordpiece import encode_words

    from tfllm.data.readers import ReadReport
    from tfllm.data.tasks import check_known_labels, read_tagged
    from tfllm.finetune.metrics import entity_metrics

    if not source:
        raise InputError("no eval data: pass --eval-data FILE (CoNLL; the gate runs on real "
                         "task data)")
    sentences = read_tagged(source, ReadReport(strict=True), tag_column=task.tag_column)
    sentences = sentences[:max_eval]
    check_known_labels(sentences, names, "eval")
    index = {name: i for i, name in enumerate(names)}

    def tagged(sl: slice, pad: bool = False) -> dict:
        enc = encode_words(tokenizer, [s.words for s in sentences[sl]], task.max_len)
        width = task.max_len - enc["input_ids"].shape[1] if pad else 0  # latency: L=max_len
        return {k: np.pad(enc[k], ((0, 0), (0, width)))
                for k in ("input_ids", "attention_mask", "token_type_ids")}

    firsts = [encode_words(tokenizer, [s.words for s in sentences[sl]], task.max_len)
              ["first_token"] for sl in batches(len(sentences), 32)]

    def pick(logits: np.ndarray, sl: slice) -> np.ndarray:
        first = firsts[sl.start // 32]
        rows, cols = np.nonzero(first >= 0)
        return logits[rows, first[rows, cols]]

    kept = [[t for t, f in zip(s.tags, first_row, strict=False) if f >= 0]
            for chunk, sl in zip(firsts, batches(len(sentences), 32), strict=True)
            for s, first_row in zip(sentences[sl], chunk, strict=True)]
    counts = np.cumsum([len(k) for k in kept])[:-1]

    def decode(word_logits: np.ndarray) -> np.ndarray:
        return np.array([i for sentence in np.split(word_logits, counts)
                         for i in decode_word_scores(sentence, names, task.decoding)], dtype=int)

    def entity_f1(predicted: np.ndarray) -> float:
        tags = [[names[i] for i in row] for row in np.split(predicted, counts)]
        return entity_metrics(kept, tags, names, quiet=True)["entity_f1"]

    return _labelled([" ".join(s.words) for s in sentences], None, tagged, pick,
                     np.array([index[t] for row in kept for t in row]), entity_f1,
                     "entity_f1", str(source), decode)


def _embedding_gate_data(tokenizer, eval_data: str | None, max_len: int, max_eval: int
                         ) -> GateData:
    """Scored sentence pairs (STS-B format): every distinct sentence embedded once, Spearman
    x 100 of the pairs' cosines against the gold scores as the metric."""
    from tfllm_serving.wordpiece import encode_batch

    from tfllm.embeddings.similarity import correlations, read_stsb

    if not eval_data:
        raise InputError("no eval data: pass --eval-data FILE (scored sentence pairs in the STS "
                         "Benchmark format; the gate runs on real data)")
    pairs = read_stsb(eval_data)
    first, second = pairs.first[:max_eval], pairs.second[:max_eval]
    texts = list(dict.fromkeys(first + second))
    where = {text: i for i, text in enumerate(texts)}
    a, b = [where[t] for t in first], [where[t] for t in second]
    gold = pairs.scores[:max_eval]

    def features(sl: slice, pad_to_max: bool = False) -> dict:
        return encode_batch(tokenizer, texts[sl], max_len=max_len, pad_to_max_len=pad_to_max)

    def spearman(rows: np.ndarray) -> float:
        return correlations(rows[a], rows[b], gold)["spearman"]

    return GateData(texts, None, features, lambda rows, sl: rows, spearman,
                    lambda fmt, out, ref, thresholds: compare_embeddings(fmt, out, ref,
                                                                         thresholds, spearman),
                    "spearman", str(eval_data))


@dataclass
class Source:
    """What is exported: the Keras model and how text reaches it, the tokenizer files for
    the version folder, the gate's data, and what `model_config.json` says of it."""

    model: Any
    tokenizer: Any
    tokenizer_dir: Path
    max_len: int
    truncation: str
    output: str  # the model's one output: logits or embedding
    data: GateData
    config: dict  # task-specific model_config.json keys
    labels: list[str] | None
    calibration: Callable[[str | None], GateData] | None


def _run_source(run_dir: Path, eval_data: str | None, max_eval: int) -> Source:
    """A fine-tuned classification or NER RUN_DIR."""
    from tfllm_serving.wordpiece import load_tokenizer

    from tfllm.config import load_config
    from tfllm.finetune.train import FinetuneConfig
    from tfllm.models.run_dir import load_run_model

    missing = [name for name in RUN_DIR_FILES if not (run_dir / name).exists()]
    if missing:
        raise InputError(f"--model {run_dir} is not a fine-tuned RUN_DIR: missing "
                         f"{', '.join(missing)}")
    cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
    task = cfg.task
    names = json.loads((run_dir / "labels.json").read_text())
    tokenizer = load_tokenizer(run_dir / "tokenizer")

    def calibration(source: str | None) -> GateData:
        if not (source or task.train):
            raise InputError("no calibration data: pass --calibration-data FILE (real task "
                             "text for onnx-int8-static / tflite-int8)")
        return gate_data(task, names, tokenizer, str(source or task.train), CALIBRATION_EXAMPLES)

    encoding = ({"decoding": task.decoding} if task.type == "token_classification"
                else {"truncation": task.truncation})
    return Source(load_run_model(run_dir), tokenizer, run_dir / "tokenizer", task.max_len,
                  task.truncation, "logits", gate_data(task, names, tokenizer, eval_data, max_eval),
                  {"task": task.type, **encoding}, names, calibration)


def _embedder_source(init: Path, work: Path, eval_data: str | None, max_eval: int) -> Source:
    """A sentence embedder (mean pooling, L2-normalised) on an INIT's backbone."""
    from tfllm.embeddings.embed import load_embedder

    model, tokenizer, max_len = load_embedder(str(init), work)

    def calibration(source: str | None) -> GateData:
        if not source:
            raise InputError("no calibration data: pass --calibration-data FILE (scored pairs "
                             "in the STS Benchmark format) for onnx-int8-static / tflite-int8")
        return _embedding_gate_data(tokenizer, source, max_len, CALIBRATION_EXAMPLES)

    return Source(model, tokenizer, work / "tokenizer", max_len, "head", "embedding",
                  _embedding_gate_data(tokenizer, eval_data, max_len, max_eval),
                  {"task": "embedding", "pooling": "mean",
                   "embedding_dim": int(model.output_shape[-1]), "truncation": "head"},
                  None, calibration)


def export_run(run_dir: str | Path, out: str | Path, formats: list[str],
               eval_data: str | None = None, version: str | None = None,
               thresholds: GateThresholds | None = None, max_eval: int = 1000,
               quiet: bool = False, calibration_data: str | None = None,
               ort_fusion: bool = True, task: str | None = None,
               regression_data: str | None = None, max_regression_pts: float = 0.5) -> dict:
    """Export `formats` of a fine-tuned RUN_DIR (or, with `task="embedding"`, of a sentence
    embedder on an INIT's backbone) into the version folder `out`; returns the report (also
    written as export_report.json). `calibration_data` (the task's format; default its
    training file) feeds onnx-int8-static and tflite-int8; with `ort_fusion` every ONNX
    format is also built from the transformer-fused graph and that one is kept when it
    passes the gate and runs faster at B=1. `regression_data`: refuse (nothing written) a
    classifier whose accuracy there falls more than `max_regression_pts` below the version it
    replaces (`tfllm_export.regression`)."""
    from tfllm_serving.wordpiece import is_lowercase, read_vocab

    unknown = [f for f in formats if f not in artifacts.FORMATS]
    if unknown or not formats:
        raise InputError(f"unknown format {', '.join(unknown) or '(none)'} "
                         f"(choose from {', '.join(artifacts.FORMATS)})")
    if task not in (None, "embedding"):
        raise InputError(f"--task {task}: only 'embedding' (a RUN_DIR's task comes from its "
                         "config)")
    config = Path(run_dir) / "config.yaml"
    if task is None and config.is_file() and (yaml.safe_load(config.read_text()) or {}).get(
            "task", {}).get("type") == "embedding":
        task = "embedding"  # a sentence-embedding run exports as one
    target = resolve_version_dir(out, version)
    regression = None
    if regression_data:
        from tfllm_export.regression import regression_check

        regression = regression_check(run_dir, target, regression_data, max_regression_pts)
        if not regression["passed"]:
            if not quiet:
                print(f"export REFUSED: accuracy on {regression_data} "
                      f"{regression['new_accuracy']:.4f} vs {regression['previous_accuracy']:.4f} "
                      f"for version {regression['previous_version']} (more than "
                      f"{max_regression_pts} pt lower); nothing written")
            return {"passed": False, "regression": regression, "artifacts": []}
    thresholds = thresholds or GateThresholds()
    work = Path(tempfile.mkdtemp(prefix="tfllm-export-"))
    try:
        src = (_embedder_source(Path(run_dir), work, eval_data, max_eval) if task == "embedding"
               else _run_source(Path(run_dir), eval_data, max_eval))
        report = _export(src, target, formats, thresholds, calibration_data, ort_fusion,
                         read_vocab(src.tokenizer_dir / "vocab.txt"),
                         is_lowercase(src.tokenizer), quiet)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if regression is not None and target.is_dir():
        report["regression"] = regression
        atomic_write_text(target / "export_report.json", json.dumps(report, indent=2) + "\n")
    if not quiet:
        print(f"export -> {target}: {'passed' if report['passed'] else 'FAILED'}")
    return report


def _export(src: Source, target: Path, formats: list[str], thresholds: GateThresholds,
            calibration_data: str | None, ort_fusion: bool, vocab: list[str], lowercase: bool,
            quiet: bool) -> dict:
    """Every format written, run with its own runtime and gated, in a temporary folder that
    becomes `target` once complete (`model_config.json` written last)."""
    model, data, output = src.model, src.data, src.output
    calibration: list[dict] = []
    if CALIBRATED & set(formats):
        calib = src.calibration(calibration_data)
        calibration = [calib.features(slice(i, i + 1), False) for i in range(len(calib.texts))]
    texts, pairs, chunks = data.texts, data.pairs, list(batches(len(data.texts), 32))

    def keras_outputs(batch: dict) -> np.ndarray:
        return np.asarray(model({"token_ids": batch["input_ids"],
                                 "padding_mask": batch["attention_mask"],
                                 "segment_ids": batch["token_type_ids"]}, training=False))

    def scored(run, sl: slice, raw_text: bool = False) -> np.ndarray:
        out = run(texts[sl], pairs[sl] if pairs else None) if raw_text else run(data.features(sl))
        return data.pick(out, sl)

    reference = np.concatenate([scored(keras_outputs, sl) for sl in chunks])
    b1, b32 = data.features(slice(0, 1), True), data.features(slice(0, 32), True)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    report = {"reference": {"format": "keras", "metric": data.metric_name,
                            "value": data.score(reference), "eval_data": data.source,
                            "examples": len(texts)},
              "thresholds": asdict(thresholds), "artifacts": []}
    try:
        sources: dict[bool, Path] = {}
        fused_ops: dict = {}

        def onnx_source(fused: bool) -> Path:
            """The fp32 graph every ONNX format starts from (kept out of the repo)."""
            if False not in sources:
                sources[False] = tmp / ".fp32.onnx"
                report["onnx_graph"] = artifacts.export_onnx(model, sources[False], output=output)
            if fused and True not in sources:
                sources[True] = tmp / ".fused.onnx"
                fused_ops.update(ort_transformer_fusion(sources[False], sources[True],
                                                        *_attention_shape(model)))
            return sources[fused]

        float_nodes: dict[str, list[str]] = {}

        def write(fmt: str, path: Path, fused: bool) -> None:
            if fmt == "onnx":
                shutil.copy(onnx_source(fused), path)
            elif fmt == "onnx-fp16":
                artifacts.convert_onnx_fp16(onnx_source(fused), path)
            elif fmt == "onnx-int8":
                float_nodes[fmt] = artifacts.quantize_onnx_int8(onnx_source(fused), path)
            elif fmt == "onnx-int8-static":
                artifacts.quantize_onnx_int8_static(onnx_source(fused), path, calibration)
            else:
                float_nodes[fmt] = artifacts.export_tflite(
                    model, path, fmt.partition("-")[2] or "fp32", calibration, output=output)

        def gated(fmt: str, path: Path) -> dict:
            run = (onnx_runner if fmt.startswith("onnx") else tflite_runner)(path, output)
            outputs = np.concatenate([scored(run, sl) for sl in chunks])
            return {**data.compare(fmt, outputs, reference, thresholds),
                    "latency_ms": latency_ms(run, (b1,), (b32,)),
                    "size_bytes": path.stat().st_size}

        def b1_ms_in_turns(paths: list[Path]) -> list[float]:
            return best_of_rounds_ms([onnx_runner(p, output) for p in paths], b1)

        for fmt in tqdm(formats, desc="export", unit="artifact", disable=quiet):
            if fmt == "savedmodel":
                artifacts.export_savedmodel(model, tmp, vocab, src.max_len, lowercase,
                                            pairs is not None, src.truncation, output)
                run = savedmodel_runner(tmp, output)
                outputs = np.concatenate([scored(run, sl, raw_text=True) for sl in chunks])
                entry = {"format": fmt, "path": artifacts.FILE_NAMES[fmt], "size_bytes": sum(
                    p.stat().st_size for p in [tmp / "saved_model.pb",
                                               *(tmp / "variables").glob("*")])}
                entry.update(data.compare(fmt, outputs, reference, thresholds))
                # Like for like with the other formats: the same ids at the same length.
                entry["latency_ms"] = latency_ms(savedmodel_ids_runner(tmp, output), (b1,), (b32,))
                entry["latency_ms_raw_text"] = latency_ms(
                    run, ([texts[0]], [pairs[0]] if pairs else None),
                    (texts[:32], pairs[:32] if pairs else None))
            else:
                entry = {"format": fmt, "path": artifacts.FILE_NAMES[fmt]}
                entry.update(_best_build(fmt, tmp / entry["path"], write, gated,
                                         ort_fusion and fmt.startswith("onnx"), fused_ops,
                                         b1_ms_in_turns))
                if float_nodes.get(fmt) and fmt == "onnx-int8":  # adapters kept in float
                    entry["float_islands"] = {"layer": artifacts.ONNX_INT8_FLOAT_LAYER,
                                              "layer_nodes": len(float_nodes[fmt])}
                elif float_nodes.get(fmt):  # tflite-int8's dense layers kept in float
                    entry["float_islands"] = {"ops": list(artifacts.TFLITE_INT8_FLOAT_OPS),
                                              "layer": artifacts.TFLITE_INT8_FLOAT_LAYER,
                                              "layer_nodes": len(float_nodes[fmt])}
            if not entry["passed"]:
                _remove_artifact(tmp, fmt)
            report["artifacts"].append(entry)
            if not quiet:
                tqdm.write(_summary(entry, data.metric_name))
        for source in sources.values():
            source.unlink(missing_ok=True)
        report["passed"] = all(a["passed"] for a in report["artifacts"])
        for name in ("tokenizer.json", "vocab.txt"):
            shutil.copy(src.tokenizer_dir / name, tmp / name)
        if src.labels is not None:
            (tmp / "labels.json").write_text(json.dumps(src.labels) + "\n")
        (tmp / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
        passing = {a["format"]: a["path"] for a in report["artifacts"] if a["passed"]}
        (tmp / "model_config.json").write_text(json.dumps({
            **src.config, "inputs": list(artifacts.ONNX_INPUTS), "outputs": [output],
            "max_len": src.max_len, "lowercase": lowercase, "text_pair": pairs is not None,
            "artifacts": passing}, indent=2) + "\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _summary(entry: dict, metric_name: str) -> str:
    """One progress line per artifact."""
    closeness = (f"max|dlogit| {entry['max_abs_logit_diff']:.2e}  agreement "
                 f"{entry['label_agreement']:.4f}" if "label_agreement" in entry else
                 f"max|diff| {entry['max_abs_diff']:.2e}  cosine {entry['mean_cosine']:.6f}")
    state = "passed" if entry["passed"] else f"FAILED {entry['failed_checks']}"
    fusion = "  fused" if entry.get("ort_fusion", {}).get("kept") else ""
    return (f"{entry['format']:16s} {entry['size_bytes'] / 1e6:8.1f} MB  {closeness}  "
            f"{metric_name} {entry['metric_value']:.4f}  b1 {entry['latency_ms']['b1']} ms"
            f"{fusion}  {state}")


def _attention_shape(model) -> tuple[int, int]:
    """(num_heads, hidden_dim) of the model's BertBackbone, for the transformer optimizer."""
    backbone = artifacts.backbone_of(model)
    return backbone.num_heads, backbone.hidden_dim


def _best_build(fmt: str, path: Path, write: Callable, gated: Callable, try_fused: bool,
                fused_ops: dict, b1_ms_in_turns: Callable[[list[Path]], list[float]]) -> dict:
    """Write `fmt` to `path` and gate it; with `try_fused` also from the fused graph, keeping
    the faster at B=1 (timed in turns) of the builds that pass (the unfused one when neither
    does)."""
    write(fmt, path, False)
    result = gated(fmt, path)
    if not try_fused:
        return result
    fused_path = path.with_name(".fused-" + path.name)
    fusion: dict = {"kept": False, "b1_ms_unfused": result["latency_ms"]["b1"],
                    "unfused_passed": result["passed"]}
    try:
        write(fmt, fused_path, True)
        fused = gated(fmt, fused_path)
    except Exception as exc:  # noqa: BLE001 - an optional pass: report it, keep the plain build
        fused_path.unlink(missing_ok=True)
        return {**result, "ort_fusion": {**fusion, "error": f"{type(exc).__name__}: {exc}"}}
    fusion.update(fused_ops=dict(fused_ops), b1_ms_fused=fused["latency_ms"]["b1"],
                  fused_passed=fused["passed"])
    if fused["passed"] and result["passed"]:
        plain_ms, fused_ms = b1_ms_in_turns([path, fused_path])
        fusion.update(b1_ms_unfused=plain_ms, b1_ms_fused=fused_ms)
    if fused["passed"] and (not result["passed"]
                            or fusion["b1_ms_fused"] < fusion["b1_ms_unfused"]):
        fused_path.replace(path)
        return {**fused, "ort_fusion": {**fusion, "kept": True}}
    fused_path.unlink()
    return {**result, "ort_fusion": fusion}


def _remove_artifact(tmp: Path, fmt: str) -> None:
    """A failed artifact never stays in the repo looking good."""
    (tmp / artifacts.FILE_NAMES[fmt]).unlink(missing_ok=True)
    if fmt == "savedmodel":
        shutil.rmtree(tmp / "variables", ignore_errors=True)
        shutil.rmtree(tmp / "assets", ignore_errors=True)
