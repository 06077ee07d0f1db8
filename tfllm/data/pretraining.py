"""BERT pretraining examples (MLM + NSP) from tokenized documents, in pure Python.

Follows the reference `create_pretraining_data.py` conventions (REFERENCE.md 4b):
segments are whole sentences packed up to the target length, 10% of examples get a
shorter random target (`short_seq_prob`), NSP takes the second segment from another
document half of the time (unused sentences are put back), the longer side of a pair
is trimmed from a random end, and 15% of the tokens are picked for prediction
(80% `[MASK]`, 10% a random token, 10% kept), capped at `max_predictions_per_seq`.

One deliberate difference: when a chunk holds a single sentence and the coin says
"actual next", the sentence is cut in two instead of being forced to a random next
segment, so `nsp_random_fraction` stays at 0.5 (the reference drifts above it on
corpora of short documents).

Example:

>>> import random
>>> from tfllm.data.pretraining import ExampleOptions, MaskingVocab, create_instances
>>> vocab = MaskingVocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)])
>>> docs = [[[5, 6, 7], [8, 9, 10, 11]], [[12, 13], [14, 15, 16]]]
>>> opts = ExampleOptions(seq_len=16, max_predictions_per_seq=3)
>>> inst = create_instances(docs, vocab, opts, random.Random(0))[0]
>>> inst.tokens[0] == vocab.cls_id and inst.tokens.count(vocab.sep_id) == 2
True
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tfllm.errors import InputError

_SPECIAL = re.compile(r"^\[[^\]]*\]$")


@dataclass
class ExampleOptions:
    """How pretraining examples are built (defaults follow the reference BERT script)."""

    seq_len: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    dupe_factor: int = 5
    short_seq_prob: float = 0.1
    nsp: bool = True
    whole_word_mask: bool = False
    masking: str = "static"  # `static` (masks in the TFRecords) or `dynamic` (at train time)
    examples_per_shard: int = 10_000
    seed: int = 12345


class MaskingVocab:
    """What masking needs from a vocab: special ids, word-continuation pieces, and the
    ids a random replacement may draw from (no `[...]` tokens)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        index = {t: i for i, t in enumerate(self.tokens)}
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]", "[UNK]") if t not in index]
        if missing:
            raise InputError(f"vocab lacks special tokens: {', '.join(missing)}")
        self.cls_id, self.sep_id = index["[CLS]"], index["[SEP]"]
        self.mask_id, self.unk_id = index["[MASK]"], index["[UNK]"]
        self.pad_id = index.get("[PAD]", 0)
        self.is_continuation = [t.startswith("##") for t in self.tokens]
        self.replacement_ids = [i for i, t in enumerate(self.tokens) if not _SPECIAL.match(t)]
        self.special_ids = frozenset(i for i, t in enumerate(self.tokens) if _SPECIAL.match(t))

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Instance:
    """One example before serialization."""

    tokens: list[int]
    segment_ids: list[int]
    is_random_next: bool
    masked_positions: list[int] = field(default_factory=list)
    masked_labels: list[int] = field(default_factory=list)


@dataclass
class MaskingCounts:
    """Running totals behind masked_fraction and the 80/10/10 shares in stats.json."""

    candidates: int = 0
    masked: int = 0
    mask_token: int = 0
    random_token: int = 0
    kept: int = 0


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Trim the longer side one token at a time, from a random end, until both fit."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _document_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    doc_index: int,
    vocab: MaskingVocab,
    options: ExampleOptions,
    rng: random.Random,
) -> list[Instance]:
    document = documents[doc_index]
    max_tokens = options.seq_len - (3 if options.nsp else 2)
    target = max_tokens
    if rng.random() < options.short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances: list[Instance] = []
    chunk: list[Sequence[int]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if not options.nsp:
                tokens_a = [t for segment in chunk for t in segment][:max_tokens]
                instances.append(_pack(tokens_a, None, False, vocab))
            else:
                a, b, is_random, unused = _split_chunk(
                    chunk, documents, doc_index, target, rng
                )
                i -= unused
                truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    instances.append(_pack(a, b, is_random, vocab))
            chunk, length = [], 0
        i += 1
    return instances


def _split_chunk(chunk, documents, doc_index, target, rng):
    """Segment A from the chunk; segment B is its actual continuation or random text."""
    is_random = rng.random() < 0.5
    if len(chunk) >= 2:
        a_end = rng.randint(1, len(chunk) - 1)
        a = [t for segment in chunk[:a_end] for t in segment]
        rest = [t for segment in chunk[a_end:] for t in segment]
    else:
        only = list(chunk[0])
        if is_random or len(only) < 2:
            a, rest, a_end = only, [], 1
            is_random = True
        else:
            cut = rng.randint(1, len(only) - 1)
            a, rest, a_end = only[:cut], only[cut:], 1
    if not is_random:
        return a, rest, False, 0
    b: list[int] = []
    target_b = max(1, target - len(a))
    other = doc_index
    for _ in range(10):
        other = rng.randrange(len(documents))
        if other != doc_index:
            break
    random_doc = documents[other]
    for segment in random_doc[rng.randrange(len(random_doc)) :]:
        b.extend(segment)
        if len(b) >= target_b:
            break
    return a, b, True, len(chunk) - a_end


def _pack(a: list[int], b: list[int] | None, is_random: bool, vocab: MaskingVocab) -> Instance:
    tokens = [vocab.cls_id, *a, vocab.sep_id]
    segment_ids = [0] * len(tokens)
    if b is not None:
        tokens += [*b, vocab.sep_id]
        segment_ids += [1] * (len(b) + 1)
    return Instance(tokens, segment_ids, is_random)


def mask_instance(
    instance: Instance,
    vocab: MaskingVocab,
    options: ExampleOptions,
    rng: random.Random,
    counts: MaskingCounts,
) -> None:
    """Choose and corrupt the prediction positions of one instance, in place."""
    groups: list[list[int]] = []
    for position, token in enumerate(instance.tokens):
        if token in (vocab.cls_id, vocab.sep_id):
            continue
        if options.whole_word_mask and groups and vocab.is_continuation[token] \
                and groups[-1][-1] == position - 1:
            groups[-1].append(position)
        else:
            groups.append([position])
    candidates = sum(len(g) for g in groups)
    budget = min(options.max_predictions_per_seq,
                 max(1, round(candidates * options.masked_lm_prob)))
    rng.shuffle(groups)
    chosen: list[int] = []
    for group in groups:
        if len(chosen) >= budget:
            break
        if len(chosen) + len(group) > budget:
            continue
        chosen.extend(group)
    chosen.sort()
    labels = [instance.tokens[p] for p in chosen]
    for position in chosen:
        draw = rng.random()
        if draw < options.mask_token_rate:
            instance.tokens[position] = vocab.mask_id
            counts.mask_token += 1
        elif draw < options.mask_token_rate + options.random_token_rate:
            instance.tokens[position] = rng.choice(vocab.replacement_ids)
            counts.random_token += 1
        else:
            counts.kept += 1
    instance.masked_positions = chosen
    instance.masked_labels = labels
    counts.candidates += candidates
    counts.masked += len(chosen)


def create_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    vocab: MaskingVocab,
    options: ExampleOptions,
    rng: random.Random,
    counts: MaskingCounts | None = None,
) -> list[Instance]:
    """All instances for one pass over the documents (call once per dupe)."""
    if options.seq_len < 8:
        raise InputError(f"seq_len must be at least 8, got {options.seq_len}")
    if options.nsp and len(documents) < 2:
        raise InputError("NSP needs at least 2 documents after cleaning (or use --no-nsp)")
    counts = counts if counts is not None else MaskingCounts()
    instances: list[Instance] = []
    for doc_index in range(len(documents)):
        for instance in _document_instances(documents, doc_index, vocab, options, rng):
            if options.masking == "static":
                mask_instance(instance, vocab, options, rng, counts)
            instances.append(instance)
    return instances
