import math
import os

import pytest
import soundfile as sf
import torch

import flowtts
from conftest import randomise
from flowtts.audio.io import read_audio
from flowtts.audio.vocoders import GriffinLim
from flowtts.cli import main
from flowtts.model.build import build_model
from flowtts.synthesis import InferenceOptions
from flowtts.synthesis.edit import edit_speech, plan_edit

ASSET = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "birch_canoe_espeak_22k.wav")
OPTIONS = InferenceOptions(steps=2, cfg_strength=2.0)


def _mel(frames=50, channels=3):
    return (torch.arange(frames * channels, dtype=torch.float32).reshape(1, frames, channels) + 1) / 7


def test_plan_keeps_the_recording_outside_the_parts_and_sizes_each_part():
    mel = _mel()
    # 10 frames a second: part 0 is frames 10-20 at its own length, part 1 frames 30-35 (3.04 s rounds
    # to frame 30) becomes 8 frames.
    plan = plan_edit(mel, [(1.0, 2.0), (3.04, 3.5)], [None, 0.8], frame_rate=10)
    zeros = torch.zeros
    expected = torch.cat((mel[:, :10], zeros(1, 10, 3), mel[:, 20:30], zeros(1, 8, 3), mel[:, 35:]), dim=1)
    assert torch.equal(plan.cond, expected)
    keep = [True] * 10 + [False] * 10 + [True] * 10 + [False] * 8 + [True] * 15
    assert plan.keep.tolist() == [keep]
    assert plan.spans == ((10, 20), (30, 38))


def test_an_empty_part_with_a_duration_inserts_new_frames():
    mel = _mel()
    plan = plan_edit(mel, [(2.0, 2.0)], [0.5], frame_rate=10)
    assert torch.equal(plan.cond, torch.cat((mel[:, :20], torch.zeros(1, 5, 3), mel[:, 20:]), dim=1))
    assert plan.spans == ((20, 25),) and int((~plan.keep).sum()) == 5


@pytest.mark.parametrize(
    "parts, durations, message",
    [
        ([], None, "non-empty list"),
        ([(2.0, 1.0)], None, "parts[0] ends (1 s) before it starts (2 s)"),
        ([(1.0, 2.0), (1.5, 3.0)], None, "parts[1] starts at 1.5 s, before the end of parts[0] (2 s)"),
        ([(-1.0, 1.0)], None, "parts[0] starts at -1 s, before 0 s"),
        ([(1.0, 6.0)], None, "parts[0] ends at 6 s, after the recording (5.00 s)"),
        ([(1.0, 1.0)], None, "under one frame"),
        ([(1.0, 2.0)], [0.0], "durations[0] must be positive"),
        ([(1.0, 2.0)], [1.0, 2.0], "one length per part (1)"),
        ([(1.0, math.nan)], None, "parts[0] end must be a finite number"),
        ([(1.0, 2.0, 3.0)], None, "parts[0] must be a (start, end) pair"),
        ("1-2", None, "non-empty list"),
    ],
)
def test_bad_parts_are_refused_by_name(parts, durations, message):
    with pytest.raises(ValueError) as info:
        plan_edit(_mel(), parts, durations, frame_rate=10)
    assert message in str(info.value)


@pytest.fixture(scope="module")
def model():
    return randomise(build_model("tiny"), std=0.02)


def _recording(seconds=1.5, amplitude=0.3):
    g = torch.Generator().manual_seed(0)
    n = int(24000 * seconds)
    return amplitude * torch.sin(torch.arange(n) / 9) + 0.05 * amplitude * torch.randn(n, generator=g)


def _vocoder(mel):  # any fixed map from mel to wave will do for what these tests check
    return mel.exp().mean(dim=1).repeat_interleave(256, dim=-1)


def test_edit_keeps_the_recordings_frames_and_equals_upstreams_recipe(model):
    wave = _recording()
    text = "some words and new ones"
    result = edit_speech(model, wave, text, [(0.5, 0.8)], durations=[0.4], vocoder=_vocoder, options=OPTIONS, seed=7)

    # F5-TTS's speech_edit, step by step: frame bounds by rounding, kept mel frames, empty new frames.
    with torch.no_grad():
        mel = model.mel_spec(wave[None]).transpose(1, 2)
    start, end, new = round(0.5 * 24000 / 256), round(0.8 * 24000 / 256), round(0.4 * 24000 / 256)
    cond = torch.cat((mel[:, :start], torch.zeros(1, new, 100), mel[:, end:]), dim=1)
    keep = torch.ones(1, cond.shape[1], dtype=torch.bool)
    keep[:, start : start + new] = False
    out, _ = model.sample(
        cond, [text], cond.shape[1], steps=2, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=7, edit_mask=keep
    )
    frames = cond.shape[1]
    assert result.spans == ((start, start + new),)
    assert torch.equal(result.mel, out[0, :frames].t())
    assert torch.equal(result.mel[:, :start], mel[0, :start].t())  # kept frames are the recording's own
    assert torch.equal(result.mel[:, start + new :], mel[0, end:].t())
    generated = result.mel[:, start : start + new]
    assert torch.isfinite(generated).all() and generated.abs().min() > 0  # filled in, not left empty
    assert torch.equal(result.wave, _vocoder(result.mel[None])[0])
    assert result.seed == 7 and result.sample_rate == 24000


def test_a_quiet_recording_is_raised_to_target_rms_and_the_output_lowered_back(model):
    loud = _recording(amplitude=0.3)
    loud = loud * (0.1 / float(loud.pow(2).mean().sqrt()))  # exactly at target_rms: left as it is
    quiet = loud * 0.2
    kwargs = dict(vocoder=_vocoder, options=OPTIONS, seed=3, durations=[0.3])
    a = edit_speech(model, loud, "words", [(0.6, 0.9)], **kwargs)
    b = edit_speech(model, quiet, "words", [(0.6, 0.9)], **kwargs)
    torch.testing.assert_close(b.mel, a.mel, atol=1e-4, rtol=0)
    torch.testing.assert_close(b.wave, a.wave * 0.2, atol=1e-5, rtol=1e-4)


def test_edit_refuses_bad_recordings_and_texts(model):
    wave = _recording()
    for bad_wave, text, message in (
        (wave, "  ", "text (the transcript of the edited recording) is empty"),
        (torch.zeros(24000), "words", "silent"),
        (wave[None], "words", "non-empty mono"),
        (wave[:3000], "x" * 40, "text has 40 units but the edited recording only"),
    ):
        with pytest.raises(ValueError) as info:
            edit_speech(model, bad_wave, text, [(0.05, 0.1)], vocoder=_vocoder, options=OPTIONS, seed=0)
        assert message in str(info.value)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    flowtts.save(model, path)
    return str(path)


def _edit(model_file, *extra):
    return main(["edit", "--model", model_file, "--audio", ASSET, "--steps", "2", "--seed", "5", "-q", *extra])


def test_edit_command_writes_the_edited_recording(model_file, tmp_path):
    out = tmp_path / "e.wav"
    text = "The birch canoe slid on the rough planks."
    assert _edit(model_file, "--text", text, "--parts", "1.5-1.9", "--durations", "0.5", "-o", str(out)) == 0
    data, rate = sf.read(out, dtype="float32")

    model = flowtts.load(model_file)
    wave, _ = read_audio(ASSET, 24000)
    options = InferenceOptions(steps=2)
    direct = edit_speech(
        model, wave, text, [(1.5, 1.9)], durations=[0.5], vocoder=GriffinLim(model.mel_spec), options=options, seed=5
    )
    assert rate == 24000 and len(data) == direct.wave.numel()
    # F5-TTS's frames: the recording's centred-STFT frames, less the part's, plus the new length's (by rounding)
    hop = 256
    frames = wave.numel() // hop + 1 - (round(1.9 * 24000 / hop) - round(1.5 * 24000 / hop)) + round(0.5 * 24000 / hop)
    assert direct.mel.shape[1] == frames == 277
    assert len(data) == (frames - 1) * hop  # Griffin-Lim: a hop per frame after the first
    assert abs(len(data) - (wave.numel() + 0.1 * 24000)) < 1.5 * hop  # 0.1 s longer than the recording, +-
    assert abs(torch.from_numpy(data) - direct.wave.clamp(-1, 1)).max() < 1 / 2**14  # 16-bit file


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parts", "1-9"], "parts[0] ends at 9 s, after the recording"),
        (["--parts", "1-2,1.5-2.5"], "parts[1] starts at 1.5 s"),
        (["--parts", "1-2", "--durations", "1,2"], "--durations gives 2 lengths for 1 --parts"),
        (["--parts", "1-2", "--steps", "0"], "--steps must be an integer >= 1"),
        (["--parts", "1-2", "--target-rms", "0"], "--target-rms must be a positive number"),
    ],
)
def test_edit_command_errors_exit_2_with_no_output(model_file, tmp_path, capsys, extra, message):
    out = tmp_path / "e.wav"
    assert _edit(model_file, "--text", "words", "-o", str(out), *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_edit_command_rejects_malformed_parts(model_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _edit(model_file, "--text", "words", "--parts", "1.5:2", "-o", str(tmp_path / "e.wav"))
    assert info.value.code == 2
    assert "expected comma-separated START-END seconds" in capsys.readouterr().err
