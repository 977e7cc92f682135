"""Speech from a model, a reference clip and a text: options, references, synthesis, streaming, editing.

It imports the model, sampling, audio, text and checkpoint layers, and never training or evaluation.
"""

from flowtts.synthesis.options import InferenceOptions, check_options, recommended_options
from flowtts.synthesis.reference import Reference, load_reference, prepare_reference
from flowtts.synthesis.speech import Utterance, stream, synthesize

__all__ = [
    "InferenceOptions",
    "Reference",
    "Utterance",
    "check_options",
    "load_reference",
    "prepare_reference",
    "recommended_options",
    "stream",
    "synthesize",
]
