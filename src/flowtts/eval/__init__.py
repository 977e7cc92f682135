"""Evaluation helpers: word error rate and an offline speech recogniser (``eval`` extra)."""

from flowtts.eval.wer import normalize_words, word_error_rate

__all__ = ["normalize_words", "word_error_rate"]
