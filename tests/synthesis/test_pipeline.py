"""The F5-TTS pipeline's rules on their own (the comparison with upstream is test_upstream_pipeline.py)."""

import numpy as np
import pytest
import torch

import flowtts
from conftest import randomise
from flowtts.audio.pcm import PcmClip, silence_frames
from flowtts.model.build import build_model
from flowtts.synthesis import InferenceOptions, check_options, prepare_reference, recommended_options, synthesize
from flowtts.synthesis.pipeline import (
    chunk_frames,
    default_pipeline,
    end_transcript,
    fix_durations,
    max_chars,
    model_transcript,
    prepared_wave,
)
from flowtts.text.chunking import chunk_text_f5tts


def test_official_checkpoints_default_to_f5tts_and_flowtts_files_to_flowtts(tmp_path):
    from safetensors.torch import save_file

    model = randomise(build_model("tiny"), std=0.02)
    ours = tmp_path / "ours.safetensors"
    flowtts.save(model, ours)
    official = tmp_path / "model_1.safetensors"
    save_file({f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(official))
    assert default_pipeline(model) == "flowtts"  # built in memory
    assert default_pipeline(flowtts.load(ours)) == "flowtts"
    assert default_pipeline(flowtts.load("builtin")) == "flowtts"
    loaded = flowtts.load(official, preset=model.config)
    assert default_pipeline(loaded) == "f5tts" and recommended_options(loaded).pipeline == "f5tts"
    assert recommended_options(loaded, pipeline="flowtts").pipeline == "flowtts"
    assert recommended_options(flowtts.load("builtin")).pipeline == "flowtts"
    with pytest.raises(ValueError, match="pipeline must be one of 'f5tts', 'flowtts', got 'upstream'"):
        check_options(InferenceOptions(pipeline="upstream"))


def test_transcript_endings_and_the_extra_space():
    cases = {"Hello": "Hello. ", "Hello.": "Hello. ", "Hello. ": "Hello. ", "Hello!": "Hello!. ", "Hi ": "Hi . "}
    cases.update({"你好。": "你好。", "你好": "你好. "})
    for text, ended in cases.items():
        assert end_transcript(text) == ended
    assert model_transcript("Hello. ") == "Hello.  " and model_transcript("你好。") == "你好。"


def test_chunk_sizes_and_durations():
    assert max_chars("x" * 50, 3.25, 1.0) == int(50 / 3.25 * 18.75)
    text = "One two three. Four five, six seven; eight. Nine!"
    assert chunk_text_f5tts(text, 20) == ["One two three.", "Four five,", "six seven; eight.", "Nine!"]
    assert chunk_text_f5tts(text, 0) == ["One two three.", "Four five,", "six seven;", "eight.", "Nine!"]
    assert chunk_text_f5tts("一二三。四五，六", 12) == ["一二三。", "四五，六"]  # no space after wide ones
    # 100 reference frames over 50 bytes: 2 frames a byte; a chunk under 10 bytes is read at speed 0.3
    assert chunk_frames("x" * 20, None, 100, 50, 1.0, 256, 24000) == 140
    assert chunk_frames("x" * 9, None, 100, 50, 2.0, 256, 24000) == 100 + int(2 * 9 / 0.3)
    assert chunk_frames("anything", 9.0, 100, 50, 1.0, 256, 24000) == int(9.0 * 24000 / 256)
    shares = fix_durations(20.0, ["a" * 30, "b" * 10], 375, 256, 24000, 0.15)
    # each chunk: the 4 s reference + its byte share of 20 - 4 s + one 0.15 s cross-fade
    assert shares == pytest.approx([4.0 + 16.15 * 0.75, 4.0 + 16.15 * 0.25])
    assert fix_durations(20.0, ["one chunk"], 375, 256, 24000, 0.15) == [20.0]


def test_the_reference_as_f5tts_prepares_it():
    model = build_model("tiny")
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(36000) / 5) * 0.3 + rng.normal(0, 1e-3, 36000)
    breath = rng.normal(0, 10 ** (-46 / 20), 2400)  # between the -50 and -42 dBFS thresholds
    wave = torch.from_numpy(np.concatenate((np.zeros(24000), breath, speech, breath)).astype(np.float32))
    f5 = prepare_reference(model, wave, "Some words", InferenceOptions(pipeline="f5tts"))
    own = prepare_reference(model, wave, "Some words", InferenceOptions())
    assert f5.pipeline == "f5tts" and f5.text == "Some words.  " and f5.transcript == "Some words. "
    assert silence_frames(50, 24000) == 1198
    samples = 36000 + 1198  # the breath (-46 dBFS) is trimmed, then pydub's 50 ms
    assert f5.frames == f5.cut == samples // 256 and f5.mel.shape[1] == f5.frames + 1
    assert own.cut == own.mel.shape[1] == (36000 + 2 * 2400 + 1200) // 256 + 1 and own.text == "Some words. "
    assert f5.seconds == pytest.approx(samples / 24000)
    with pytest.raises(ValueError, match="silent"):
        prepared_wave(PcmClip.from_float(np.full(48000, 0.004), 24000), InferenceOptions(pipeline="f5tts"))


def test_synthesis_under_f5tts_keeps_the_references_last_frame_and_refuses_a_mixed_up_reference():
    model = randomise(build_model("tiny"), std=0.02)
    wave = torch.sin(torch.arange(24000) / 5) * 0.2
    options = InferenceOptions(pipeline="f5tts", steps=2)
    reference = prepare_reference(model, wave, "Some words", options)
    vocoder = lambda mel: mel.new_zeros(mel.shape[0], mel.shape[2] * 256)  # noqa: E731
    (out,) = synthesize(model, reference, ["More words here."], vocoder=vocoder, options=options, seeds=[0])
    ref_bytes = len("Some words.  ")
    assert out.mel.shape[1] == int(reference.cut / ref_bytes * len("More words here.") / 1.0)
    with pytest.raises(ValueError, match="prepared by the 'f5tts' pipeline but the options ask for 'flowtts'"):
        synthesize(model, reference, ["x y z"], vocoder=vocoder, options=InferenceOptions(steps=2), seeds=[0])


def test_infer_has_a_pipeline_flag():
    from flowtts.cli import build_parser

    args = build_parser().parse_args(["infer", "--text", "x", "--pipeline", "flowtts"])
    assert args.pipeline == "flowtts"
    assert build_parser().parse_args(["infer", "--text", "x"]).pipeline is None
