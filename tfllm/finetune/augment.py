"""EDA-style text augmentation (Wei & Zou, 2019) and an optional back-translation hook.

Ops per new copy: random swap, random deletion, random insertion of a word from the same
text, and synonym replacement only when a synonym file is given (TSV: word, then its
synonyms) -- no WordNet is bundled and nothing is downloaded. Back-translation runs
through a callable the user names as `module:function` (list[str] -> list[str]).
No library in DESIGN.md does this, hence the few lines here.

Example:

>>> from tfllm.finetune.augment import AugmentConfig, eda
>>> import random
>>> out = eda("the film was quietly moving", AugmentConfig(alpha=0.3), random.Random(0))
>>> sorted(out.split()) != [] and out != ""
True
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfllm.errors import InputError


@dataclass
class AugmentConfig:
    copies: int = 0  # augmented copies per training example; 0 = off
    alpha: float = 0.1  # share of words changed per op
    synonyms: str | None = None  # TSV: word<TAB>synonym<TAB>synonym...
    back_translate: str | None = None  # "module:function", list[str] -> list[str]
    seed: int = 13


def read_synonyms(path: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"augment.synonyms: cannot read {path} ({err.strerror})") from err
    for number, line in enumerate(lines, start=1):
        parts = [p.strip() for p in line.split("\t") if p.strip()]
        if len(parts) == 1:
            raise InputError(f"{path}:{number}: a word with no synonyms (word<TAB>synonym...)")
        if parts:
            table[parts[0].lower()] = parts[1:]
    return table


def load_callable(spec: str) -> Callable[[list[str]], list[str]]:
    module, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(f"augment.back_translate: cannot import {spec!r} ({err})") from err
    if not callable(function):
        raise InputError(f"augment.back_translate: {spec!r} is not callable")
    return function


def eda(text: str, cfg: AugmentConfig, rng: random.Random,
        synonyms: dict[str, list[str]] | None = None) -> str:
    """One augmented copy of `text` (one randomly chosen op)."""
    words = text.split()
    if len(words) < 2:
        return text
    n = max(1, int(cfg.alpha * len(words)))
    ops = ["swap", "delete", "insert"] + (["synonym"] if synonyms else [])
    op = rng.choice(ops)
    if op == "swap":
        for _ in range(n):
            i, j = rng.randrange(len(words)), rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
    elif op == "delete":
        kept = [w for w in words if rng.random() > cfg.alpha]
        words = kept or [rng.choice(words)]
    elif op == "insert":
        for _ in range(n):
            words.insert(rng.randrange(len(words) + 1), rng.choice(words))
    else:
        candidates = [i for i, w in enumerate(words) if w.lower() in synonyms]
        for i in rng.sample(candidates, min(n, len(candidates))):
            words[i] = rng.choice(synonyms[words[i].lower()])
    return " ".join(words)


def augment_texts(texts: list[str], cfg: AugmentConfig) -> list[list[str]]:
    """`cfg.copies` new versions of each text (plus one back-translation when configured)."""
    rng = random.Random(cfg.seed)
    synonyms = read_synonyms(cfg.synonyms) if cfg.synonyms else None
    copies = [[eda(t, cfg, rng, synonyms) for _ in range(cfg.copies)] for t in texts]
    if cfg.back_translate:
        translated = load_callable(cfg.back_translate)(list(texts))
        if len(translated) != len(texts):
            raise InputError(f"augment.back_translate returned {len(translated)} texts "
                             f"for {len(texts)}")
        for row, text in zip(copies, translated, strict=True):
            row.append(str(text))
    return copies
