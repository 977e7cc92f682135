"""Bad values through the Python API: a ``ValueError`` naming the argument, at once, nothing left behind (#31)."""

import math

import pytest
import torch

import flowtts
from flowtts.api import F5TTS
from flowtts.checkpoints.loader import resolve_device
from flowtts.synthesis.edit import plan_edit
from flowtts.synthesis.options import (
    MAX_REF_SILENCE,
    MAX_STEPS,
    SPEED_RANGE,
    InferenceOptions,
    check_options,
    recommended_options,
)


@pytest.fixture(scope="module")
def student():
    return F5TTS("builtin:student", device="cpu")  # its file records a rate factor of 0.9


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            dict(speed=-1),
            r"speed must be a positive number from 0.111 to 11.1 \(the model file's rate factor 0.9 is "
            r"applied to it\), got -1$",
        ),  # the value given, not -0.9
        (dict(speed="fast"), "speed must be a positive number from 0.111 to 11.1 .*got 'fast'"),
        (dict(speed=1e9), "speed must be a positive number from 0.111 to 11.1 .*got 1000000000.0"),
        (dict(nfe_step=10**6), "steps must be an integer >= 1, at most 1000 .*got 1000000"),
        (dict(cfg_strength=1e30), "cfg_strength must be a finite number from 0 to 10 .*got 1e\\+30"),
        (dict(fix_duration=1e9), "fix_duration must be a positive number of seconds, at most 60 .*got 1000000000.0"),
        (dict(target_rms=5.0), "target_rms must be a positive number, at most 1, got 5.0"),
    ],
)
def test_infer_refuses_values_out_of_range_by_name(student, bad, match):
    with pytest.raises(ValueError, match=match):
        student.infer(None, "", "Hi!", progress=False, show_info=lambda *a: None, **bad)


def test_a_device_this_machine_lacks_is_refused_by_name():
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'banana'"):
        F5TTS("builtin:student", device="banana")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'meta'"):
        flowtts.load("builtin:student", device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:3': this machine has no CUDA GPU"):
            resolve_device("cuda:3")
    assert resolve_device("cpu") == torch.device("cpu")


def test_the_caps_are_public_and_inclusive():
    assert MAX_STEPS == 1000 and SPEED_RANGE == (0.1, 10.0) and MAX_REF_SILENCE == 10.0
    check_options(InferenceOptions(steps=MAX_STEPS, speed=10.0, ref_silence=10.0, fix_duration=60.0, cfg_strength=10))
    for bad, match in (
        (dict(steps=MAX_STEPS + 1), "steps must be an integer >= 1, at most 1000"),
        (dict(t_grid=tuple(i / 1001 for i in range(1002)), sway_sampling_coef=None), r"steps \(the time grid's\)"),
        (dict(speed=10.5), "speed must be a positive number from 0.1 to 10, got 10.5"),
        (dict(ref_silence=1e6), "ref_silence must be a number of seconds >= 0, at most 10, got 1000000.0"),
        (dict(fix_duration=60.5), "fix_duration must be a positive number of seconds, at most 60"),
        (dict(cfg_strength=11.0), "cfg_strength must be a finite number from 0 to 10 .*got 11.0"),
    ):
        with pytest.raises(ValueError, match=match):
            check_options(InferenceOptions(**bad))


def test_a_model_file_recording_a_huge_silence_is_refused_when_read(tmp_path):
    model = flowtts.load("builtin:student")
    path = tmp_path / "long_pause.safetensors"
    flowtts.save(model, path, extra={"ref_silence": "1e9"})
    with pytest.raises(ValueError, match="long_pause.safetensors: the model file's 'ref_silence' metadata must be a"):
        flowtts.load(path)
    model.metadata = {**model.metadata, "ref_silence": "1e9"}  # set in Python: refused where options are made
    with pytest.raises(ValueError, match="'ref_silence' metadata must be a number from 0 to 10, got '1e9'"):
        recommended_options(model)


def test_an_edit_longer_than_one_call_is_refused_before_it_is_laid_out():
    mel = torch.zeros(1, 200, 100)  # 2.1 s at 93.75 frames a second
    with pytest.raises(ValueError, match=r"durations\[0\] must be positive seconds, at most 60 .*got 1000000000.0"):
        plan_edit(mel, [(0.5, 1.0)], [1e9], frame_rate=93.75)
    with pytest.raises(ValueError, match="the edited recording is 61.0 s long; an edit takes at most 60 s"):
        plan_edit(mel, [(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)], [30.0, 30.0, 30.0], frame_rate=93.75)
    assert plan_edit(mel, [(1.0, 1.0)], [30.0], frame_rate=93.75).cond.shape[1] == 200 + 2812


def test_a_reference_clip_of_nan_samples_is_refused():
    from flowtts.synthesis import prepare_reference

    model = flowtts.load("builtin:student")
    wave = torch.sin(torch.arange(24000) / 5.0)
    wave[100] = math.nan
    with pytest.raises(ValueError, match="reference audio contains NaN or infinite samples"):
        prepare_reference(model, wave, "A clip.", InferenceOptions())


def test_a_reward_that_cannot_take_mel_and_prompts_is_refused_when_named():
    from flowtts.train.reward import resolve_reward

    with pytest.raises(ValueError, match=r"reward 'os:system' must take \(mel, prompts\) .*it takes \(command\)"):
        resolve_reward("os:system")
