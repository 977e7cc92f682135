"""Bad values on the command line end in one line on stderr and exit status 2, within seconds (issue #31).

Each case once hung, allocated without bound, or ended in a traceback; each is refused where the value
enters (the options, the model-file reader, ``sample()``), before any output is written.
"""

import json
import os
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import flowtts
from conftest import randomise
from flowtts.cli import main
from flowtts.model.build import build_model

ASSET = os.path.join(os.path.dirname(__file__), "assets", "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    flowtts.save(randomise(build_model("tiny"), std=0.02), path)
    return str(path)


def _fails(capsys, argv, expected):
    """``flowtts ARGV`` exits 2 within seconds with one line on stderr that says ``expected``."""
    start = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"flowtts {argv[0]}: error: ") and expected in lines[0], lines[0]
    assert seconds < 30


def _infer(model_file, tmp_path, *extra, text="A whole sentence to say."):
    out = ["-o", str(tmp_path / "x.wav"), "--steps", "2", "-q", "--ref-audio", ASSET, "--ref-text", REF_TEXT]
    return ["infer", "--model", model_file, "--text", text, *out, *extra]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--ref-silence", "1e6"], "--ref-silence must be a number of seconds >= 0, at most 10, got 1000000.0"),
        (["--fix-duration", "1e9"], "--fix-duration must be a positive number of seconds, at most 60 (reference"),
        (["--steps", "1000000"], "--steps must be an integer >= 1, at most 1000 (a guard against runaway requests)"),
        (["--cfg", "1e30"], "--cfg must be a finite number from 0 to 10 (F5-TTS uses 2; more gives noise), got 1e+30"),
        (["--target-rms", "5"], "--target-rms must be a positive number, at most 1, got 5.0"),
        (["--device", "banana"], "--device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'banana'"),
        (["--threads", "-5"], "--threads must be an integer >= 1 (CPU threads), got -5"),
        (["--threads", "0"], "--threads must be an integer >= 1 (CPU threads), got 0"),
    ],
)
def test_bad_sampling_and_machine_flags(model_file, tmp_path, capsys, extra, expected):
    _fails(capsys, _infer(model_file, tmp_path, *extra), expected)
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(model_file, tmp_path, capsys):
    _fails(capsys, _infer(model_file, tmp_path, "--device", "cuda"), "--device 'cuda': this machine has no CUDA GPU")


@pytest.mark.parametrize("speed, shown", [("1e9", "1000000000.0"), ("1e-9", "1e-09")])
def test_a_speed_out_of_range_is_refused_even_for_a_short_text(model_file, tmp_path, capsys, speed, shown):
    # F5-TTS speaks texts under 10 bytes at a fixed rate, so nothing else would notice the speed
    expected = f"speed must be a positive number from 0.1 to 10, got {shown}"
    _fails(capsys, _infer(model_file, tmp_path, "--speed", speed, text="Hi!"), expected)


def test_edit_durations_are_bounded_before_anything_is_laid_out(model_file, tmp_path, capsys):
    argv = ["edit", "--audio", ASSET, "--text", "The birch canoe slid on the planks.", "--parts", "0.5-1.0"]
    argv += ["--durations", "1e9", "--model", model_file, "--steps", "2", "-o", str(tmp_path / "e.wav"), "-q"]
    _fails(capsys, argv, "durations[0] must be positive seconds, at most 60 (an edit is sampled in one call)")


def _rewrite(source: str, target, **changes) -> str:
    """``source`` with some metadata fields replaced (``config_patch``: keys merged into the config)."""
    with safe_open(source, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for key, value in changes.items():
        if key == "config_patch":
            config = json.loads(metadata["config"])
            for field, new in value.items():
                if field == "mel":
                    config["mel"].update(new)
                else:
                    config[field] = new
            metadata["config"] = json.dumps(config)
        else:
            metadata[key] = value
    save_file(tensors, str(target), metadata=metadata)
    return str(target)


@pytest.mark.parametrize(
    "changes, expected",
    [
        (dict(ref_silence="1e9"), "the model file's 'ref_silence' metadata must be a number from 0 to 10, got '1e9'"),
        (dict(speed="fast"), "the model file's 'speed' metadata must be a number from 0.1 to 10, got 'fast'"),
        (dict(config_patch={"dim": "x"}), "metadata field 'config': dim must be an integer from 1 to 16384, got 'x'"),
        (
            dict(config_patch={"dim": 1e9}),
            "metadata field 'config': dim must be an integer from 1 to 16384, got 1000000000.0",
        ),
        (dict(config_patch={"depth": 10**7}), "metadata field 'config': depth must be an integer from 1 to 256"),
        (dict(config_patch={"mel": {"n_fft": 10**9}}), "metadata field 'config': mel.n_fft must be an integer"),
        (dict(config_patch={"qk_norm": "bogus"}), "metadata field 'config' describes no model flowtts can build"),
        (dict(config="not json"), "metadata field 'config' is not valid JSON (Expecting value: line 1 column 1"),
        (dict(vocab="{"), "metadata field 'vocab' is not valid JSON"),
        (dict(sampling_recipe='{"steps": 0}'), "metadata field 'sampling_recipe' is not a sampling recipe"),
    ],
)
def test_a_model_file_with_bad_metadata_is_refused_by_info_and_infer_naming_file_and_field(
    model_file, tmp_path, capsys, changes, expected
):
    bad = _rewrite(model_file, tmp_path / "bad.safetensors", **changes)
    _fails(capsys, ["info", bad], f"{bad}: ")
    _fails(capsys, ["info", bad], expected)
    _fails(capsys, _infer(bad, tmp_path), expected)


def test_model_paths_that_are_no_file(tmp_path, capsys):
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    _fails(capsys, ["info", str(tmp_path)], f"{tmp_path} is a folder; give the model file in it")
    _fails(capsys, ["info", str(tmp_path / "loop_a")], "its symbolic links point back to each other (a link loop)")
    _fails(capsys, ["info", str(tmp_path / "dangling.safetensors")], "gone.safetensors', which does not exist")


def test_outputs_and_plug_ins_that_cannot_work(model_file, tmp_path, capsys):
    folder = tmp_path / "soup"
    folder.mkdir()
    average = ["average", model_file, model_file, "--force", "-o"]
    _fails(capsys, [*average, str(folder)], f"-o {folder} is a folder; give the file to write")
    _fails(capsys, [*average, str(tmp_path / "soup.pt")], "the averaged model is a .safetensors file")
    reward = ["reward", "--model", model_file, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "-q"]
    _fails(capsys, [*reward, "--reward", "os:system"], "reward 'os:system' must take (mel, prompts)")
    if os.path.isdir("/proc"):  # it exists, and refuses new files with "No such file or directory"
        argv = _infer(model_file, tmp_path)
        argv[argv.index("-o") + 1] = "/proc/x.wav"
        _fails(capsys, argv, "cannot write to /proc: it does not take new files; choose another folder")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x04 not a recogniser")
    _fails(capsys, ["asr", "test", "--recognizer", str(evil), "--data", str(tmp_path)], "is not a recogniser file")


def test_a_reference_clip_of_nan_samples_is_refused(model_file, tmp_path, capsys):
    clip = tmp_path / "nan.wav"
    sf.write(clip, np.full(24000, np.nan, dtype=np.float32), 24000, subtype="FLOAT")
    argv = _infer(model_file, tmp_path)
    argv[argv.index(ASSET)] = str(clip)
    _fails(capsys, argv, "reference audio contains NaN or infinite samples")
