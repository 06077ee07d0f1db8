"""Model inputs for fine-tuning and prediction: token ids from the TF-free tokenizer, and the
tf.data pipeline that pads each batch only to its longest row.

Long texts (IMDB) can keep the head and the tail instead of the head only
(`truncation: head_tail`, Sun et al. 2019: the first quarter and the last three quarters
of the budget), since reviews often conclude at the end.

Example:

>>> from tfllm.data.tasks import Example
>>> from tfllm.finetune.features import classification_features
>>> from tfllm_serving.wordpiece import build_bert_tokenizer
>>> tok = build_bert_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
>>> x = classification_features(tok, [Example("a a a b b c c c", "0")], 8, "head_tail")
>>> x["token_ids"].tolist()   # [CLS] a | b b c c c [SEP]: 2 of 8 from the head, 6 from the tail
[[2, 5, 6, 6, 7, 7, 7, 3]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tfllm_serving.wordpiece import TRUNCATIONS, encode_batch
from tokenizers import Tokenizer

from tfllm.data.tasks import Example
from tfllm.errors import InputError


def classification_features(tokenizer: Tokenizer, examples: list[Example], max_len: int,
                            truncation: str = "head") -> dict[str, np.ndarray]:
    """keras-hub BERT inputs (`token_ids`, `segment_ids`, `padding_mask`) padded to max_len,
    from the encoder the server runs (`tfllm_serving.wordpiece`)."""
    if truncation not in TRUNCATIONS:
        raise InputError(f"task.truncation must be one of {', '.join(TRUNCATIONS)}, "
                         f"not {truncation!r}")
    pairs = None
    if examples and examples[0].text_pair is not None:
        if truncation != "head":
            raise InputError("task.truncation head_tail is for single texts, not pairs")
        pairs = [e.text_pair or "" for e in examples]
    return keras_inputs(encode_batch(tokenizer, [e.text for e in examples], pairs,
                                     max_len=max_len, pad_to_max_len=True,
                                     truncation=truncation))


def keras_inputs(enc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face input names -> keras-hub BertBackbone input names."""
    return {"token_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"],
            "padding_mask": enc["attention_mask"]}


BUCKETS = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384]


def batched(x: dict, y: np.ndarray | None, batch: int, shuffle: bool, seed: int,
            by_length: bool = False) -> Any:
    """tf.data batches of (x[, y]), each cut to its longest row (y too when per token).
    `by_length` groups similar lengths into a batch (tf.data bucketing: less padding)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y) if y is not None else x)
    if shuffle:
        ds = ds.shuffle(len(x["token_ids"]), seed=seed, reshuffle_each_iteration=True)
    if by_length:
        ds = ds.bucket_by_sequence_length(
            lambda features, *_: tf.reduce_sum(features["padding_mask"]), BUCKETS,
            [batch] * (len(BUCKETS) + 1))
        # Known up front (per bucket, full batches + one partial), so Keras' progress bar
        # has a total and fit does not warn that the first epoch "ran out of data".
        sizes = np.bincount(np.searchsorted(BUCKETS, x["padding_mask"].sum(1), side="right"))
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(np.ceil(sizes / batch).sum())))
    else:
        ds = ds.batch(batch)
    # per token: tag ids [n, len], or tag ids + a teacher's logits [n, len, 1 + labels]
    per_token = y is not None and y.ndim in (2, 3) and y.shape[1] == x["token_ids"].shape[1]

    def trim(features, labels=None):
        # Pad to the batch's longest row, not max_len: most sentences are short.
        width = tf.reduce_max(tf.reduce_sum(features["padding_mask"], axis=1))
        features = {k: v[:, :width] for k, v in features.items()}
        if labels is None:
            return features
        return features, (labels[:, :width] if per_token else labels)

    return ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def predict_logits(model: Any, tokenizer: Tokenizer, examples: list[Example], max_len: int,
                   batch: int = 64, truncation: str = "head", progress: bool = False) -> np.ndarray:
    """Classifier logits [n, classes] for examples (a Keras progress bar if `progress`)."""
    x = classification_features(tokenizer, examples, max_len, truncation)
    return classifier_logits(model, x, batch, progress)


def classifier_logits(model: Any, x: dict[str, np.ndarray], batch: int = 64,
                      progress: bool = False) -> np.ndarray:
    """Classifier logits [n, classes] for encoded inputs, in their order."""
    x, order = _shortest_first(x)
    logits = model.predict(batched(x, None, batch, False, 0), verbose=1 if progress else 0)
    return _unsorted(logits, order)


def predict_token_logits(model: Any, x: dict[str, np.ndarray], batch: int = 64,
                         progress: bool = False) -> np.ndarray:
    """Tagger logits [n, width, labels], each batch padded back to the inputs' width
    (batches have different widths, so Keras' predict cannot concatenate them)."""
    import keras

    width = x["token_ids"].shape[1]
    chunks = []
    bar = keras.utils.Progbar(-(-len(x["token_ids"]) // batch)) if progress else None
    x, order = _shortest_first(x)
    for features in batched(x, None, batch, False, 0):
        logits = np.asarray(model.predict_on_batch(features))
        chunks.append(np.pad(logits, ((0, 0), (0, width - logits.shape[1]), (0, 0))))
        if bar:
            bar.add(1)
    return _unsorted(np.concatenate(chunks), order)


def _shortest_first(x: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(the rows sorted by length, the order that sorted them): each batch then pads to its
    own longest row, not the set's (a random batch of reviews almost always holds one at
    max_len)."""
    order = np.argsort(x["padding_mask"].sum(1), kind="stable")
    return {k: v[order] for k, v in x.items()}, order


def _unsorted(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(rows)
    out[order] = rows
    return out
