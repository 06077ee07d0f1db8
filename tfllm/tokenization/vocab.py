"""Train a BERT WordPiece vocabulary with `tokenizers` and write vocab.txt + tokenizer.json.

Example:

>>> import tempfile
>>> from tfllm.tokenization.vocab import train_wordpiece
>>> texts = ["the cat sat on the mat", "the dog sat on the log"] * 50
>>> tok = train_wordpiece(texts, vocab_size=60)
>>> [tok.id_to_token(i) for i in range(5)]
['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tfllm_serving.wordpiece import MAX_CHARS_PER_WORD, SPECIAL_TOKENS, build_bert_tokenizer
from tokenizers import Tokenizer, trainers

from tfllm.atomic import atomic_dir


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> Tokenizer:
    """Train WordPiece on an iterator of texts; `[PAD]` gets id 0, then the other specials."""
    tokenizer = build_bert_tokenizer(list(SPECIAL_TOKENS), lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Training replaces the model; rebuild so the template and normalizer match the vocab.
    # Pieces longer than a word can be are never used (longer words become [UNK]) and
    # break FastBertTokenizer's 256-byte limit, so they are dropped.
    vocab = [
        token for token in (tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size()))
        if len(token.removeprefix("##")) <= MAX_CHARS_PER_WORD
    ]
    return build_bert_tokenizer(vocab, lowercase)


def vocab_list(tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]


def save_tokenizer(tokenizer: Tokenizer, out: str | Path, overwrite: bool = False) -> Path:
    """Write `vocab.txt` and `tokenizer.json` into `out`, atomically."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_tokenizer_files(tokenizer, tmp)
    return out


def write_tokenizer_files(tokenizer: Tokenizer, directory: Path) -> None:
    """Write `vocab.txt` and `tokenizer.json` into an existing directory."""
    (directory / "vocab.txt").write_text("\n".join(vocab_list(tokenizer)) + "\n", encoding="utf-8")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(directory / "tokenizer.json"))
