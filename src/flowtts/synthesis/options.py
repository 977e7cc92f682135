"""Synthesis options: F5-TTS's inference knobs, a model's recommended ones, and their checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowtts.checkpoints.recorded import CONTINUE_KEY, RECORDED_DEFAULTS, SPEED_KEY, recorded_flag, recorded_number


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
    learnt mostly whole utterances: the built-in teacher misses 0.33 of the words of its selection split
    that way against 0.39 continuing its clip. Unlike the data's facts it is a measurement of the weights,
    and a model made from the file does not keep it
    (:func:`flowtts.checkpoints.recorded.carried_metadata`).

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
    if factor != 1.0:
        fields["speed"] = fields.get("speed", InferenceOptions.speed) * factor
    return InferenceOptions(**{**model_defaults(model), **fields})


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _non_negative(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def check_ref_silence(value) -> None:
    """Raise ``ValueError`` unless ``value`` is a number of seconds >= 0 (the silence after a reference)."""
    if not _non_negative(value):
        raise ValueError(f"ref_silence must be a number of seconds >= 0, got {value!r}")


def check_options(options: InferenceOptions) -> None:
    """Raise ``ValueError`` naming the first option of ``options`` that is out of range."""
    from flowtts.model.sample_checks import is_int

    options.recipe()  # steps, guidance, sway and grid: the recipe's own checks
    for name in ("speed", "target_rms", "max_ref_seconds", "min_ref_seconds"):
        if not _positive(getattr(options, name)):
            raise ValueError(f"{name} must be a positive number, got {getattr(options, name)!r}")
    if not _non_negative(options.cross_fade_seconds):
        raise ValueError(f"cross_fade_seconds must be a number >= 0, got {options.cross_fade_seconds!r}")
    check_ref_silence(options.ref_silence)
    if options.fix_duration is not None and not _positive(options.fix_duration):
        raise ValueError(f"fix_duration must be None or a positive number of seconds, got {options.fix_duration!r}")
    if not is_int(options.batch_size) or options.batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {options.batch_size!r}")
    if not isinstance(options.continue_reference, bool):
        raise ValueError(f"continue_reference must be True or False, got {options.continue_reference!r}")
    if options.dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be None, 'float32', 'bfloat16' or 'float16', got {options.dtype!r}")
