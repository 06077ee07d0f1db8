"""Fine-tuning inputs on real SST-2 sentences: padding per batch, length buckets, head+tail."""

from __future__ import annotations

import numpy as np
from tfllm_serving.wordpiece import load_tokenizer

from tfllm.data.tasks import Example, read_examples
from tfllm.finetune.features import batched, classification_features
from tfllm.models.checkpoints import load_checkpoint


def test_length_buckets_keep_every_example_once_and_pad_less(tmp_path, data_dir, minilm_dir):
    tokenizer = load_tokenizer(load_checkpoint(str(minilm_dir), tmp_path).tokenizer_dir)
    examples = read_examples(data_dir / "sst2" / "dev.tsv", text_column="sentence")
    x = classification_features(tokenizer, examples, 64)
    y = np.arange(len(examples))
    seen, padded = {}, {}
    for by_length in (False, True):
        ids, cells = [], 0
        ds = batched(x, y, 32, shuffle=True, seed=1, by_length=by_length)
        assert int(ds.cardinality()) == len(list(ds))  # a known, exact epoch length
        for features, labels in ds:
            mask = features["padding_mask"].numpy()
            assert mask[:, -1].any()  # each batch is cut to its own longest row
            np.testing.assert_array_equal(features["token_ids"].numpy(),
                                          x["token_ids"][labels.numpy(), :mask.shape[1]])
            ids += labels.numpy().tolist()
            cells += mask.size
        seen[by_length], padded[by_length] = sorted(ids), cells
    assert seen[True] == seen[False] == list(range(len(examples)))
    assert padded[True] < 0.8 * padded[False]


def test_head_tail_truncation_keeps_the_ending_of_a_long_real_review(tmp_path, data_dir,
                                                                    minilm_dir):
    tokenizer = load_tokenizer(load_checkpoint(str(minilm_dir), tmp_path).tokenizer_dir)
    review = read_examples(data_dir / "imdb" / "test.tsv", text_column="text")[0].text
    head = classification_features(tokenizer, [Example(review, "0")], 128)["token_ids"][0]
    both = classification_features(tokenizer, [Example(review, "0")], 128,
                                   "head_tail")["token_ids"][0]
    full = tokenizer.encode(review).ids
    assert len(full) > 300
    assert head.tolist() == full[:127] + [full[-1]]  # [CLS] + first tokens + [SEP]
    assert both.tolist() == full[:32] + full[-96:]  # first quarter, last three quarters
