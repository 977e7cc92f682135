"""Word error rate: word-level edit distance over reference length, summed over a corpus."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize_words(text: str) -> list[str]:
    """Lower-case, drop punctuation, split on whitespace."""
    return _NON_WORD.sub(" ", text.lower()).split()


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words (after :func:`normalize_words`)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = normalize_words(ref), normalize_words(hyp)
        edits += edit_distance(r, h)
        words += len(r)
    if words == 0:
        raise ValueError("references contain no words")
    return edits / words
