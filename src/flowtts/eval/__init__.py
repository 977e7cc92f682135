"""Evaluation helpers: word error rate, an offline speech recogniser (``eval`` extra), and differentiable
speaker similarity (:mod:`flowtts.eval.speaker`, with ``resemblyzer``'s encoder weights)."""

from flowtts.eval.wer import normalize_words, word_error_rate

__all__ = ["normalize_words", "word_error_rate"]
