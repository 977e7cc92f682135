"""Synthesis options: F5-TTS's inference knobs, a model's recommended ones, and their checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowtts.checkpoints.recorded import (
    CONTINUE_KEY,
    RECORDED_DEFAULTS,
    RECORDED_RANGES,
    SPEED_KEY,
    recorded_flag,
    recorded_number,
)
from flowtts.model.sample_checks import MAX_SECONDS, check_cfg_strength, is_int

# Solver steps at most. F5-TTS samples with 32 and its distilled students with 4 to 16; no sampler of these
# models gains from more than a few hundred, while each step is a full pass of the network (two with
# guidance). The cap guards against runaway requests (10**6 steps would hold a CPU, or a server, for days);
# it is no quality setting. The command line, the Python API, the server and the web app all obey it.
MAX_STEPS = 1000
# Speaking rates: from 10 times slower to 10 times faster than the reference clip. F5-TTS chunks a text by
# its expected length, so rates beyond these give chunks of a few bytes or ones no call can hold.
SPEED_RANGE = (0.1, 10.0)
MAX_REF_SILENCE = RECORDED_RANGES["ref_silence"][1]  # seconds after the clip (F5-TTS: 0.05; built-in: 0.5)
MAX_TARGET_RMS = RECORDED_RANGES["target_rms"][1]  # a full-scale square wave's RMS; F5-TTS uses 0.1


@dataclass
class InferenceOptions:
    """Knobs of :func:`synthesize` (defaults are F5-TTS's)."""

    steps: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float | None = -1.0
    speed: float = 1.0
    use_epss: bool = True
    target_rms: float = 0.1
    cross_fade_seconds: float = 0.15
    fix_duration: float | None = None  # seconds of reference + speech per text (F5-TTS's fix_duration); no chunking
    remove_silence: bool = False  # shorten silences over 1 s in the output (F5-TTS's remove_silence)
    max_ref_seconds: float = 12.0
    ref_silence: float = 0.05  # seconds of silence after the trimmed reference clip (F5-TTS's 50 ms)
    min_ref_seconds: float = 0.5
    batch_size: int = 4
    dtype: str | None = None  # network precision: float32 (default), bfloat16, float16 (GPU)
    t_grid: tuple[float, ...] | None = None  # explicit solver times; replace steps, EPSS and sway
    continue_reference: bool = True  # F5-TTS: continue the reference clip; False: speak the text unprompted
    # "f5tts": F5-TTS's own reference preparation, durations, chunks and cut (flowtts.synthesis.pipeline);
    # recommended_options picks it for F5-TTS checkpoints, "flowtts" for flowtts's files
    pipeline: str = "flowtts"

    def recipe(self):
        """The :class:`flowtts.sampling.recipe.SamplingRecipe` of these options (steps, guidance, grid)."""
        from flowtts.sampling.recipe import SamplingRecipe

        return SamplingRecipe(
            steps=self.steps,
            cfg_strength=self.cfg_strength,
            sway_sampling_coef=self.sway_sampling_coef,
            use_epss=self.use_epss,
            t_grid=self.t_grid,
        )

    def solver_kwargs(self) -> dict:
        """The ``CFM.sample()`` keyword arguments these options fix (steps, guidance, time grid)."""
        return self.recipe().sample_kwargs()


def model_speed(model) -> float:
    """The speaking-rate factor ``model``'s file records (:data:`SPEED_KEY`), 1 when it records none.

    F5-TTS's duration rule reads the reference clip's rate with its edge silence trimmed; a model trained
    on utterances with silence at both ends then speaks faster than its corpus. A file can record the
    factor that brings it back; every ``speed`` a user gives is multiplied by it, so speed 1 keeps meaning
    "the model's natural rate" and files without the key behave exactly as upstream.

    Raises:
        ValueError: A recorded value that is not a positive number.
    """
    value = recorded_number(model, SPEED_KEY, zero_ok=False)
    return 1.0 if value is None else value


def model_defaults(model) -> dict[str, float | bool]:
    """The :class:`InferenceOptions` defaults that the file of ``model`` replaces.

    See :data:`RECORDED_DEFAULTS` and :data:`CONTINUE_KEY`.

    F5-TTS prepares every reference the same way: edge silence trimmed and 50 ms appended
    (``ref_silence``), a clip quieter than ``target_rms`` (0.1) raised to it. A model trained on pairs of
    utterances that kept their own trailing silence (~0.5 s) has learned a longer pause before the new
    sentence and garbles its first words after a shorter one; one trained on quieter recordings sees a
    louder reference than any it was trained on. Its file can record both; files without them get
    F5-TTS's values.

    A file can also record ``continue_reference: false``: the model speaks the text unprompted (the clip
    still sets the rate and level) rather than continuing the clip. That pays for a one-voice model that
    learnt mostly whole utterances (the built-in teacher's word error rates both ways: docs/builtin_models.md).
    Unlike the data's facts it is a measurement of the weights, and a model made from the file does not
    keep it (:func:`flowtts.checkpoints.recorded.carried_metadata`).

    Raises:
        ValueError: A recorded ``ref_silence`` that is not a number >= 0, a ``target_rms`` that is not
            a positive number, or a ``continue_reference`` that is not ``true``/``false``.
    """
    values = {key: recorded_number(model, key, zero_ok=key == "ref_silence") for key in RECORDED_DEFAULTS}
    values[CONTINUE_KEY] = recorded_flag(model, CONTINUE_KEY)
    return {key: value for key, value in values.items() if value is not None}


def recommended_options(model, **overrides) -> InferenceOptions:
    """:class:`InferenceOptions` for ``model``: F5-TTS's defaults, or what a distilled student was trained for.

    A distilled student records its sampling recipe (:class:`flowtts.sampling.recipe.SamplingRecipe`: step
    count, guidance, grid) in its metadata; sampling it any other way throws its training away.
    ``overrides`` (non-``None`` values) win over both; a step count or sway given replaces a student's grid.
    The speed (given or 1) is multiplied by the rate factor the file records (:func:`model_speed`), and
    the reference's preparation follows what the file records (:func:`model_defaults`) unless given.
    ``pipeline`` defaults to :func:`flowtts.synthesis.pipeline.default_pipeline` (F5-TTS's for its checkpoints).
    """
    from flowtts.sampling.recipe import SamplingRecipe

    overrides = {k: v for k, v in overrides.items() if v is not None}
    sampling = {k: overrides.pop(k) for k in ("steps", "cfg_strength", "sway_sampling_coef") if k in overrides}
    recipe = SamplingRecipe.for_model(model, **sampling)
    fields = dict(
        steps=recipe.steps,
        cfg_strength=recipe.cfg_strength,
        sway_sampling_coef=recipe.sway_sampling_coef,
        use_epss=recipe.use_epss,
        t_grid=recipe.t_grid,
    )
    fields.update(overrides)
    factor = model_speed(model)
    if "speed" in fields:
        check_speed(fields["speed"], factor=factor)
    if factor != 1.0:
        fields["speed"] = fields.get("speed", InferenceOptions.speed) * factor
    if "pipeline" not in fields:
        from flowtts.synthesis.pipeline import default_pipeline

        fields["pipeline"] = default_pipeline(model)
    return InferenceOptions(**{**model_defaults(model), **fields})


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _non_negative(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def check_ref_silence(value, name: str = "ref_silence") -> None:
    """Raise ``ValueError`` unless ``value`` is a number of seconds from 0 to :data:`MAX_REF_SILENCE` (the
    silence after a reference; ``name`` says what it is called)."""
    if not _non_negative(value) or value > MAX_REF_SILENCE:
        raise ValueError(f"{name} must be a number of seconds >= 0, at most {MAX_REF_SILENCE:g}, got {value!r}")


def check_steps(value, name: str = "steps") -> None:
    """Raise ``ValueError`` unless ``value`` is an integer from 1 to :data:`MAX_STEPS`."""
    if not is_int(value) or not 1 <= value <= MAX_STEPS:
        raise ValueError(
            f"{name} must be an integer >= 1, at most {MAX_STEPS} (a guard against runaway requests), got {value!r}"
        )


def check_speed(value, name: str = "speed", factor: float = 1.0) -> None:
    """Raise ``ValueError`` unless ``value`` times ``factor`` (a model file's rate factor) lies in
    :data:`SPEED_RANGE`; the message gives the range of ``value`` itself."""
    low, high = (bound / factor for bound in SPEED_RANGE)
    if not _positive(value) or not low <= value <= high:
        note = "" if factor == 1 else f" (the model file's rate factor {factor:g} is applied to it)"
        raise ValueError(f"{name} must be a positive number from {low:.3g} to {high:.3g}{note}, got {value!r}")


def check_target_rms(value, name: str = "target_rms") -> None:
    """Raise ``ValueError`` unless ``value`` is an RMS level above 0, at most :data:`MAX_TARGET_RMS`."""
    if not _positive(value) or value > MAX_TARGET_RMS:
        raise ValueError(f"{name} must be a positive number, at most {MAX_TARGET_RMS:g}, got {value!r}")


def check_fix_duration(value, name: str = "fix_duration") -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or seconds in (0, :data:`MAX_SECONDS`]."""
    if value is not None and (not _positive(value) or value > MAX_SECONDS):
        raise ValueError(
            f"{name} must be a positive number of seconds, at most {MAX_SECONDS:g} (reference + speech in one "
            f"call), got {value!r}"
        )


def check_options(options: InferenceOptions) -> None:
    """Raise ``ValueError`` naming the first option of ``options`` that is out of range."""
    recipe = options.recipe()  # steps, guidance, sway and grid: the recipe's own checks
    check_steps(recipe.steps, "steps (the time grid's)" if options.t_grid is not None else "steps")
    check_cfg_strength(options.cfg_strength)
    check_speed(options.speed)
    for name in ("max_ref_seconds", "min_ref_seconds"):
        if not _positive(getattr(options, name)):
            raise ValueError(f"{name} must be a positive number, got {getattr(options, name)!r}")
    check_target_rms(options.target_rms)
    if not _non_negative(options.cross_fade_seconds):
        raise ValueError(f"cross_fade_seconds must be a number >= 0, got {options.cross_fade_seconds!r}")
    check_ref_silence(options.ref_silence)
    check_fix_duration(options.fix_duration)
    if not is_int(options.batch_size) or options.batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {options.batch_size!r}")
    if not isinstance(options.continue_reference, bool):
        raise ValueError(f"continue_reference must be True or False, got {options.continue_reference!r}")
    from flowtts.synthesis.pipeline import check_pipeline

    check_pipeline(options.pipeline)
    if options.dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be None, 'float32', 'bfloat16' or 'float16', got {options.dtype!r}")
