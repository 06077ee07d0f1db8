"""Request bodies -> :class:`EncodedBatch`, and model outputs -> response bodies, in TF
Serving's REST shapes (row ``instances``/``predictions``, columnar ``inputs``/``outputs``,
``examples``/``result`` for classify). gRPC feeds :func:`encode_named` too, so both APIs
accept and reject exactly the same inputs.

    parsed, row_format = parse_predict_body({"instances": ["a fine film ."]}, rt, 8)
    format_predictions(parsed, rt.run(parsed.batch), rt)
    # -> [{"logits": [...], "probabilities": [...]}]
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInput
from .runtime import ID_INPUTS, SIGNATURE_NAMES, BatchOutput, EncodedBatch, ModelRuntime
from .tagging import decode_tags, entities

TEXT_INPUTS = ("text", "text_pair")


@dataclass
class ParsedInputs:
    """An encoded request plus what formatting its answer needs."""

    batch: EncodedBatch
    # Meaningful tokens per row (text: real tokens; ids: the length the client sent).
    lengths: list[int]
    from_text: bool
    texts: list[str] | None = None  # the request's texts (the prediction log keeps them)


def check_signature(body: dict[str, Any]) -> None:
    name = body.get("signature_name", "")
    if name not in SIGNATURE_NAMES:
        raise InvalidInput(f'Serving signature name: "{name}" not found in signature def')


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{where}: b64 value is not base64 of UTF-8 text") from exc
    raise InvalidInput(f"{where}: expected a string, got {type(value).__name__}")


def _int_tensor(value: Any, rank: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise InvalidInput(f"{where}: not a rectangular integer tensor") from exc
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            raise InvalidInput(f"{where}: empty tensor")
        raise InvalidInput(f"{where}: expected integers, got {arr.dtype.name} values")
    if arr.ndim != rank:
        raise InvalidInput(f"{where}: expected rank {rank}, got shape {list(arr.shape)}")
    if arr.size == 0:
        raise InvalidInput(f"{where}: empty tensor")
    return arr.astype(np.int64, copy=False)


def _unknown_keys(keys: set[str], where: str) -> None:
    unknown = keys - set(TEXT_INPUTS) - set(ID_INPUTS)
    if unknown:
        raise InvalidInput(
            f"{where}: unknown input(s) {sorted(unknown)}; this model takes "
            f"text [+ text_pair] or {', '.join(ID_INPUTS)}"
        )
    if keys & set(TEXT_INPUTS) and keys & set(ID_INPUTS):
        raise InvalidInput(f"{where}: give either text or token ids, not both")


def _check_count(n: int, max_instances: int) -> None:
    if n == 0:
        raise InvalidInput("the request has no instances")
    if n > max_instances:
        raise InvalidInput(f"the request has {n} instances; the limit is {max_instances}")


def encode_named(
    runtime: ModelRuntime, named: dict[str, Any], max_instances: int
) -> ParsedInputs:
    """Columnar inputs (also gRPC's): ``text`` [+ ``text_pair``] lists, or batched id tensors."""
    _unknown_keys(set(named), "inputs")
    if "text" in named or "text_pair" in named:
        if "text" not in named:
            raise InvalidInput("inputs: text_pair needs text")
        texts = named["text"]
        if not isinstance(texts, list):
            raise InvalidInput("inputs.text: expected a list of strings (batch first)")
        _check_count(len(texts), max_instances)
        texts = [_text(t, f"inputs.text[{i}]") for i, t in enumerate(texts)]
        pairs = named.get("text_pair")
        if pairs is not None:
            if not isinstance(pairs, list) or len(pairs) != len(texts):
                raise InvalidInput("inputs.text_pair: expected a list as long as text")
            pairs = [_text(t, f"inputs.text_pair[{i}]") for i, t in enumerate(pairs)]
        return _from_text(runtime, texts, pairs)
    if "input_ids" not in named:
        raise InvalidInput("inputs: input_ids is required with token-id inputs")
    ids = _int_tensor(named["input_ids"], 2, "inputs.input_ids")
    _check_count(ids.shape[0], max_instances)
    extra = {
        k: _int_tensor(named[k], 2, f"inputs.{k}") for k in ID_INPUTS[1:] if k in named
    }
    batch = runtime.check_ids(EncodedBatch.from_ids(ids, **extra))
    return ParsedInputs(batch, [batch.width] * batch.size, from_text=False)


def _from_text(runtime: ModelRuntime, texts: list[str], pairs: list[str] | None) -> ParsedInputs:
    batch = runtime.encode_texts(texts, pairs)
    return ParsedInputs(batch, batch.attention_mask.sum(axis=1).tolist(), from_text=True,
                        texts=texts)


def encode_instances(runtime: ModelRuntime, instances: Any, max_instances: int) -> ParsedInputs:
    """Row format: each instance a string, ``{"text", "text_pair"?}``, a list of ids, or
    ``{"input_ids", "attention_mask"?, "token_type_ids"?}``; all of one kind."""
    if not isinstance(instances, list):
        raise InvalidInput("instances: expected a list")
    _check_count(len(instances), max_instances)
    texts: list[str] = []
    pairs: list[str] = []
    rows: list[dict[str, np.ndarray]] = []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(inst, str) or (isinstance(inst, dict) and set(inst) == {"b64"}):
            texts.append(_text(inst, where))
        elif isinstance(inst, list):
            rows.append({"input_ids": _int_tensor(inst, 1, where)})
        elif isinstance(inst, dict):
            _unknown_keys(set(inst), where)
            if "text" in inst:
                texts.append(_text(inst["text"], f"{where}.text"))
                if "text_pair" in inst:
                    pairs.append(_text(inst["text_pair"], f"{where}.text_pair"))
            elif "input_ids" in inst:
                row = {k: _int_tensor(v, 1, f"{where}.{k}") for k, v in inst.items()}
                for k, v in row.items():
                    if v.shape != row["input_ids"].shape:
                        raise InvalidInput(f"{where}.{k}: length differs from input_ids")
                rows.append(row)
            else:
                raise InvalidInput(f"{where}: needs text or input_ids")
        else:
            raise InvalidInput(
                f"{where}: expected a string, a list of token ids or an object, "
                f"got {type(inst).__name__}"
            )
    if texts and rows:
        raise InvalidInput("instances: mix of text and token-id instances; use one kind")
    if texts:
        if pairs and len(pairs) != len(texts):
            raise InvalidInput("instances: text_pair must be given for every instance or none")
        return _from_text(runtime, texts, pairs or None)
    return _stack_rows(runtime, rows)


def _stack_rows(runtime: ModelRuntime, rows: list[dict[str, np.ndarray]]) -> ParsedInputs:
    lengths = [len(r["input_ids"]) for r in rows]
    width = max(lengths)
    batch = EncodedBatch(
        np.full((len(rows), width), runtime.pad_id, dtype=np.int64),
        np.zeros((len(rows), width), dtype=np.int64),
        np.zeros((len(rows), width), dtype=np.int64),
    )
    for i, r in enumerate(rows):
        n = lengths[i]
        batch.input_ids[i, :n] = r["input_ids"]
        batch.attention_mask[i, :n] = r.get("attention_mask", 1)
        if "token_type_ids" in r:
            batch.token_type_ids[i, :n] = r["token_type_ids"]
    batch = runtime.check_ids(batch)
    return ParsedInputs(batch, [min(n, batch.width) for n in lengths], from_text=False)


def parse_predict_body(
    body: Any, runtime: ModelRuntime, max_instances: int
) -> tuple[ParsedInputs, bool]:
    """(encoded inputs, row_format) for a ``:predict`` body."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    check_signature(body)
    if "instances" in body and "inputs" in body:
        raise InvalidInput('Only one of "instances" or "inputs" can be specified')
    if "instances" in body:
        return encode_instances(runtime, body["instances"], max_instances), True
    if "inputs" not in body:
        raise InvalidInput('Missing "instances" or "inputs" key')
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        return encode_named(runtime, inputs, max_instances), False
    if isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
        return encode_named(runtime, {"text": inputs}, max_instances), False
    if isinstance(inputs, list):
        return encode_named(runtime, {"input_ids": inputs}, max_instances), False
    raise InvalidInput("inputs: expected an object of named tensors or a list (batch first)")


def parse_classify_body(body: Any, runtime: ModelRuntime, max_instances: int) -> ParsedInputs:
    """``{"examples": [{"text": ...}, ...], "context"?: {...}}`` (TF Example features as
    JSON; a one-element list counts as the value)."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    check_signature(body)
    if runtime.task != "classification":
        raise InvalidInput(f"classify needs a classification model; {runtime.name} is "
                           f"{runtime.task}")
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise InvalidInput('classify: "examples" must be a list')
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise InvalidInput('classify: "context" must be an object')
    instances = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise InvalidInput(f"examples[{i}]: expected an object of features")
        merged = {**context, **example}
        instances.append({k: _feature_value(v) for k, v in merged.items()})
    return encode_instances(runtime, instances, max_instances)


def _feature_value(value: Any) -> Any:
    # A tf.Example feature is a list; a one-element string list is that string.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | dict):
        return value[0]
    return value


def format_predictions(
    parsed: ParsedInputs, out: BatchOutput, runtime: ModelRuntime
) -> list[dict[str, Any]]:
    """Row format: one object per instance; per-token outputs cut to the row's length. A
    token classifier given text also answers its `words`, their `word_labels` (decoded as
    the run decoded them: `model_config.json` `decoding`) and the `entities` they spell."""
    token_level = runtime.task == "token_classification"
    batch = parsed.batch
    tags = None
    if token_level and batch.words is not None:
        tags = decode_tags(batch.first_token, out.logits, runtime.labels,
                           [len(w) for w in batch.words], runtime.decoding)
    preds = []
    for i in range(batch.size):
        n = parsed.lengths[i]
        pred: dict[str, Any] = {name: (value[i, :n] if token_level else value[i]).tolist()
                                for name, value in out.arrays().items()}
        if tags is not None:
            pred["words"], pred["word_labels"] = batch.words[i], tags[i]
            pred["entities"] = entities(tags[i], batch.words[i])
        preds.append(pred)
    return preds


def format_outputs(out: BatchOutput) -> dict[str, Any]:
    """Columnar format: each output as one batched tensor."""
    return {name: value.tolist() for name, value in out.arrays().items()}


def format_classify(out: BatchOutput, runtime: ModelRuntime) -> list[list[list[Any]]]:
    return [
        [[label, float(p)] for label, p in zip(runtime.labels, row, strict=True)]
        for row in out.probabilities
    ]
