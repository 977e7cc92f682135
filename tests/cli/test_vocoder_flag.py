"""``--vocoder`` (declared once for infer, edit, eval, serve, demo, app, reward): choices, bad values, use."""

from __future__ import annotations

import os

import pytest
import soundfile as sf

import flowtts
from conftest import randomise
from flowtts.cli import build_parser, main
from flowtts.cli.common import SHARED_FLAGS
from flowtts.model.build import build_model
from flowtts.vocoder.files import save_vocoder
from vocoder.helpers import small_vocoder

ASSET = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."
COMMANDS = {  # each command with --vocoder and the arguments it requires
    "infer": [],
    "edit": ["--audio", ASSET, "--text", "t", "--parts", "1-2"],
    "serve": [],
    "eval": ["--heldout", "m.csv"],
    "demo": [],
    "app": [],
    "reward": ["--data", "d", "--out", "o"],
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A small random model without a vocoder record, and the same weights recording the built-in voice."""
    folder = tmp_path_factory.mktemp("models")
    model = randomise(build_model("tiny"), std=0.02)
    plain, voiced = str(folder / "plain.safetensors"), str(folder / "voiced.safetensors")
    flowtts.save(model, plain)
    flowtts.save(model, voiced, extra={"vocoder": "builtin"})
    return plain, voiced


def test_every_command_takes_the_one_shared_flag_without_a_default():
    parser = build_parser()
    help_text = SHARED_FLAGS["vocoder"][1]["help"]
    for command, required in COMMANDS.items():
        assert parser.parse_args([command, *required]).vocoder is None, command
        assert parser.parse_args([command, *required, "--vocoder", "griffin-lim"]).vocoder == "griffin-lim"
        sub = parser._subparsers._group_actions[0].choices[command]
        (action,) = [a for a in sub._actions if "--vocoder" in a.option_strings]
        assert action.help == help_text, command  # declared once, in cli.common


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"flowtts {argv[0]}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_vocoder_is_one_line_and_status_2_before_any_work(command, capsys, tmp_path):
    argv = [command, *COMMANDS[command], "--vocoder", "hifigan"]
    _one_line_error(capsys, argv, "--vocoder must be one of auto, builtin, griffin-lim", "'hifigan'")
    missing = str(tmp_path / "none.safetensors")
    _one_line_error(capsys, [command, *COMMANDS[command], "--vocoder", missing], "vocoder file not found", missing)


def test_infer_uses_the_recorded_vocoder_unless_told_and_griffin_lim_works(model_files, tmp_path, capsys):
    plain, voiced = model_files
    base = ["infer", "--ref-audio", ASSET, "--ref-text", REF_TEXT, "-t", "Hello there.", "--steps", "2"]
    base += ["--seed", "3", "--vocoder_name", "vocos"]  # upstream's option: the note names the vocoder used
    waves = {}
    for name, model, extra in [
        ("auto", voiced, []),
        ("forced", voiced, ["--vocoder", "griffin-lim"]),
        ("plain", plain, []),
        ("builtin", plain, ["--vocoder", "builtin"]),
    ]:
        out = str(tmp_path / f"{name}.wav")
        assert main([*base, "--model", model, "-o", out, *extra]) == 0, name
        waves[name] = sf.read(out)[0]
        waves[name + " note"] = capsys.readouterr().err
    assert "so the neural vocoder is used" in waves["auto note"]
    assert "so the Griffin-Lim vocoder is used" in waves["forced note"]
    assert "so the Griffin-Lim vocoder is used" in waves["plain note"]
    assert "so the neural vocoder is used" in waves["builtin note"]
    assert waves["forced"].shape == waves["auto"].shape and abs(waves["forced"] - waves["auto"]).max() > 1e-3
    assert (waves["forced"] == waves["plain"]).all()  # the same weights through the same Griffin-Lim
    assert (waves["auto"] == waves["builtin"]).all()


def test_a_vocoder_file_for_another_front_end_and_two_vocoders_are_refused(model_files, tmp_path, capsys):
    plain, _ = model_files
    other = str(tmp_path / "small.safetensors")
    save_vocoder(small_vocoder(), other)
    argv = ["infer", "--model", plain, "--ref-audio", ASSET, "--ref-text", REF_TEXT, "-t", "Hi.", "--steps", "2"]
    _one_line_error(capsys, [*argv, "--vocoder", other, "-o", str(tmp_path / "x.wav")], "'n_mel_channels': 12", "100")
    assert not (tmp_path / "x.wav").exists()
    _one_line_error(capsys, [*argv, "--vocoder", "builtin", "--vocoder-path", str(tmp_path)], "give one vocoder")


def test_edit_takes_the_vocoder_too(model_files, tmp_path):
    _, voiced = model_files
    argv = ["edit", "--audio", ASSET, "--text", "The birch canoe slid on the long planks.", "--parts", "0.6-1.1"]
    argv += ["--model", voiced, "--steps", "2", "--seed", "1", "-q"]
    assert main([*argv, "-o", str(tmp_path / "a.wav")]) == 0
    assert main([*argv, "--vocoder", "griffin-lim", "-o", str(tmp_path / "b.wav")]) == 0
    a, b = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0]
    assert a.shape == b.shape and abs(a - b).max() > 1e-3
