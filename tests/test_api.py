import os

import numpy as np
import pytest
import soundfile as sf

import flowtts
from conftest import randomise
from flowtts.api import F5TTS
from flowtts.cli import main
from flowtts.model.build import build_model

ASSET = os.path.join(os.path.dirname(__file__), "assets", "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."
REF_FRAMES = (58800 + 1200) // 256 + 1  # the asset's 2.45 s between its edge silences, + 50 ms, at 24 kHz
TEXT = "A few words to say."


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "tiny.safetensors"
    flowtts.save(randomise(build_model("tiny"), std=0.02), path)
    return str(path)


def test_infer_matches_the_cli_and_writes_the_files(model_file, tmp_path):
    tts = F5TTS(model=model_file, device="cpu")
    wave, rate, spec = tts.infer(
        ASSET, REF_TEXT, TEXT, nfe_step=4, seed=7, file_wave=tmp_path / "api.wav", file_spec=tmp_path / "api.png"
    )
    assert rate == 24000 and wave.dtype == np.float32 and spec.shape[0] == 100
    assert tts.seed == 7
    cli = tmp_path / "cli.wav"
    args = ["infer", "--model", model_file, "--ref-audio", ASSET, "--ref-text", REF_TEXT, "--text", TEXT]
    assert main([*args, "--steps", "4", "--seed", "7", "-o", str(cli), "-q"]) == 0
    from_cli, _ = sf.read(cli)
    written, _ = sf.read(tmp_path / "api.wav")
    assert from_cli.shape == wave.shape == written.shape
    assert abs(from_cli - wave).max() < 2e-3 and abs(written - wave).max() < 2e-3  # 16-bit files
    assert (tmp_path / "api.png").stat().st_size > 1000


def test_defaults_seeds_and_solver_choice(model_file, tmp_path):
    tts = F5TTS(model=model_file, device="cpu")
    default, _, _ = tts.infer(ASSET, REF_TEXT, TEXT, seed=None, progress=False)  # 32 steps, cfg 2, sway -1
    drawn = tts.seed
    assert drawn >= 0
    again, _, _ = tts.infer(ASSET, REF_TEXT, TEXT, seed=drawn, nfe_step=32, cfg_strength=2, sway_sampling_coef=-1)
    assert np.array_equal(default, again)
    fewer, _, _ = tts.infer(ASSET, REF_TEXT, TEXT, seed=drawn, nfe_step=4)
    assert fewer.shape == default.shape and not np.allclose(fewer, default, atol=1e-3)
    midpoint = F5TTS(model=model_file, ode_method="midpoint", device="cpu")
    mid, _, _ = midpoint.infer(ASSET, REF_TEXT, TEXT, seed=drawn, nfe_step=4)
    assert not np.allclose(mid, fewer, atol=1e-3)
    fixed, _, spec = tts.infer(ASSET, REF_TEXT, TEXT, seed=1, nfe_step=2, fix_duration=4.0)
    assert spec.shape[1] == int(4.0 * 24000 / 256) - REF_FRAMES
    alone, _, _ = tts.infer(ASSET, REF_TEXT, TEXT, seed=drawn, nfe_step=4, continue_reference=False)
    cli_args = ["--ref-audio", ASSET, "--ref-text", REF_TEXT, "--text", TEXT, "--steps", "4", "--seed", str(drawn)]
    assert alone.shape == fewer.shape and not np.allclose(alone, fewer, atol=1e-3)
    out = str(tmp_path / "alone.wav")
    assert main(["infer", "--model", model_file, *cli_args, "--no-continue-reference", "-o", out, "-q"]) == 0
    assert abs(sf.read(out)[0] - alone).max() < 2e-3  # the CLI's unprompted wave (16-bit file)


def test_every_upstream_keyword_is_accepted(model_file, tmp_path):
    # upstream F5-TTS 1.1.22's F5TTS(...) and F5TTS.infer(...) keywords, all given by name
    tts = F5TTS(
        model=model_file,
        ckpt_file="",
        vocab_file="",
        ode_method="euler",
        use_ema=True,
        vocoder_local_path=None,
        device="cpu",
        hf_cache_dir=str(tmp_path / "hub"),
    )
    settings = dict(target_rms=0.1, cross_fade_duration=0.15, sway_sampling_coef=-1, cfg_strength=2, nfe_step=3)
    settings.update(speed=1.0, fix_duration=None, remove_silence=False, seed=5)
    shown = []
    wave, _, _ = tts.infer(
        ref_file=ASSET,
        ref_text=REF_TEXT,
        gen_text=TEXT,
        show_info=shown.append,
        progress=None,
        file_wave=None,
        file_spec=None,
        **settings,
    )
    plain, _, _ = F5TTS(model=model_file, device="cpu").infer(ASSET, REF_TEXT, TEXT, nfe_step=3, seed=5)
    assert np.array_equal(wave, plain)
    assert not (tmp_path / "hub").exists()  # nothing is downloaded or cached


def test_bad_arguments_are_refused_clearly(model_file):
    with pytest.raises(ValueError, match="downloads no weights: pass ckpt_file"):
        F5TTS(model="F5TTS_v1_Base")
    with pytest.raises(ValueError, match="ode_method must be one of"):
        F5TTS(model=model_file, ode_method="rk4")
    tts = F5TTS(model=model_file, device="cpu")
    with pytest.raises(ValueError, match="gen_text is empty"):
        tts.infer(ASSET, REF_TEXT, "  ")
    with pytest.raises(ValueError, match="nfe_step must be an integer >= 1"):
        tts.infer(ASSET, REF_TEXT, TEXT, nfe_step=0)
    for bad, error, match in (
        (dict(gen_text=123), TypeError, "gen_text must be a string, got int"),
        (dict(speed=float("nan")), ValueError, "speed must be a positive number .*, got nan"),
        (dict(nfe_step="4"), ValueError, "nfe_step must be an integer >= 1, got '4'"),
        (dict(file_wave="/no/such/dir/out.wav"), ValueError, "output directory does not exist"),
        (dict(file_wave="noext"), ValueError, "has no extension"),
    ):
        with pytest.raises(error, match=match):
            tts.infer(ASSET, REF_TEXT, **{"gen_text": TEXT, **bad})
    with pytest.raises(ValueError, match="language must be English"):
        tts.transcribe(ASSET, language="zh")
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        tts.infer("/no/such.wav", REF_TEXT, TEXT)


def test_an_empty_reference_transcript_is_recognised(model_file):
    pytest.importorskip("pocketsphinx")
    from flowtts.checkpoints.loader import builtin_reference

    clip, transcript = builtin_reference()
    tts = F5TTS(model=model_file, device="cpu")
    messages = []
    wave, _, _ = tts.infer(clip, "", TEXT, show_info=messages.append, nfe_step=1, seed=0, progress=False)
    assert len(messages) == 1 and "followed the white horse next to the lake" in messages[0]
    assert "white horse" in tts.transcribe(clip).lower()
    assert wave.size > 0
