import copy

import numpy as np
import pytest

import flowtts
from flowtts.synthesis.options import (
    CONTINUE_KEY,
    RECORDED_DEFAULTS,
    SPEED_KEY,
    InferenceOptions,
    check_options,
    model_defaults,
    model_speed,
    recommended_options,
)


def _student_with(speed, **recorded):
    model = copy.deepcopy(flowtts.load("builtin:student"))
    model.metadata = {k: v for k, v in model.metadata.items() if k not in (SPEED_KEY, CONTINUE_KEY, *RECORDED_DEFAULTS)}
    if speed is not None:
        model.metadata[SPEED_KEY] = speed
    model.metadata.update(recorded)
    return model


def test_a_recorded_rate_factor_scales_every_speed_and_its_absence_changes_nothing():
    plain, slow = _student_with(None), _student_with("0.8")
    assert model_speed(plain) == 1.0 and model_speed(slow) == 0.8
    assert recommended_options(plain).speed == 1.0 and recommended_options(plain, speed=1.5).speed == 1.5
    assert recommended_options(slow).speed == pytest.approx(0.8)
    assert recommended_options(slow, speed=1.25).speed == pytest.approx(1.0)
    assert recommended_options(slow, steps=8).steps == 8  # other options as before


@pytest.mark.parametrize("bad", ["fast", "0", "-1", "nan", "1e9", "1e-9"])
def test_a_bad_recorded_rate_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match=f"'speed' metadata must be a number from 0.1 to 10, got '{bad}'"):
        recommended_options(_student_with(bad))


def test_the_built_in_models_record_their_rate_and_how_their_references_are_prepared():
    for name in ("builtin", "builtin:student"):
        model = flowtts.load(name)
        assert model_speed(model) == 0.9
        assert model_defaults(model) == {"ref_silence": 0.5, "target_rms": 0.05, "continue_reference": False}
        options = recommended_options(model)
        assert (options.speed, options.ref_silence, options.target_rms) == (pytest.approx(0.9), 0.5, 0.05)
        assert options.continue_reference is False  # they speak unprompted (see the README's "Training")


def test_recorded_defaults_replace_f5_tts_values_and_what_is_given_wins():
    plain = _student_with(None)
    recorded = _student_with(None, ref_silence="0.5", target_rms="0.05")
    assert model_defaults(plain) == {} and recommended_options(plain).ref_silence == 0.05  # F5-TTS's
    assert recommended_options(plain).target_rms == 0.1
    options = recommended_options(recorded)
    assert (options.ref_silence, options.target_rms, options.speed) == (0.5, 0.05, 1.0)
    options = recommended_options(recorded, ref_silence=0, target_rms=0.2)
    assert (options.ref_silence, options.target_rms) == (0, 0.2)


def test_a_file_can_ask_to_speak_unprompted_and_what_is_given_wins():
    from flowtts.checkpoints.recorded import carried_metadata

    assert recommended_options(_student_with(None)).continue_reference is True  # F5-TTS's way
    unprompted = _student_with(None, continue_reference="false")
    assert model_defaults(unprompted) == {"continue_reference": False}
    assert recommended_options(unprompted).continue_reference is False
    assert recommended_options(unprompted, continue_reference=True).continue_reference is True
    assert recommended_options(_student_with(None, continue_reference="True")).continue_reference is True
    assert "continue_reference" not in carried_metadata(unprompted)  # measured on the weights: not inherited
    with pytest.raises(ValueError, match="'continue_reference' metadata must be 'true' or 'false', got 'no'"):
        recommended_options(_student_with(None, continue_reference="no"))


@pytest.mark.parametrize(
    "key, bad, expected",
    [
        ("ref_silence", "long", "a number from 0 to 10"),
        ("ref_silence", "-0.1", "a number from 0 to 10"),
        ("ref_silence", "1e9", "a number from 0 to 10"),
        ("target_rms", "0", "a positive number up to 1"),
        ("target_rms", "5", "a positive number up to 1"),
    ],
)
def test_a_bad_recorded_default_is_refused_naming_the_key(key, bad, expected):
    with pytest.raises(ValueError, match=f"'{key}' metadata must be .*{expected}, got '{bad}'"):
        recommended_options(_student_with(None, **{key: bad}))


@pytest.mark.parametrize("bad", [-0.05, float("nan"), "0.5", True, 1e6])
def test_a_bad_ref_silence_option_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="ref_silence must be a number of seconds >= 0"):
        check_options(InferenceOptions(ref_silence=bad))


def test_infer_applies_the_factor_to_the_speed_given():
    """A file recording 0.8 asked for speed 1.25 speaks exactly as the same weights without it at speed 1."""
    text = "The doctor picked up the blue door."
    waves = []
    for speed, given in ((None, 1.0), ("0.8", 1.25)):
        tts = flowtts.F5TTS("builtin:student")
        tts.ema_model = _student_with(speed)
        wave, _, _ = tts.infer(None, "", text, seed=3, speed=given, progress=False, show_info=lambda *a: None)
        waves.append(wave)
    assert waves[0].shape == waves[1].shape and np.allclose(waves[0], waves[1], atol=1e-5)
    tts = flowtts.F5TTS("builtin:student")
    tts.ema_model = _student_with("0.8")
    slow, _, _ = tts.infer(None, "", text, seed=3, progress=False, show_info=lambda *a: None)
    assert 1.15 < len(slow) / len(waves[0]) < 1.3  # the default speed 1 is the file's 0.8: ~25% longer
