"""What a model file records about sampling it that is not its weights, and what files made from it keep.

``speed`` (:data:`SPEED_KEY`), ``ref_silence`` and ``target_rms`` (:data:`RECORDED_DEFAULTS`) describe the
data the model learned from, and ``vocoder`` (:data:`VOCODER_KEY`) the voice it speaks; ``continue_reference``
(:data:`CONTINUE_KEY`) was measured on its weights. :mod:`flowtts.synthesis.options` reads the numbers into
inference options, :func:`flowtts.audio.vocoders.choose_vocoder` the vocoder; :func:`flowtts.save` writes
the first four again into every file made from a model (:func:`carried_metadata`).
"""

from __future__ import annotations

import math

SPEED_KEY = "speed"  # model-file metadata: the speaking rate at which the model says speed 1 (default 1)
# model-file metadata that replaces an InferenceOptions default: how the model's training data sounded
RECORDED_DEFAULTS = ("ref_silence", "target_rms")
# model-file metadata "true"/"false": whether the model speaks best continuing the reference (not carried)
CONTINUE_KEY = "continue_reference"
# model-file metadata: how many voices the model learnt (the built-in models: "1"; absent: not recorded)
VOICES_KEY = "voices"
# model-file metadata: "builtin" when the model speaks the built-in voice, which the built-in vocoder was
# trained on (absent: a vocoder for any voice, Griffin-Lim, suits it better)
VOCODER_KEY = "vocoder"
VOCODER_VALUES = ("builtin",)
CARRIED_KEYS = (SPEED_KEY, *RECORDED_DEFAULTS, VOCODER_KEY)  # what a model made from another keeps of its file
# The range of each recorded number: wide of any model's (the built-in ones record 0.9, 0.5 s and 0.05), far
# from what would exhaust memory (1e9 s of silence after the reference clip) or leave speech (a rate factor of
# 1e9 or 1e-9). The options a user gives are held to the same ranges (flowtts.synthesis.options).
RECORDED_RANGES = {SPEED_KEY: (0.1, 10.0), "ref_silence": (0.0, 10.0), "target_rms": (0.0, 1.0)}


def recorded_number(model, key: str, *, zero_ok: bool) -> float | None:
    """The number ``model``'s file records under ``key`` (``None`` when absent).

    Raises:
        ValueError: A value that is not a finite number > 0 (>= 0 with ``zero_ok``) within its
            :data:`RECORDED_RANGES`, naming the key.
    """
    raw = (model.metadata or {}).get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    least, most = RECORDED_RANGES.get(key, (0.0, math.inf))
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0) and least <= value <= most):
        raise ValueError(f"the model file's {key!r} metadata must be {_described(least, most, zero_ok)}, got {raw!r}")
    return value


def _described(least: float, most: float, zero_ok: bool) -> str:
    if least > 0:
        return f"a number from {least:g} to {most:g}"
    if most == math.inf:
        return "a number >= 0" if zero_ok else "a positive number"
    return f"a number from 0 to {most:g}" if zero_ok else f"a positive number up to {most:g}"


def recorded_flag(model, key: str) -> bool | None:
    """The ``true``/``false`` ``model``'s file records under ``key`` (``None`` when absent; any letter case).

    Raises:
        ValueError: Another value, naming the key.
    """
    raw = (model.metadata or {}).get(key)
    if raw is None:
        return None
    if str(raw).lower() not in ("true", "false"):
        raise ValueError(f"the model file's {key!r} metadata must be 'true' or 'false', got {raw!r}")
    return str(raw).lower() == "true"


def recorded_voices(model) -> int | None:
    """How many voices ``model``'s file records under :data:`VOICES_KEY` (``None`` when absent).

    Raises:
        ValueError: A value that is not an integer >= 1, naming the key.
    """
    raw = (model.metadata or {}).get(VOICES_KEY)
    if raw is None:
        return None
    try:
        value = int(str(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"the model file's {VOICES_KEY!r} metadata must be an integer >= 1, got {raw!r}")
    return value


def recorded_vocoder(model) -> str | None:
    """The vocoder ``model``'s file records under :data:`VOCODER_KEY` (``"builtin"``; ``None`` when absent).

    Raises:
        ValueError: Another value, naming the key and the values it may take.
    """
    raw = (model.metadata or {}).get(VOCODER_KEY)
    if raw is None:
        return None
    if raw not in VOCODER_VALUES:
        raise ValueError(
            f"the model file's {VOCODER_KEY!r} metadata must be one of {', '.join(map(repr, VOCODER_VALUES))}, "
            f"got {raw!r}"
        )
    return raw


def carried_metadata(model) -> dict[str, str]:
    """The entries of ``model``'s file that a model trained, distilled or averaged from it records too.

    The speaking-rate factor and the reference preparation describe the data ``model`` learned from, not
    its weights: a fine-tuning, a distilled student or a soup of it speaks like that data, and sampled
    with F5-TTS's values instead it speaks too fast and garbles the words after the reference
    (measured on the built-in teacher: docs/builtin_models.md). It speaks in that data's voice too, so
    the vocoder trained on that voice (:data:`VOCODER_KEY`) suits it as well.

    Raises:
        ValueError: A recorded value out of range, naming its key.
    """
    for key in (SPEED_KEY, *RECORDED_DEFAULTS):  # refuse a bad value here rather than in a file written from it
        recorded_number(model, key, zero_ok=key == "ref_silence")
    recorded_vocoder(model)
    metadata = model.metadata or {}
    return {key: str(metadata[key]) for key in CARRIED_KEYS if key in metadata}
