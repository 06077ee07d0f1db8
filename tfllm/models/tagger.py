"""Token classification (NER): the head, and the model called on raw text.

keras-hub has a BERT text classifier but no token classifier, so the head is the small
functional model a Keras user would write (backbone sequence output -> dropout -> dense per
token); it saves and loads as a plain `model.keras`, which plain Keras can call on token ids
(`token_ids`, `segment_ids`, `padding_mask`) but not on text: keras-hub has no preprocessor
that keeps track of words. `TokenTagger` is that missing piece: a NER RUN_DIR called on raw
text, words split at whitespace (as CoNLL files give them), each word tagged from its first
sub-token and decoded as the run decoded (`task.decoding`), with the entities. `tfllm
predict` and the server answer the same.

Example:

>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.models.tagger import TokenTagger, build_token_classifier
>>> from tfllm_serving.wordpiece import build_bert_tokenizer
>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "brca1", "deficiency", "in", "mice"]
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=len(vocab))
>>> model = build_token_classifier(backbone, num_labels=3)
>>> model.output_shape
(None, None, 3)
>>> tagger = TokenTagger(model, build_bert_tokenizer(vocab), ["B-Disease", "I-Disease", "O"],
...                      max_len=32, decoding="bio")
>>> row = tagger(["BRCA1 deficiency in mice"])[0]
>>> row["words"], len(row["tags"])
(['BRCA1', 'deficiency', 'in', 'mice'], 4)

From a RUN_DIR: `TokenTagger.load("runs/ncbi_disease")(["Hereditary breast cancer ."])`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def build_token_classifier(backbone: Any, num_labels: int, dropout: float = 0.1) -> Any:
    """Logits [batch, tokens, num_labels]; inputs are the backbone's (token_ids, segment_ids,
    padding_mask)."""
    import keras

    inputs = backbone.input
    sequence = backbone(inputs)["sequence_output"]
    sequence = keras.layers.Dropout(dropout, name="tagger_dropout")(sequence)
    logits = keras.layers.Dense(
        num_labels, name="tagger_logits",
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))(sequence)
    return keras.Model(inputs, logits, name="bert_token_classifier")


class TokenTagger:
    """A token classifier on raw text: `tagger(texts)` -> per text `words`, `tags` and
    `entities` (`type`, `start`, `end` exclusive, `text`)."""

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str], max_len: int,
                 decoding: str = "bio", batch_size: int = 64) -> None:
        self.model, self.tokenizer, self.labels = model, tokenizer, list(labels)
        self.max_len, self.decoding, self.batch_size = max_len, decoding, batch_size

    @classmethod
    def load(cls, run_dir: str | Path) -> TokenTagger:
        """The tagger of a fine-tuned NER RUN_DIR (its model, tokenizer, labels, max_len and
        decoding)."""
        import yaml
        from tfllm_serving.wordpiece import load_tokenizer

        from tfllm.models.run_dir import load_run_model

        run_dir = Path(run_dir)
        task = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["task"]
        labels = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
        return cls(load_run_model(run_dir), load_tokenizer(run_dir / "tokenizer"), labels,
                   task["max_len"], task.get("decoding", "bio"))

    def __call__(self, texts: Sequence[str]) -> list[dict]:
        from tfllm_serving.tagging import decode_tags, entities
        from tfllm_serving.wordpiece import encode_words

        words = [text.split() for text in texts]
        enc = encode_words(self.tokenizer, words, self.max_len)
        tags = decode_tags(enc["first_token"], self.logits(enc), self.labels,
                           [len(w) for w in words], self.decoding)
        return [{"words": w, "tags": t, "entities": entities(t, w)}
                for w, t in zip(words, tags, strict=True)]

    def logits(self, enc: dict[str, np.ndarray]) -> np.ndarray:
        """[rows, width, labels] logits, run shortest rows first so that each batch pads only
        to its own longest row."""
        lengths = enc["attention_mask"].sum(1)
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((*enc["input_ids"].shape, len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = int(lengths[rows].max())
            x = {"token_ids": enc["input_ids"][rows, :width],
                 "segment_ids": enc["token_type_ids"][rows, :width],
                 "padding_mask": enc["attention_mask"][rows, :width]}
            out[rows, :width] = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return out
