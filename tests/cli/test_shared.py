"""One declaration of the shared flags, one edit-part parser, one multi-voice join: the CLI and the app agree."""

import os
import re
from pathlib import Path

import pytest
import soundfile as sf

import flowtts
from conftest import randomise, write_file
from flowtts.app import engine
from flowtts.checkpoints.loader import load
from flowtts.cli import build_parser, main
from flowtts.cli.common import sampling_options
from flowtts.model.build import build_model

CLI = Path(__file__).resolve().parents[2] / "src" / "flowtts" / "cli"
ASSET = str(Path(__file__).resolve().parents[1] / "assets" / "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."
SAMPLING_FLAGS = ("--cfg", "--sway", "--nfe_step", "--target-rms", "--vocoder-path", "--ref-silence", "--cross-fade")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    flowtts.save(randomise(build_model("tiny"), std=0.02), path)
    return str(path)


def test_the_shared_flags_are_declared_once_and_without_defaults():
    for path in CLI.glob("*.py"):
        if path.name != "common.py":
            found = [flag for flag in SAMPLING_FLAGS if re.search(f'"{flag}"', path.read_text(encoding="utf-8"))]
            assert not found, f"{path.name} declares {found}: use cli.common.add_sampling_flags"
    parser = build_parser()
    commands = {
        "infer": [],
        "edit": ["--audio", "a.wav", "--text", "t", "--parts", "1-2"],
        "serve": [],
        "eval": ["--heldout", "m.csv"],
        "reward": ["--data", "d", "--out", "o"],
    }
    for command, required in commands.items():
        args = vars(parser.parse_args([command, *required]))
        for name in ("steps", "cfg", "sway", "seed", "device", "dtype", "vocoder_path", "target_rms", "threads"):
            assert args.get(name) is None, f"{command} --{name} has an argparse default: {args[name]!r}"


def test_edit_uses_the_model_files_target_rms_unless_given():
    model = load("builtin")
    recorded = float(model.metadata["target_rms"])
    assert recorded != 0.1  # F5-TTS's default, which --target-rms used to impose
    edit = ["edit", "--audio", ASSET, "--text", "t", "--parts", "1-2"]
    assert sampling_options(model, build_parser().parse_args(edit)).target_rms == recorded
    assert sampling_options(model, build_parser().parse_args([*edit, "--target-rms", "0.2"])).target_rms == 0.2


def test_edit_parts_are_read_by_one_parser():
    parse = build_parser().parse_args
    args = parse(["edit", "--audio", "a", "--text", "t", "--parts", "1.4-2.4, 4-4.9;.5-1"])
    assert args.parts == tuple(engine.parse_parts("1.4-2.4, 4-4.9;.5-1")) == ((1.4, 2.4), (4.0, 4.9), (0.5, 1.0))
    for bad in ("1.2 to 1.8", "inf-2", "-1-2"):
        with pytest.raises(ValueError, match="start-end seconds"):
            engine.parse_parts(bad)


def test_flowtts_edit_and_the_apps_edit_tab_give_the_same_samples(model_file, tmp_path):
    parts, text = "0.6-1.1", "The birch canoe slid on the long planks."
    out = tmp_path / "cli.wav"
    args = ["edit", "--audio", ASSET, "--text", text, "--parts", parts, "--model", model_file, "--steps", "3"]
    assert main([*args, "--seed", "11", "-o", str(out), "-q"]) == 0
    app = tmp_path / "app"
    app.mkdir()
    speech = engine.edit(load(model_file), ASSET, text, parts, out_dir=str(app), seed=11, steps=3)
    assert speech.seed == 11
    cli_wave, _ = sf.read(out)
    app_wave, _ = sf.read(speech.wav)
    assert cli_wave.shape == app_wave.shape and (cli_wave == app_wave).all()


def test_the_clis_and_the_apps_multi_voice_give_the_same_samples(model_file, tmp_path):
    text = "Hello there. [town] Good evening to you all. [main] Bye."
    config = write_file(
        tmp_path,
        "voices.toml",
        f"""
ckpt_file = "{model_file}"
ref_audio = "{ASSET}"
ref_text = "{REF_TEXT}"
gen_text = "{text}"
nfe_step = 3

[voices.town]
ref_audio = "{ASSET}"
ref_text = "{REF_TEXT}"
speed = 0.5
""",
    )
    out = tmp_path / "cli.wav"
    assert main(["infer", "-c", config, "--seed", "5", "-o", str(out), "-q"]) == 0
    voices = [engine.VoiceSlot("main", ASSET, REF_TEXT), engine.VoiceSlot("town", ASSET, REF_TEXT, speed=0.5)]
    app = tmp_path / "app"
    app.mkdir()
    speech = engine.speak_voices(load(model_file), voices, text, out_dir=str(app), seed=5, steps=3)
    cli_wave, rate = sf.read(out)
    app_wave, _ = sf.read(speech.wav)
    assert speech.seed == 5 and os.path.basename(speech.wav) == "voices.wav"
    assert cli_wave.shape == app_wave.shape and (cli_wave == app_wave).all()
    assert abs(speech.audio_seconds - len(cli_wave) / rate) < 1e-6
