"""Character and byte tokenizers compatible with F5-TTS.

A vocabulary is a ``vocab.txt`` with one token per line; a token's id is its line index. Characters
outside the vocabulary map to id 0 (by F5-TTS convention the space). Without a vocabulary, text is
tokenized as its UTF-8 byte values (256 ids). Batches are padded with ``-1``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

Text = str | Sequence[str]  # a string, or a pre-split token list (e.g. pinyin syllables)


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read a ``vocab.txt``: one token per line, id = line index.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is empty or a token appears twice.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # trailing newline of the last token
    if not lines:
        raise ValueError(f"vocab file {os.fspath(path)!r} has no tokens")
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        if token in vocab:
            raise ValueError(f"vocab file {os.fspath(path)!r}: token {token!r} on lines {vocab[token] + 1} and {i + 1}")
        vocab[token] = i
    return vocab


def save_vocab(vocab: Mapping[str, int], path: str | os.PathLike) -> None:
    """Write ``vocab`` as a ``vocab.txt`` (ids must be ``0..len-1``)."""
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError("vocab ids must be exactly 0..len(vocab)-1")
    for t in tokens:
        if "\n" in t:
            raise ValueError(f"vocab token {t!r} contains a newline")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))


def _as_units(text: Text) -> list[str]:
    return list(text) if isinstance(text, str) else [str(u) for u in text]


def tokenize(text: Text, vocab: Mapping[str, int] | None = None) -> list[int]:
    """Token ids of one text: vocabulary lookup (unknown -> 0) or UTF-8 bytes when ``vocab`` is None."""
    if vocab is None:
        data = text if isinstance(text, str) else "".join(text)
        return list(data.encode("utf-8"))
    return [vocab.get(unit, 0) for unit in _as_units(text)]


def unknown_characters(texts: Sequence[Text], vocab: Mapping[str, int]) -> list[str]:
    """Sorted distinct units of ``texts`` that ``vocab`` lacks (they would be read as id 0)."""
    missing = {u for text in texts for u in _as_units(text) if u not in vocab}
    return sorted(missing)


def tokens_to_tensor(texts: Sequence[Text], vocab: Mapping[str, int] | None = None) -> torch.Tensor:
    """Tokenize a batch into a ``b nt`` long tensor padded with ``-1``.

    Raises:
        ValueError: A text is empty.
    """
    ids = []
    for i, text in enumerate(texts):
        tokens = tokenize(text, vocab)
        if not tokens:
            raise ValueError(f"text[{i}] is empty; every text needs at least one character")
        ids.append(tokens)
    width = max(len(t) for t in ids)
    out = torch.full((len(ids), width), -1, dtype=torch.long)
    for i, tokens in enumerate(ids):
        out[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out
