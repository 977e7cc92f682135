"""Evaluation, above synthesis: word error rate, the CTC recogniser (:mod:`flowtts.eval.recognizer`),
differentiable speaker similarity (:mod:`flowtts.eval.speaker`, with ``resemblyzer``'s encoder weights) and
reports that score a model's speech (:mod:`flowtts.eval.report`).

Only entry points and training import it; the offline recogniser that transcribes references (and that
reports score with) is below synthesis, in :mod:`flowtts.audio.transcribe`.
"""

from flowtts.eval.wer import normalize_words, word_error_rate

__all__ = ["normalize_words", "word_error_rate"]
