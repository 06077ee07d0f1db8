"""Dynamic (RoBERTa-style) masking in tf.data: fresh MLM masks every time a batch is read.

Uses keras-hub's `MaskedLMMaskGenerator` on the unmasked `input_ids` of pretraining
TFRecords written with `masking: dynamic`, and emits the same feature names as the
statically masked records, so the trainer does not care which kind it reads.

Example:

>>> import tensorflow as tf
>>> from tfllm.data.masking import dynamic_masking
>>> batch = {"input_ids": tf.constant([[2, 10, 11, 12, 13, 3, 0, 0]]),
...          "input_mask": tf.constant([[1, 1, 1, 1, 1, 1, 0, 0]])}
>>> mask = dynamic_masking(vocab_size=20, mask_id=4, special_ids=[0, 1, 2, 3, 4],
...                        max_predictions=3, masked_lm_prob=1.0)
>>> out = mask(batch)
>>> sorted(out)
['input_ids', 'input_mask', 'masked_lm_ids', 'masked_lm_positions', 'masked_lm_weights']
>>> int(tf.reduce_sum(out["masked_lm_weights"]))  # every real token chosen, capped at 3
3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


def dynamic_masking(
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int],
    max_predictions: int = 20,
    masked_lm_prob: float = 0.15,
    mask_token_rate: float = 0.8,
    random_token_rate: float = 0.1,
) -> Callable[[dict], dict]:
    """A function for `Dataset.map` that adds `masked_lm_*` features to a batch dict.

    Masks are drawn from TF's random ops: seed them with `tf.random.set_seed`.
    """
    import keras_hub

    generator = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=vocab_size,
        mask_selection_rate=masked_lm_prob,
        mask_token_id=mask_id,
        mask_selection_length=max_predictions,
        unselectable_token_ids=sorted(set(special_ids)),
        mask_token_rate=mask_token_rate,
        random_token_rate=random_token_rate,
    )

    def apply(batch: dict) -> dict:
        masked = generator(batch["input_ids"])
        out = dict(batch)
        out["input_ids"] = tf.cast(masked["token_ids"], batch["input_ids"].dtype)
        out["masked_lm_positions"] = tf.cast(masked["mask_positions"], tf.int32)
        out["masked_lm_ids"] = tf.cast(masked["mask_ids"], tf.int32)
        out["masked_lm_weights"] = tf.cast(masked["mask_weights"], tf.float32)
        return out

    return apply
