"""What a model file records about sampling it that is not its weights, and what files made from it keep.

``speed`` (:data:`SPEED_KEY`), ``ref_silence`` and ``target_rms`` (:data:`RECORDED_DEFAULTS`) describe the
data the model learned from; ``continue_reference`` (:data:`CONTINUE_KEY`) was measured on its weights.
:mod:`flowtts.synthesis.options` reads them into inference options; :func:`flowtts.save` writes the
first three again into every file made from a model (:func:`carried_metadata`).
"""

from __future__ import annotations

import math

SPEED_KEY = "speed"  # model-file metadata: the speaking rate at which the model says speed 1 (default 1)
# model-file metadata that replaces an InferenceOptions default: how the model's training data sounded
RECORDED_DEFAULTS = ("ref_silence", "target_rms")
# model-file metadata "true"/"false": whether the model speaks best continuing the reference (not carried)
CONTINUE_KEY = "continue_reference"
CARRIED_KEYS = (SPEED_KEY, *RECORDED_DEFAULTS)  # what a model made from another keeps of its file


def recorded_number(model, key: str, *, zero_ok: bool) -> float | None:
    """The number ``model``'s file records under ``key`` (``None`` when absent).

    Raises:
        ValueError: A value that is not a finite number > 0 (>= 0 with ``zero_ok``), naming the key.
    """
    raw = (getattr(model, "metadata", None) or {}).get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        expected = "a number >= 0" if zero_ok else "a positive number"
        raise ValueError(f"the model file's {key!r} metadata must be {expected}, got {raw!r}")
    return value


def recorded_flag(model, key: str) -> bool | None:
    """The ``true``/``false`` ``model``'s file records under ``key`` (``None`` when absent; any letter case).

    Raises:
        ValueError: Another value, naming the key.
    """
    raw = (getattr(model, "metadata", None) or {}).get(key)
    if raw is None:
        return None
    if str(raw).lower() not in ("true", "false"):
        raise ValueError(f"the model file's {key!r} metadata must be 'true' or 'false', got {raw!r}")
    return str(raw).lower() == "true"


def carried_metadata(model) -> dict[str, str]:
    """The entries of ``model``'s file that a model trained, distilled or averaged from it records too.

    The speaking-rate factor and the reference preparation describe the data ``model`` learned from, not
    its weights: a fine-tuning, a distilled student or a soup of it speaks like that data, and sampled
    with F5-TTS's values instead it speaks too fast and garbles the words after the reference (the
    built-in teacher on its selection split: WER 0.39 as its file records, 0.50 with F5-TTS's reference
    preparation).

    Raises:
        ValueError: A recorded value out of range, naming its key.
    """
    for key in CARRIED_KEYS:  # refuse a bad value here rather than in a file written from it
        recorded_number(model, key, zero_ok=key == "ref_silence")
    metadata = getattr(model, "metadata", None) or {}
    return {key: str(metadata[key]) for key in CARRIED_KEYS if key in metadata}
