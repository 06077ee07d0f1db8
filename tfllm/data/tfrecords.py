"""Pretraining examples as sharded TFRecords, and the tf.data pipeline that reads them back.

Feature names are those of the reference BERT data (`input_ids`, `input_mask`,
`segment_ids`, `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`,
`next_sentence_labels`, 1 = random next), so data made by other BERT tooling loads too.

Example:

>>> import tempfile, pathlib
>>> from tfllm.data.pretraining import Instance
>>> from tfllm.data.tfrecords import load_pretraining_dataset, write_shards
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> inst = Instance([2, 7, 4, 3], [0, 0, 0, 0], False, [2], [9])
>>> write_shards([inst] * 3, out, seq_len=8, max_predictions=2, num_shards=2)
['pretrain-00000-of-00002.tfrecord', 'pretrain-00001-of-00002.tfrecord']
>>> batch = next(iter(load_pretraining_dataset(out, 8, 2, batch_size=3, shuffle=False)))
>>> batch["input_ids"].shape.as_list(), batch["masked_lm_ids"].numpy()[0].tolist()
([3, 8], [9, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from tfllm.data.pretraining import Instance

SHARD_PATTERN = "pretrain-*-of-*.tfrecord"


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def serialize(instance: Instance, seq_len: int, max_predictions: int, masked: bool) -> bytes:
    pad = seq_len - len(instance.tokens)
    features = {
        "input_ids": _ints(instance.tokens + [0] * pad),
        "input_mask": _ints([1] * len(instance.tokens) + [0] * pad),
        "segment_ids": _ints(instance.segment_ids + [0] * pad),
        "next_sentence_labels": _ints([int(instance.is_random_next)]),
    }
    if masked:
        n = len(instance.masked_positions)
        fill = [0] * (max_predictions - n)
        features["masked_lm_positions"] = _ints(instance.masked_positions + fill)
        features["masked_lm_ids"] = _ints(instance.masked_labels + fill)
        features["masked_lm_weights"] = _floats([1.0] * n + [0.0] * len(fill))
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def write_shards(
    instances: Sequence[Instance],
    out: Path,
    seq_len: int,
    max_predictions: int,
    num_shards: int,
    masked: bool = True,
) -> list[str]:
    """Write instances round-robin into `num_shards` files in `out`; return the names."""
    names = [f"pretrain-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(str(out / name)) for name in names]
    try:
        for index, instance in enumerate(tqdm(instances, desc="write", unit="ex", leave=False)):
            writers[index % num_shards].write(
                serialize(instance, seq_len, max_predictions, masked)
            )
    finally:
        for writer in writers:
            writer.close()
    return names


SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")


def feature_spec(seq_len: int, max_predictions: int, masked: bool = True) -> dict:
    spec = {
        "input_ids": tf.io.FixedLenFeature([seq_len], tf.int64),
        "input_mask": tf.io.FixedLenFeature([seq_len], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([seq_len], tf.int64),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
    if masked:
        spec["masked_lm_positions"] = tf.io.FixedLenFeature([max_predictions], tf.int64)
        spec["masked_lm_ids"] = tf.io.FixedLenFeature([max_predictions], tf.int64)
        spec["masked_lm_weights"] = tf.io.FixedLenFeature([max_predictions], tf.float32)
    return spec


def shard_files(directory: str | Path) -> list[str]:
    return sorted(str(p) for p in Path(directory).glob(SHARD_PATTERN))


def load_pretraining_dataset(
    directory: str | Path,
    seq_len: int,
    max_predictions: int,
    batch_size: int,
    masked: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    bucket_width: int = 0,
) -> tf.data.Dataset:
    """Batched dicts of int32 features from the shards (sharded per input pipeline).

    `bucket_width` > 0 batches examples of similar length together and pads each batch only
    to the next multiple of `bucket_width` above its longest row, not to `seq_len`.
    """
    files = shard_files(directory)
    if not files:
        raise FileNotFoundError(f"no {SHARD_PATTERN} files in {directory}")
    spec = feature_spec(seq_len, max_predictions, masked)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    ds = tf.data.Dataset.from_tensor_slices(files)
    if pipelines > 1 and len(files) >= pipelines:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    # Deterministic order (seeded shuffles) so that a resumed run can skip to its position.
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if pipelines > 1 and len(files) < pipelines:  # too few files: shard the records instead
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if shuffle:
        ds = ds.shuffle(10_000, seed=seed)

    def parse(serialized: tf.Tensor) -> dict:
        parsed = tf.io.parse_example(serialized, spec)
        return {
            key: tf.cast(value, tf.int32) if value.dtype == tf.int64 else value
            for key, value in parsed.items()
        }

    if not bucket_width:
        ds = ds.batch(batch_size, drop_remainder=True)
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    ds = ds.batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    boundaries = list(range(bucket_width + 1, seq_len + 1, bucket_width))
    ds = ds.bucket_by_sequence_length(lambda example: tf.reduce_sum(example["input_mask"]),
                                      boundaries, [batch_size] * (len(boundaries) + 1),
                                      drop_remainder=True)

    def trim(batch: dict) -> dict:
        longest = tf.reduce_max(tf.reduce_sum(batch["input_mask"], axis=1))
        length = tf.minimum((longest + bucket_width - 1) // bucket_width * bucket_width, seq_len)
        return {key: value[:, :length] if key in SEQUENCE_FEATURES else value
                for key, value in batch.items()}

    return ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
