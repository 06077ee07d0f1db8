"""One model version in memory: onnxruntime session, tokenizer, labels and task config.

Everything that touches onnxruntime or ``tokenizers`` lives here; the web front ends only
see :class:`EncodedBatch` in and :class:`BatchOutput` out. Usable alone for local
inference (no server, no protos)::

    rt = ModelRuntime.load("repo/sst2/1")
    out = rt.run(rt.encode_texts(["a gripping film ."]))
    rt.labels[int(out.probabilities[0].argmax())]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .cores import CoreLease
from .errors import InvalidInput
from .tagging import DECODINGS
from .wordpiece import TRUNCATIONS, encode_batch, encode_words

log = logging.getLogger(__name__)

TASKS = ("classification", "token_classification", "embedding")
ID_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Padded tokens per real token a merged CPU batch may reach (batching.max_padding_ratio 0)
CPU_MAX_PADDING_RATIO = 1.3
_ORT_TO_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_NUMPY_TO_DT = {np.dtype(np.int64): "DT_INT64", np.dtype(np.int32): "DT_INT32"}


@dataclass
class EncodedBatch:
    """Token-id rows of one request, padded to the longest row of that request.

    >>> b = EncodedBatch.from_ids([[101, 7, 102]])
    >>> b.input_ids.shape, b.size
    ((1, 3), 1)
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    # Token classification from text: each row's words, and [rows, words] the position of
    # each word's first sub-token (-1: cut off by max_len); else None.
    words: list[list[str]] | None = None
    first_token: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    @classmethod
    def from_ids(
        cls,
        input_ids: Sequence[Sequence[int]] | np.ndarray,
        attention_mask: Sequence[Sequence[int]] | np.ndarray | None = None,
        token_type_ids: Sequence[Sequence[int]] | np.ndarray | None = None,
    ) -> EncodedBatch:
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        return cls(ids, mask.astype(np.int64), types.astype(np.int64))


@dataclass
class BatchOutput:
    """Model outputs for the rows of one :class:`EncodedBatch`: a classifier's or tagger's
    ``logits`` and ``probabilities``, or a sentence embedder's ``embedding``.

    >>> out = BatchOutput(embedding=np.ones((2, 3), np.float32))
    >>> sorted(out.arrays()), out.rows(slice(0, 1)).embedding.shape
    (['embedding'], (1, 3))
    """

    logits: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    embedding: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The outputs this model has, by name."""
        named = (("logits", self.logits), ("probabilities", self.probabilities),
                 ("embedding", self.embedding))
        return {name: value for name, value in named if value is not None}

    def rows(self, rows: slice, width: int | None = None) -> BatchOutput:
        """The outputs of some rows (per-token outputs cut to `width` tokens)."""
        return BatchOutput(**{name: value[rows, :width] if width else value[rows]
                              for name, value in self.arrays().items()})


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float32 in, float32 out)."""
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def choose_providers(requested: list[str] | str = "auto") -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    if requested == "auto":
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        wanted = list(requested)
    chosen = [p for p in wanted if p in available]
    return chosen or ["CPUExecutionProvider"]


def _open_session(model_path: Path, threads: int, spinning: bool,
                  providers: list[str] | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        # Idle intra-op threads spinning for work steal the cores the event loop,
        # tokenizer and other batch threads need between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Errors only: ORT's warnings are plain text and would break the JSON log stream.
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), sess_options=options,
                                providers=choose_providers(providers))


def width_groups(widths: Sequence[int], sizes: Sequence[int],
                 max_padding_ratio: float) -> list[list[int]]:
    """Requests (their padded widths and row counts) grouped for merged runs: sorted by
    width, a group closes when merging the next one would make its padded tokens exceed
    `max_padding_ratio` times the requests' own. On a CPU a run costs about its padded
    tokens, so merging short and long sentences wastes more than batching saves
    (bench/serve.py); a GPU pays per run instead, and takes everything in one group.

    >>> width_groups([9, 40, 10, 38], [1, 1, 1, 1], 1.3)
    [[0, 2], [3, 1]]
    >>> width_groups([9, 40, 10, 38], [1, 1, 1, 1], float("inf"))
    [[0, 2, 3, 1]]
    """
    groups: list[list[int]] = []
    rows = tokens = 0
    for i in sorted(range(len(widths)), key=lambda i: widths[i]):
        # Sorted, so the newcomer is the widest: the merged batch pads to its width.
        if not groups or (rows + sizes[i]) * widths[i] > max_padding_ratio * (
                tokens + sizes[i] * widths[i]):
            groups.append([])
            rows = tokens = 0
        groups[-1].append(i)
        rows += sizes[i]
        tokens += sizes[i] * widths[i]
    return groups


class ModelRuntime:
    """A loaded, validated model version.

    >>> rt = ModelRuntime.load(version_dir)          # doctest: +SKIP
    >>> rt.run(rt.encode_texts(["fine ."])).probabilities.shape   # doctest: +SKIP
    (1, 2)
    """

    def __init__(
        self,
        version_dir: Path,
        model_config: dict[str, Any],
        labels: list[str],
        tokenizer: Tokenizer,
        session: ort.InferenceSession,
        max_sequence_length: int,
        over_length: str,
        max_padding_ratio: float = 0.0,
        lone_session: ort.InferenceSession | None = None,
        lease: CoreLease | None = None,
    ) -> None:
        self.version_dir = version_dir
        self.name = version_dir.parent.name
        self.version = int(version_dir.name)
        self.config = model_config
        self.task = model_config.get("task", "classification")
        self.text_pair = bool(model_config.get("text_pair", False))
        # How the run encoded and decoded (versions exported before these keys: as served then)
        self.truncation = model_config.get("truncation", "head")
        self.decoding = model_config.get("decoding", "argmax")
        self.labels = labels
        self.session = session
        # The every-core session for lone requests and the lease it runs under
        # (tfllm_serving.cores); without a lease there is no second session.
        self.lone_session = lone_session if lease is not None else None
        self.lease = lease
        self.lone_runs = 0
        self.max_len = max_sequence_length
        self.over_length = over_length
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0
        self.vocab_size = tokenizer.get_vocab_size()
        # The session decides which id inputs exist and their integer width.
        self.input_dtypes = {
            i.name: np.dtype(_ORT_TO_NUMPY.get(i.type, np.int64))
            for i in session.get_inputs()
            if i.name in ID_INPUTS
        }
        names = [o.name for o in session.get_outputs()]
        wanted = "embedding" if self.task == "embedding" else "logits"
        self.output_name = wanted if wanted in names else names[0]
        self.embedding_dim = int(model_config.get("embedding_dim", 0))
        # 0 = by device: a GPU merges every queued request, a CPU only similar widths.
        on_gpu = session.get_providers()[0] != "CPUExecutionProvider"
        self.max_padding_ratio = max_padding_ratio or (
            float("inf") if on_gpu else CPU_MAX_PADDING_RATIO)

    @classmethod
    def load(
        cls,
        version_dir: str | os.PathLike[str],
        artifact: str = "onnx",
        providers: list[str] | str = "auto",
        intra_op_threads: int = 0,
        intra_op_spinning: bool = False,
        max_sequence_length: int = 0,
        over_length: str = "truncate",
        max_padding_ratio: float = 0.0,
        lone_threads: int = 0,
        lease: CoreLease | None = None,
    ) -> ModelRuntime:
        """Read the version folder written by ``tfllm export`` and open the ORT session.

        With a `lease` and `lone_threads` above `intra_op_threads` (CPU only), a second
        session on `lone_threads` cores runs one-row batches whenever the lease can be had
        alone (`tfllm_serving.cores`).

        Raises ``ValueError``/``FileNotFoundError``/onnxruntime errors on a bad folder;
        the caller decides whether that rejects the version.
        """
        vdir = Path(version_dir)
        model_config = json.loads((vdir / "model_config.json").read_text(encoding="utf-8"))
        task = model_config.get("task", "classification")
        if task not in TASKS:
            raise ValueError(f"{vdir}: task must be one of {TASKS}, got {task!r}")
        if model_config.get("truncation", "head") not in TRUNCATIONS:
            raise ValueError(f"{vdir}: truncation must be one of {TRUNCATIONS}")
        if model_config.get("decoding", "argmax") not in DECODINGS:
            raise ValueError(f"{vdir}: decoding must be one of {DECODINGS}")
        artifacts = model_config.get("artifacts") or {"onnx": "model.onnx"}
        if artifact not in artifacts:
            raise ValueError(
                f"{vdir}: artifact {artifact!r} not in model_config.json artifacts "
                f"{sorted(artifacts)}"
            )
        model_path = vdir / artifacts[artifact]
        if model_path.suffix != ".onnx":
            raise ValueError(f"{vdir}: artifact {artifact!r} is {model_path.name}, not ONNX")
        labels = ([] if task == "embedding"
                  else json.loads((vdir / "labels.json").read_text(encoding="utf-8")))
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"{vdir}: labels.json must be a JSON list of strings")
        tokenizer = Tokenizer.from_file(str(vdir / "tokenizer.json"))

        session = _open_session(model_path, intra_op_threads, intra_op_spinning, providers)
        lone_session = None
        if (lease is not None and 0 < intra_op_threads < lone_threads
                and session.get_providers()[0] == "CPUExecutionProvider"):
            lone_session = _open_session(model_path, lone_threads, intra_op_spinning, providers)
        model_max = int(model_config.get("max_len", 512))
        limit = min(model_max, max_sequence_length) if max_sequence_length else model_max
        return cls(vdir, model_config, labels, tokenizer, session, limit, over_length,
                   max_padding_ratio, lone_session, lease)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def encode_texts(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None
    ) -> EncodedBatch:
        """Tokenize raw text (and second segments when the model takes pairs)."""
        if pairs is not None and not self.text_pair:
            raise InvalidInput("this model takes single texts; text_pair is not accepted")
        if pairs is None and self.text_pair:
            raise InvalidInput("this model takes sentence pairs; give text and text_pair")
        if not texts:
            raise InvalidInput("no texts given")
        reject = self.over_length == "reject"
        if self.task == "token_classification":
            # Words split at whitespace, as the run's CoNLL files gave them to training
            words = [text.split() for text in texts]
            enc = encode_words(self.tokenizer, words, 1 << 30 if reject else self.max_len)
        else:
            enc = encode_batch(self.tokenizer, texts, pairs, self.max_len,
                               truncation=None if reject else self.truncation)
        if reject:
            for i, n in enumerate(enc["attention_mask"].sum(1).tolist()):
                if n > self.max_len:
                    raise InvalidInput(
                        f"instance {i}: {n} tokens exceed max sequence length {self.max_len}"
                    )
        batch = EncodedBatch.from_ids(enc["input_ids"], enc["attention_mask"],
                                      enc["token_type_ids"])
        if self.task == "token_classification":
            batch.words, batch.first_token = words, enc["first_token"]
        return batch

    def check_ids(self, batch: EncodedBatch) -> EncodedBatch:
        """Validate client-given token ids so bad values answer 400, not a session error."""
        if batch.input_ids.ndim != 2 or batch.width == 0 or batch.size == 0:
            raise InvalidInput("input_ids must be a non-empty [batch, seq] integer tensor")
        for name in ("attention_mask", "token_type_ids"):
            if getattr(batch, name).shape != batch.input_ids.shape:
                raise InvalidInput(f"{name} must have the shape of input_ids")
        if batch.input_ids.min() < 0 or batch.input_ids.max() >= self.vocab_size:
            raise InvalidInput(f"input_ids must be in [0, {self.vocab_size})")
        if not np.isin(batch.attention_mask, (0, 1)).all():
            raise InvalidInput("attention_mask values must be 0 or 1")
        if not np.isin(batch.token_type_ids, (0, 1)).all():
            raise InvalidInput("token_type_ids values must be 0 or 1")
        if batch.width > self.max_len:
            if self.over_length == "reject":
                raise InvalidInput(
                    f"sequence length {batch.width} exceeds max sequence length {self.max_len}"
                )
            batch = EncodedBatch(
                batch.input_ids[:, : self.max_len],
                batch.attention_mask[:, : self.max_len],
                batch.token_type_ids[:, : self.max_len],
            )
        return batch

    def run(self, batch: EncodedBatch) -> BatchOutput:
        """One session call on an already padded batch."""
        with self._session_for(batch.size) as session:
            (values,) = session.run([self.output_name], self._feed(batch))
        values = np.asarray(values, dtype=np.float32)
        if self.task == "embedding":
            return BatchOutput(embedding=values)
        return BatchOutput(values, softmax(values))

    def _feed(self, batch: EncodedBatch) -> dict[str, np.ndarray]:
        return {name: getattr(batch, name).astype(dtype, copy=False)
                for name, dtype in self.input_dtypes.items()}

    def _shared(self) -> AbstractContextManager[None]:
        """What an ordinary run holds: the lease, shared, when lone runs may take it."""
        return self.lease.shared() if self.lone_session is not None else nullcontext()

    @contextmanager
    def _session_for(self, rows: int) -> Iterator[ort.InferenceSession]:
        if self.lone_session is not None and rows == 1:
            with self.lease.exclusive_or_not() as alone:
                if alone:
                    self.lone_runs += 1
                    yield self.lone_session
                    return
        with self._shared():
            yield self.session

    @property
    def output_names(self) -> tuple[str, ...]:
        """What a predict request may ask for (TF Serving's output names)."""
        return ("embedding",) if self.task == "embedding" else ("logits", "probabilities")

    def run_many(self, batches: Sequence[EncodedBatch]) -> list[BatchOutput]:
        """Run requests merged into padded batches of similar width (`width_groups`) and
        split the outputs back, in the order given."""
        results: list[BatchOutput] = [None] * len(batches)  # type: ignore[list-item]
        for group in width_groups([b.width for b in batches], [b.size for b in batches],
                                  self.max_padding_ratio):
            for i, out in zip(group, self._run_merged([batches[i] for i in group]),
                              strict=True):
                results[i] = out
        return results

    def _run_merged(self, batches: Sequence[EncodedBatch]) -> list[BatchOutput]:
        if len(batches) == 1:
            return [self.run(batches[0])]
        width = max(b.width for b in batches)
        total = sum(b.size for b in batches)
        merged = EncodedBatch(
            np.full((total, width), self.pad_id, dtype=np.int64),
            np.zeros((total, width), dtype=np.int64),
            np.zeros((total, width), dtype=np.int64),
        )
        row = 0
        for b in batches:
            merged.input_ids[row : row + b.size, : b.width] = b.input_ids
            merged.attention_mask[row : row + b.size, : b.width] = b.attention_mask
            merged.token_type_ids[row : row + b.size, : b.width] = b.token_type_ids
            row += b.size
        out = self.run(merged)
        results, row = [], 0
        for b in batches:
            # Per-token outputs go back at the request's own width.
            width = b.width if self.task == "token_classification" else None
            results.append(out.rows(slice(row, row + b.size), width))
            row += b.size
        return results

    def sanity_input(self, rows: int = 1) -> EncodedBatch:
        """A short real sentence through the real tokenizer (pairs when the model takes them)."""
        texts = ["the quick brown fox jumps over the lazy dog ."] * rows
        return self.encode_texts(texts, list(texts) if self.text_pair else None)

    def warmup_input(self, rows: int) -> EncodedBatch:
        """The widest shape requests can reach: the sanity row's ids repeated to max_len."""
        row = self.sanity_input(1)
        reps = -(-self.max_len // row.width)
        return EncodedBatch(
            np.tile(row.input_ids, (rows, reps))[:, : self.max_len],
            np.ones((rows, self.max_len), dtype=np.int64),
            np.tile(row.token_type_ids, (rows, reps))[:, : self.max_len],
        )

    def validate_and_warm_up(self, max_batch_size: int = 1, warmup: bool = True) -> None:
        """Answer a sanity input and check its outputs; with warmup also run the big shapes.

        Raises ``ValueError`` when the model does not answer like the config says.
        """
        missing = {"input_ids", "attention_mask"} - set(self.input_dtypes)
        if missing:
            raise ValueError(f"ONNX model lacks inputs {sorted(missing)}")
        batch = self.sanity_input(1)
        (name, values), *_ = self.run(batch).arrays().items()
        want = {"classification": (1, len(self.labels)),
                "token_classification": (1, batch.width, len(self.labels)),
                "embedding": (1, self.embedding_dim or values.shape[-1])}[self.task]
        if values.shape != want:
            raise ValueError(
                f"sanity input gave {name} of shape {values.shape}, expected {want} "
                f"(task {self.task}, {len(self.labels)} labels)"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"sanity input gave non-finite {name}")
        if warmup:
            # The first run at a new shape is slow (allocation, kernel selection).
            with self._shared():
                self.session.run([self.output_name],
                                 self._feed(self.warmup_input(max(1, max_batch_size))))
            if self.lone_session is not None:
                with self.lease.exclusive_or_not() as alone:
                    if alone:  # else its first lone request pays for it, once
                        self.lone_session.run([self.output_name],
                                              self._feed(self.warmup_input(1)))

    def signature_defs(self) -> dict[str, Any]:
        """TF Serving ``SignatureDefMap`` as JSON: ``serving_default`` takes text (like the
        exported SavedModel), ``token_ids`` takes the ONNX id tensors; predict accepts
        either input form under either name."""

        def info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
            return {
                "dtype": dtype,
                "tensor_shape": {
                    "dim": [{"size": str(d), "name": ""} for d in dims],
                    "unknown_rank": False,
                },
                "name": f"{name}:0",
            }

        n = len(self.labels)
        out_dims = {"classification": [-1, n], "token_classification": [-1, -1, n],
                    "embedding": [-1, self.embedding_dim or -1]}[self.task]
        outputs = {name: info(name, "DT_FLOAT", out_dims) for name in self.output_names}
        text_inputs = {"text": info("text", "DT_STRING", [-1])}
        if self.text_pair:
            text_inputs["text_pair"] = info("text_pair", "DT_STRING", [-1])
        id_inputs = {
            name: info(name, _NUMPY_TO_DT[dtype], [-1, -1])
            for name, dtype in self.input_dtypes.items()
        }
        method = "tensorflow/serving/predict"
        return {
            "signature_def": {
                "serving_default": {
                    "inputs": text_inputs,
                    "outputs": outputs,
                    "method_name": method,
                },
                "token_ids": {"inputs": id_inputs, "outputs": outputs, "method_name": method},
            }
        }


SIGNATURE_NAMES = ("serving_default", "token_ids", "")
