"""The synthesis API under its first import path (``flowtts.infer``): re-exports of :mod:`flowtts.synthesis`.

New code imports from :mod:`flowtts.synthesis`. Here, as before, a reference clip without a transcript is
transcribed offline with pocketsphinx (:func:`flowtts.eval.asr.transcribe_reference`).
"""

from __future__ import annotations

from flowtts.audio.crossfade import cross_fade
from flowtts.eval.asr import transcribe_reference
from flowtts.synthesis.options import InferenceOptions, check_options, recommended_options
from flowtts.synthesis.reference import Reference, prepare_reference
from flowtts.synthesis.reference import load_reference as _load_reference
from flowtts.synthesis.speech import MAX_SECONDS, Utterance, stream, synthesize
from flowtts.text.chunking import chunk_text
from flowtts.text.units import text_units
from flowtts.utils.plotting import check_picture_output, save_mel_png

__all__ = [
    "MAX_SECONDS",
    "InferenceOptions",
    "Reference",
    "Utterance",
    "check_options",
    "check_picture_output",
    "chunk_text",
    "cross_fade",
    "load_reference",
    "prepare_reference",
    "recommended_options",
    "save_mel_png",
    "stream",
    "synthesize",
    "text_units",
    "transcribe_reference",
]


def load_reference(model, ref_file, ref_text, options, *, on_transcript=None, transcribe=transcribe_reference):
    """:func:`flowtts.synthesis.reference.load_reference`, transcribing a clip without a transcript offline."""
    return _load_reference(model, ref_file, ref_text, options, on_transcript=on_transcript, transcribe=transcribe)
