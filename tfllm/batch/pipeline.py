"""`tfllm batch`: an exported model over sharded files on Apache Beam (DirectRunner here;
Dataflow, Flink or Spark with their pipeline options), with bad records kept, not dropped.

Read top to bottom: the input files (a glob) -> one reader per shard yields (file, line, text)
for every good record and a dead letter (file, line, reason) for every bad one (invalid
UTF-8, malformed JSON or CSV row, missing column, empty text) -> RunInference with
`ExportHandler` (the export's own tokenizer and onnxruntime session, loaded once per worker)
-> JSON lines (`--task predict`: label + probabilities, or words, tags and entities for a
tagger) or `.npy` shards of embeddings with a JSONL of their rows' file and line
(`--task embed`) -> the dead letters as JSON lines. Beam's file sinks write to temporary
names and rename when the pipeline finishes, so a failed run leaves no output that looks
complete.

Beam ships an onnxruntime model handler (`OnnxModelHandlerNumpy`), but it stacks fixed-shape
numpy rows: it neither tokenizes nor pads texts of different lengths, which is what this
handler adds (with the serving runtime's batching of similar lengths).

Example:

    tfllm batch --model out/models/sst2 --input 'reviews-*.jsonl' --output out/batch/sst2 \\
        --task predict -- --direct_num_workers=2 --direct_running_mode=multi_processing
"""

from __future__ import annotations

import glob
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions

from tfllm.batch.exported import ExportedModel, require_export
from tfllm.batch.shards import manifest, shard_payload
from tfllm.data.readers import ReadReport
from tfllm.data.tasks import read_columns
from tfllm.errors import InputError

TASKS = ("predict", "embed")
DEAD = "dead"


@dataclass
class BatchConfig:
    """What `tfllm batch` runs."""

    model: str  # REPO/NAME[/VERSION]
    inputs: str  # a glob of JSONL/CSV/TSV shards
    output: str  # prefix: PREFIX-predictions-*.jsonl, PREFIX-dead-letter-*.jsonl, ...
    task: str = "predict"
    text_column: str | None = None
    format: str | None = None  # default: from each file's extension
    artifact: str = "onnx"
    batch_size: int = 64  # largest RunInference batch
    intra_op_threads: int = 0  # per worker; 0 = onnxruntime's default (all cores)
    pipeline_args: list[str] = field(default_factory=list)


@dataclass
class DeadLetters(ReadReport):
    """A ReadReport that keeps every bad record (file, line, reason), not the first few."""

    letters: list[dict] = field(default_factory=list)

    def bad(self, path: Path | str, line: int, reason: str) -> None:
        self.bad_records += 1
        self.letters.append({"file": str(path), "line": line, "error": reason})


def read_shard(path: str, text_column: str | None, fmt: str | None) -> Iterator[Any]:
    """((file, line), text) per good record, then a tagged dead letter per bad one."""
    letters = DeadLetters()
    try:
        rows = read_columns(path, [text_column], fmt, report=letters)
    except InputError as err:  # the whole file: unreadable, a header without the column
        yield beam.pvalue.TaggedOutput(DEAD, {"file": path, "line": 0, "error": str(err)})
        return
    for line, (text,) in rows:
        yield (path, line), text
    for letter in letters.letters:
        yield beam.pvalue.TaggedOutput(DEAD, letter)


class ExportHandler(ModelHandler[str, PredictionResult, ExportedModel]):
    """RunInference over raw texts with a `tfllm export` version folder."""

    def __init__(self, config: BatchConfig) -> None:
        super().__init__()
        self.config = config

    def load_model(self) -> ExportedModel:
        return ExportedModel(self.config.model, self.config.artifact,
                             self.config.intra_op_threads)

    def run_inference(self, batch: Sequence[str], model: ExportedModel,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        texts = list(batch)
        answers = (model.embeddings(texts) if self.config.task == "embed"
                   else model.rows(texts))
        return [PredictionResult(text, answer) for text, answer in zip(texts, answers,
                                                                        strict=True)]

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self.config.batch_size}


def prediction_line(keyed: tuple[tuple[str, int], PredictionResult]) -> str:
    (path, line), result = keyed
    return json.dumps({"file": path, "line": line, **result.inference}, ensure_ascii=False)


def write_embedding_shard(keyed: list[tuple[tuple[str, int], PredictionResult]],
                          prefix: str) -> str:
    """One `tfllm.batch.shards` shard (`.npy` + `.jsonl`), each file written under a temporary
    name and renamed when complete (Beam's FileSystems: local, gs://, hdfs://, ...)."""
    from apache_beam.io.filesystems import FileSystems

    shard = f"{prefix}-embeddings-{uuid.uuid4().hex[:12]}"
    npy, keys = shard_payload([key for key, _ in keyed],
                              np.stack([result.inference for _, result in keyed]))
    for suffix, payload in ((".npy", npy), (".jsonl", keys)):
        with FileSystems.create(shard + suffix + ".tmp") as f:
            f.write(payload)
        FileSystems.rename([shard + suffix + ".tmp"], [shard + suffix])
    return shard


def input_files(pattern: str) -> list[str]:
    files = sorted(p for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise InputError(f"--input {pattern}: no files match")
    return files


def build_pipeline(pipeline: beam.Pipeline, config: BatchConfig) -> None:
    """The transforms of one `tfllm batch` run, on `pipeline`."""
    records = (pipeline
               | "Shards" >> beam.Create(input_files(config.inputs))
               | "Read" >> beam.FlatMap(read_shard, config.text_column,
                                        config.format).with_outputs(DEAD, main="ok"))
    answers = records.ok | "Infer" >> RunInference(KeyedModelHandler(ExportHandler(config)))
    if config.task == "embed":
        _ = (answers | "Shard" >> beam.BatchElements(min_batch_size=512, max_batch_size=8192)
             | "Embeddings" >> beam.Map(write_embedding_shard, config.output))
    else:
        _ = (answers | "Lines" >> beam.Map(prediction_line)
             | "Predictions" >> beam.io.WriteToText(config.output + "-predictions",
                                                    file_name_suffix=".jsonl"))
    _ = (records[DEAD] | "DeadLines" >> beam.Map(json.dumps)
         | "DeadLetter" >> beam.io.WriteToText(config.output + "-dead-letter",
                                               file_name_suffix=".jsonl"))


def run_batch(config: BatchConfig) -> dict:
    """Check the model and inputs, run the pipeline to the end, count what it wrote."""
    if config.task not in TASKS:
        raise InputError(f"--task must be one of {TASKS}, got {config.task!r}")
    version = require_export(config.model)
    task = json.loads((version / "model_config.json").read_text()).get("task")
    if (task == "embedding") != (config.task == "embed"):
        raise InputError(f"--model {version} is a {task} model: use --task "
                         f"{'embed' if task == 'embedding' else 'predict'}")
    input_files(config.inputs)
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    options = PipelineOptions(config.pipeline_args or ["--runner=DirectRunner"])
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, config)
    if config.task == "embed":
        write_manifest(config, version)
    return summary(config)


def write_manifest(config: BatchConfig, version: Path) -> None:
    """`PREFIX-embeddings.json`, written last: which model made the shards."""
    from tfllm.atomic import atomic_write_text

    atomic_write_text(Path(config.output + "-embeddings.json"), json.dumps(
        manifest(version, config.artifact, config.inputs), indent=2) + "\n")


def summary(config: BatchConfig) -> dict:
    """Rows written and dead letters, read back from the finished outputs."""
    def lines(pattern: str) -> int:
        return sum(sum(1 for _ in open(p, encoding="utf-8")) for p in glob.glob(pattern))

    written = (lines(config.output + "-embeddings-*.jsonl") if config.task == "embed"
               else lines(config.output + "-predictions-*.jsonl"))
    return {"rows": written, "dead_letters": lines(config.output + "-dead-letter-*.jsonl"),
            "output": config.output}
