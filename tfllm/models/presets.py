"""What plain Keras and keras-hub users get from a RUN_DIR: a `model.keras` that predicts,
evaluates and fits on raw strings, and a keras-hub task preset (`RUN_DIR/preset/`) that
`from_preset` loads, with no tfllm import (except a run with pruned heads or adapters:
`import tfllm.models.encoder` first, which registers its backbone class).

tfllm trains on token ids from its own encoder (`tfllm_serving.wordpiece`); at save time a
classifier gets keras-hub's own preprocessor (a `BertTokenizer` on the run's vocab with the
same lowercasing and accent stripping, `sequence_length` = the run's `max_len`) and a
fresh, unbuilt optimizer; on load keras-hub compiles it with its defaults (Adam 5e-5, sparse
cross-entropy on integer labels, accuracy), so loading restores everything and warns about
nothing. keras-hub cannot express head+tail
truncation: a `head_tail` run's preprocessor keeps the head. Pretraining runs become a
`BertMaskedLM` preset (the tied MLM head's weights copied over; keras-hub has no NSP head).
tfllm's own code (evaluate, predict, export) strips the preprocessor after loading and feeds
ids from the one encoder.

Example:

>>> import numpy as np
>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.models.presets import keras_hub_tokenizer, with_preprocessor
>>> from tfllm.finetune.train import build_classifier
>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "film"]
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=len(vocab))
>>> model = with_preprocessor(build_classifier(backbone, 2, 0.1),
...                           keras_hub_tokenizer(vocab, lowercase=True), max_len=16)
>>> model.predict(["A good film"], verbose=0).shape
(1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def keras_hub_tokenizer(vocab: Sequence[str], lowercase: bool) -> Any:
    """keras-hub's `BertTokenizer` normalizing like `tokenizers`' BertNormalizer: uncased
    vocabs strip accents too (keras-hub's default keeps them, and `fiancé` becomes [UNK])."""
    import keras_hub

    return keras_hub.models.BertTokenizer(vocabulary=list(vocab), lowercase=lowercase,
                                          strip_accents=lowercase)


def with_preprocessor(classifier: Any, tokenizer: Any, max_len: int) -> Any:
    """`classifier` (a keras-hub `BertTextClassifier`) taking raw strings (or pairs) in
    `predict`/`evaluate`/`fit`, compiled with keras-hub's defaults and a fresh optimizer."""
    import keras_hub

    classifier.preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tokenizer, sequence_length=max_len)
    classifier.compile()  # keras-hub's "auto": Adam(5e-5), sparse CE from logits, accuracy
    # A keras-hub task compiles itself like this when it is rebuilt on load, but overrides
    # compile() without compile_from_config, so a saved compile config only makes Keras warn
    # "compile() was not called": keep it out of model.keras.
    del classifier._compile_config
    return classifier


def masked_lm(pretrainer: Any, tokenizer: Any, seq_len: int, max_predictions: int) -> Any:
    """keras-hub's `BertMaskedLM` on the pretrained backbone, with the pretrainer's tied MLM
    head weights (the same `MaskedLMHead` layout) and a masking preprocessor."""
    import keras_hub

    preprocessor = keras_hub.models.BertMaskedLMPreprocessor(
        tokenizer=tokenizer, sequence_length=seq_len, mask_selection_length=max_predictions)
    model = keras_hub.models.BertMaskedLM(pretrainer.backbone, preprocessor=preprocessor)
    model.masked_lm_head.set_weights(pretrainer.mlm_head.get_weights())
    model.compile()
    return model


def without_preprocessor(model: Any) -> Any:
    """The loaded model, fed token ids by tfllm (a keras-hub task stops preprocessing)."""
    if getattr(model, "preprocessor", None) is not None:
        model.preprocessor = None
    return model
