import os
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import flowtts
from conftest import randomise, write_file
from flowtts.cli import main
from flowtts.model.build import build_model

ASSET = os.path.join(os.path.dirname(__file__), "assets", "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."
REF_FRAMES = (58800 + 1200) // 256 + 1  # the asset's 2.45 s between its edge silences, + 50 ms, at 24 kHz


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    flowtts.save(randomise(build_model("tiny"), std=0.02), path)
    return str(path)


def _infer(model_file, *extra):
    return main(
        [
            "infer",
            "--model",
            model_file,
            "--ref-audio",
            ASSET,
            "--ref-text",
            REF_TEXT,
            "--steps",
            "4",
            "--quiet",
            *extra,
        ]
    )


def test_infer_writes_a_wav_of_the_estimated_duration(model_file, tmp_path):
    text = "Hello there, this is a short test sentence."
    out = tmp_path / "out.wav"
    assert _infer(model_file, "--text", text, "-o", str(out), "--seed", "3", "--save-mel", str(tmp_path / "m.png")) == 0
    data, rate = sf.read(out)
    assert rate == 24000
    # F5-TTS's rule, frame for frame: the reference's frames per UTF-8 byte of its transcript as F5-TTS ends it
    # ("planks." + " "), times the new text's bytes; Griffin-Lim gives a hop per frame after the first
    frames = int(REF_FRAMES / len((REF_TEXT + " ").encode("utf-8")) * len(text.encode("utf-8")))
    assert frames == 235 and len(data) == (frames - 1) * 256
    assert (tmp_path / "m.png").stat().st_size > 1000
    assert sorted(os.listdir(tmp_path)) == ["m.png", "out.wav"]


def test_text_file_batches_equal_single_calls(model_file, tmp_path):
    lines = ["One small sentence.", "A second and somewhat longer line of text.", "Third."]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    assert (
        _infer(
            model_file,
            "--text-file",
            str(tmp_path / "list.txt"),
            "-o",
            str(tmp_path / "batch"),
            "--seed",
            "10",
            "--batch-size",
            "3",
        )
        == 0
    )
    assert sorted(os.listdir(tmp_path / "batch")) == ["001.wav", "002.wav", "003.wav"]
    for i, line in enumerate(lines):
        single = tmp_path / f"single{i}.wav"
        assert _infer(model_file, "--text", line, "-o", str(single), "--seed", str(10 + i)) == 0
        a, _ = sf.read(tmp_path / "batch" / f"{i + 1:03d}.wav")
        b, _ = sf.read(single)
        assert a.shape == b.shape
        assert abs(a - b).max() < 2e-3  # 16-bit wav; batched sampling is exact up to float rounding


def test_ref_silence_lengthens_the_reference_and_so_the_estimated_duration(model_file, tmp_path):
    """F5-TTS's rule scales the new text's length by the reference's: 0.45 s more silence after a 2.55 s
    reference makes the generated part 0.45 / 2.55 longer (to a frame)."""
    text = "Hello there, this is a short test sentence."
    lengths = []
    for silence in ("0.05", "0.5"):
        out = tmp_path / f"out_{silence}.wav"
        assert _infer(model_file, "--text", text, "-o", str(out), "--seed", "3", "--ref-silence", silence) == 0
        lengths.append(len(sf.read(out)[0]))
    assert lengths[1] / lengths[0] == pytest.approx(3.0 / 2.55, rel=0.02)


def test_no_continue_reference_speaks_unprompted_and_the_model_file_can_ask_for_it(model_file, tmp_path):
    text = "Hello there, this is a short test sentence."
    waves = {}
    for name, extra in (("prompted", []), ("unprompted", ["--no-continue-reference"])):
        out = tmp_path / f"{name}.wav"
        assert _infer(model_file, "--text", text, "-o", str(out), "--seed", "3", *extra) == 0
        waves[name] = sf.read(out)[0]
    assert waves["prompted"].shape == waves["unprompted"].shape  # the clip still sets the length
    assert np.abs(waves["prompted"] - waves["unprompted"]).max() > 1e-3
    asking = tmp_path / "asking.safetensors"
    flowtts.save(flowtts.load(model_file), asking, extra={"continue_reference": "false"})
    for name, extra in (("unprompted", []), ("prompted", ["--continue-reference"])):
        out = tmp_path / f"asking_{name}.wav"
        assert _infer(str(asking), "--text", text, "-o", str(out), "--seed", "3", *extra) == 0
        np.testing.assert_allclose(sf.read(out)[0], waves[name], atol=1e-4)


def test_upstream_option_spellings_and_fix_duration(model_file, tmp_path):
    out = tmp_path / "up.wav"
    args = ["infer", "--ckpt_file", model_file, "--ref_audio", ASSET, "--ref_text", REF_TEXT, "--gen_text", "Hello."]
    args += ["--nfe_step", "2", "--cfg_strength", "1", "--sway_sampling_coef", "-1", "--fix_duration", "4"]
    args += ["--target_rms", "0.1", "--cross_fade_duration", "0", "--seed", "1", "-o", str(out), "-q"]
    assert main(args) == 0
    data, rate = sf.read(out)
    assert abs(len(data) - (int(4 * 24000 / 256) - REF_FRAMES) * 256) <= 256


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "  "], "--text is empty"),
        (["--text", "hi", "--ref-audio", "/no/such.wav"], "audio file not found"),
        (["--text", "hi", "--model", "/no/model.pt"], "model file not found"),
        (["--text", "hi", "--preset", "F5TTS_Huge"], "carries its own architecture"),
        (["--text", "hi", "--steps", "0"], "--steps must be an integer >= 1, at most 1000"),
        (["--text", "hi", "-o", "/no/dir/out.wav"], "output directory does not exist"),
        (
            ["--text", "hi", "--fix-duration", "2"],
            "fix_duration (2.0 s) must be longer than the reference clip (2.50 s)",
        ),
        (["--text", "hi", "--fix-duration", "-1"], "--fix-duration must be a positive number"),
        (["--text", "hi", "--target-rms", "0"], "--target-rms must be a positive number"),
        (["--text", "hi", "--cross-fade", "-0.1"], "--cross-fade must be a number >= 0"),
        (["--text", "hi", "--speed", "nan"], "--speed must be a positive number"),
        (["--text", "hi", "--ref-silence", "-0.5"], "--ref-silence must be a number of seconds >= 0"),
        (["--text", "hi", "--sway", "-2"], "sway_sampling_coef must lie in [-1, 1.7519]"),
        (["--text", "A whole sentence to say.", "--speed", "9"], "too short for its"),
        (["--text", "A whole sentence to say.", "--speed", "0.001"], "speed must be a positive number from 0.1 to 10"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_output(model_file, tmp_path, capsys, args, message):
    assert _infer(model_file, "-o", str(tmp_path / "x.wav"), *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(
    "output, message",
    [
        ("{dir}", "is a directory; give a file name"),
        ("{dir}/noext", "has no extension"),
        ("{dir}/x.xyz", "unknown audio format .xyz"),
        ("/proc/x.wav", "cannot write to /proc"),
    ],
)
def test_bad_output_paths_are_refused_before_the_model_is_loaded(tmp_path, capsys, output, message):
    code = main(["infer", "--model", "/no/such/model.pt", "--text", "hi", "-o", output.format(dir=tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "model file not found" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_speed_out_of_range_names_the_range_that_fits(model_file, tmp_path, capsys):
    assert _infer(model_file, "--text", "A whole sentence to say.", "--speed", "9", "-o", str(tmp_path / "x.wav")) == 2
    err = capsys.readouterr().err
    low, high = (float(v) for v in err.split("speed must lie in about [")[1].split("]")[0].split(", "))
    assert 0 < low < 1 < high < 9
    assert (
        _infer(
            model_file, "--text", "A whole sentence to say.", "--speed", str(high * 0.9), "-o", str(tmp_path / "y.wav")
        )
        == 0
    )


def test_a_huge_seed_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--text", "hi", "--seed", "99999999999999999999"])
    assert exit_info.value.code == 2
    assert "argument --seed: must lie in 0..4294967295" in capsys.readouterr().err


def test_seed_minus_one_is_a_random_seed_and_is_printed(model_file, tmp_path, capsys):
    seeds = []
    for name in ("a.wav", "b.wav"):
        assert (
            main(
                [
                    "infer",
                    "--model",
                    model_file,
                    "--ref-audio",
                    ASSET,
                    "--ref-text",
                    REF_TEXT,
                    "--steps",
                    "2",
                    "--text",
                    "Hello.",
                    "--seed",
                    "-1",
                    "-o",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
        seeds.append(int(capsys.readouterr().err.split("seed ")[-1].split()[0].strip(",")))
    assert seeds[0] != seeds[1] and all(0 <= s < 2**31 for s in seeds)


def test_short_and_unreadable_references(model_file, tmp_path, capsys):
    sf.write(tmp_path / "short.wav", torch.randn(4000).numpy() * 0.1, 24000)
    (tmp_path / "junk.wav").write_bytes(b"junk")
    for ref, message in ((tmp_path / "short.wav", "at least 0.5 s"), (tmp_path / "junk.wav", "cannot read audio")):
        code = main(
            [
                "infer",
                "--model",
                model_file,
                "--ref-audio",
                str(ref),
                "--ref-text",
                "x",
                "--text",
                "hi",
                "-o",
                str(tmp_path / "y.wav"),
                "-q",
            ]
        )
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "y.wav").exists()


def test_characters_outside_the_vocabulary_are_listed_once(tmp_path, caplog):
    vocab = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz.,")}
    path = tmp_path / "vocab_model.safetensors"
    flowtts.save(randomise(build_model("tiny", vocab), std=0.02), path)
    with caplog.at_level("WARNING", logger="flowtts"):
        code = main(
            [
                "infer",
                "--model",
                str(path),
                "--ref-audio",
                ASSET,
                "--ref-text",
                "the birch canoe.",
                "--text",
                "hello @ world #1",
                "-o",
                str(tmp_path / "v.wav"),
                "--steps",
                "2",
                "-q",
            ]
        )
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if "not in the vocabulary" in r.getMessage()]
    assert len(warnings) == 1 and "'@'" in warnings[0] and "'#'" in warnings[0] and "'1'" in warnings[0]


def test_demo_refuses_a_negative_distillation_time(capsys):
    from flowtts.cli import main

    assert main(["demo", "--distill-seconds", "-1", "--out", "/no/such/dir"]) == 2
    assert "--distill-seconds must be >= 0" in capsys.readouterr().err


def test_a_missing_reference_transcript_is_recognised_offline(model_file, tmp_path, capsys, monkeypatch):
    from flowtts.checkpoints.loader import builtin_reference

    clip, _ = builtin_reference()  # "His sister followed the white horse next to the lake, but nobody noticed."
    args = ["infer", "--model", model_file, "--ref-audio", clip, "--text", "Hi there.", "--steps", "1"]
    args += ["-o", str(tmp_path / "t.wav")]
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # not installed
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--ref-text is required" in err and "flowtts[eval]" in err
    assert not (tmp_path / "t.wav").exists()
    monkeypatch.delitem(sys.modules, "pocketsphinx")
    pytest.importorskip("pocketsphinx")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "reference transcribed" in err and "followed the white horse next to the lake" in err
    assert (tmp_path / "t.wav").exists()


def _config(tmp_path, text):
    return write_file(tmp_path, "infer.toml", text)


def test_a_config_with_voices_joins_each_piece_in_its_voice(model_file, tmp_path):
    config = _config(
        tmp_path,
        f"""
ckpt_file = "{model_file}"
ref_audio = "{ASSET}"
ref_text = "{REF_TEXT}"
gen_text = "Hello there. [town] Good evening to you all."
nfe_step = 4
output_dir = "{tmp_path / "made"}"
output_file = "story.wav"

[voices.town]
ref_audio = "{ASSET}"
ref_text = "{REF_TEXT}"
speed = 0.5
""",
    )
    assert main(["infer", "-c", config, "--seed", "5", "-q"]) == 0
    joined, rate = sf.read(tmp_path / "made" / "story.wav")  # output_dir created, as upstream
    first, second = tmp_path / "1.wav", tmp_path / "2.wav"
    assert _infer(model_file, "--text", "Hello there.", "-o", str(first), "--seed", "5") == 0
    args = ["--text", "Good evening to you all.", "-o", str(second), "--seed", "6", "--speed", "0.5"]
    assert _infer(model_file, *args) == 0
    a, _ = sf.read(first)
    b, _ = sf.read(second)
    assert len(b) / rate > 2 * len("Good evening to you all.") / len("Hello there.") * len(a) / rate * 0.9  # slower
    assert joined.shape == (len(a) + len(b),)
    assert abs(joined - torch.cat([torch.from_numpy(a), torch.from_numpy(b)]).numpy()).max() < 2e-3


def test_options_given_win_over_the_config(model_file, tmp_path, capsys):
    config = _config(
        tmp_path,
        f"""
model = "tiny"
ckpt_file = "{model_file}"
ref_audio = "{ASSET}"
ref_text = "{REF_TEXT}"
gen_text = "Words from the config file."
nfe_step = 2
fix_duration = 4
""",
    )
    out, direct = tmp_path / "c.wav", tmp_path / "d.wav"
    assert main(["infer", "-c", config, "--nfe_step", "3", "--seed", "2", "-o", str(out), "-q"]) == 0
    assert (
        _infer(
            model_file,
            "--text",
            "Words from the config file.",
            "--steps",
            "3",
            "--fix-duration",
            "4",
            "--seed",
            "2",
            "-o",
            str(direct),
        )
        == 0
    )
    a, _ = sf.read(out)
    b, _ = sf.read(direct)
    assert a.shape == b.shape and abs(a - b).max() < 2e-3
    (tmp_path / "story.txt").write_text("Read whole. [main] Even this.", encoding="utf-8")
    story = f'ckpt_file = "{model_file}"\ngen_file = "{tmp_path / "story.txt"}"\nnfe_step = 2\nref_text = "x"\n'
    assert main(["infer", "-c", _config(tmp_path, story), "-o", str(tmp_path / "s.wav"), "-q"]) == 0
    assert "ref_text ignored" in capsys.readouterr().err  # the built-in reference keeps its own transcript
    assert (tmp_path / "s.wav").exists()


@pytest.mark.parametrize(
    "text, extra, message",
    [
        ('model = "F5TTS_v1_Base"\ngen_text = "hi"', [], "flowtts downloads nothing: give ckpt_file"),
        ('model = "F5TTS_Large"\nckpt_file = "x.pt"\ngen_text = "hi"', [], "not an architecture flowtts knows"),
        ('gen_text = "hi [city] there"', [], "names voice [city]"),
        ('gen_text = "[main]"', [], "nothing to say besides its voice tags"),
        ("nfe_step = 2.5\ngen_text = 'hi'", [], "nfe_step must be a whole number"),
        ("nfe_step = 2", [], "give --text or --text-file (or gen_text / gen_file in --config)"),
        ('[voices.town]\nref_audio = "t.wav"', ["--text-file", "list.txt"], "not --text-file"),
    ],
)
def test_config_errors_exit_2_with_a_message(model_file, tmp_path, capsys, text, extra, message):
    config = _config(tmp_path, text)
    assert main(["infer", "-c", config, "-o", str(tmp_path / "x.wav"), "-q", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


def test_upstream_gen_file_and_output_dir_spellings(model_file, tmp_path, capsys):
    (tmp_path / "story.txt").write_text("First line,\nand the same text goes on.\n", encoding="utf-8")
    args = ["--gen_file", str(tmp_path / "story.txt"), "--output_dir", str(tmp_path / "new"), "--seed", "1"]
    assert _infer(model_file, *args, "--output_file", "a.wav") == 0
    assert (
        _infer(
            model_file,
            "--text",
            "First line,\nand the same text goes on.\n",
            "--seed",
            "1",
            "-o",
            str(tmp_path / "b.wav"),
        )
        == 0
    )
    a, _ = sf.read(tmp_path / "new" / "a.wav")
    b, _ = sf.read(tmp_path / "b.wav")
    assert a.shape == b.shape and abs(a - b).max() < 2e-3  # read whole, one text
    assert _infer(model_file, "--gen_file", str(tmp_path / "nope.txt")) == 2
    assert "--gen-file not found" in capsys.readouterr().err
    assert _infer(model_file, "--text", "hi", "-o", str(tmp_path / "c.wav"), "--output_dir", str(tmp_path)) == 2
    assert "not both" in capsys.readouterr().err


def test_output_dash_streams_the_same_audio_as_raw_pcm(model_file, tmp_path, capsysbinary):
    text = "A first sentence. And then a second one."
    assert _infer(model_file, "--text", text, "-o", str(tmp_path / "a.wav"), "--seed", "2") == 0
    capsysbinary.readouterr()
    assert _infer(model_file, "--text", text, "-o", "-", "--seed", "2") == 0
    raw = capsysbinary.readouterr().out
    streamed = np.frombuffer(raw, dtype="<i2")
    written, _ = sf.read(tmp_path / "a.wav", dtype="int16")
    assert streamed.shape == written.shape
    assert np.abs(streamed.astype(int) - written.astype(int)).max() <= 1
    assert os.listdir(tmp_path) == ["a.wav"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text-file", "LINES"], "-o - streams one text"),
        (["--text", "hi", "--remove-silence"], "cannot be combined with --remove-silence"),
    ],
)
def test_output_dash_refuses_what_it_cannot_stream(model_file, tmp_path, capsys, extra, message):
    lines = write_file(tmp_path, "lines.txt", "one\ntwo\n")
    assert _infer(model_file, "-o", "-", *[lines if e == "LINES" else e for e in extra]) == 2
    assert message in capsys.readouterr().err


def test_upstream_short_options_and_architecture_with_ckpt_file(model_file, tmp_path, capsys):
    from safetensors.torch import save_file

    from flowtts.text import save_vocab

    model = flowtts.load(model_file)
    bare = str(tmp_path / "bare.safetensors")  # an official-style file: weights only, no flowtts metadata
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, bare)
    text = "Hello there, in upstream's spelling."
    ours = tmp_path / "ours.wav"
    assert _infer(model_file, "--text", text, "-o", str(ours), "--seed", "3") == 0
    upstream_style = ["infer", "-m", "tiny", "-p", bare, "-r", ASSET, "-s", REF_TEXT, "-t", text]
    upstream_style += ["-o", str(tmp_path / "out"), "-w", "u.wav", "--nfe_step", "4", "--seed", "3", "-q"]
    upstream_style += ["--pipeline", "flowtts"]  # an F5-TTS checkpoint defaults to F5-TTS's pipeline
    if model.vocab_char_map is not None:
        save_vocab(model.vocab_char_map, tmp_path / "vocab.txt")
        upstream_style += ["-v", str(tmp_path / "vocab.txt")]
    assert main(upstream_style) == 0
    a, _ = sf.read(ours)
    b, _ = sf.read(tmp_path / "out" / "u.wav")
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4


def test_e2_tts_checkpoint_in_upstreams_pt_format(tmp_path, capsys, monkeypatch):
    # E2TTS_Base itself is 333M parameters: the same path with a small UNetT preset.
    from flowtts.config import PRESETS, ModelConfig

    e2 = ModelConfig(
        backbone="UNetT", dim=64, depth=4, heads=4, ff_mult=2, text_dim=None, conv_layers=0, pe_attn_head=1
    )
    monkeypatch.setitem(PRESETS, "E2TTS_Tiny", e2)
    model = randomise(build_model(e2), std=0.05)
    flowtts.save(model, tmp_path / "ours.safetensors")
    state = {f"ema_model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {"ema_model_state_dict": {**state, "initted": torch.tensor(True), "step": torch.tensor(5)}}, tmp_path / "e2.pt"
    )
    text = "An E2 model, read by flowtts."
    assert (
        _infer(str(tmp_path / "ours.safetensors"), "--text", text, "-o", str(tmp_path / "ours.wav"), "--seed", "3") == 0
    )
    shared = ["-r", ASSET, "-s", REF_TEXT, "-t", text, "--nfe_step", "4", "--seed", "3"]
    shared += ["--pipeline", "flowtts"]  # an F5-TTS checkpoint defaults to F5-TTS's pipeline
    assert (
        main(["infer", "-m", "E2TTS_Tiny", "-p", str(tmp_path / "e2.pt"), *shared, "-o", str(tmp_path / "a.wav"), "-q"])
        == 0
    )
    assert main(["infer", "--model", str(tmp_path / "e2.pt"), *shared, "-o", str(tmp_path / "b.wav")]) == 0
    assert "using preset E2TTS_Tiny (matched by parameter shapes)" in capsys.readouterr().err
    ours = sf.read(tmp_path / "ours.wav")[0]
    for name in ("a.wav", "b.wav"):
        other = sf.read(tmp_path / name)[0]
        assert other.shape == ours.shape and np.abs(other - ours).max() < 1e-4
    assert np.abs(ours).max() > 0.01


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "F5TTS_v1_Base", "-t", "hi"], "names an architecture without weights; flowtts downloads nothing"),
        (["-m", "F5TTS_Large", "-p", "x.pt", "-t", "hi"], "not an architecture flowtts knows"),
        (["-t", "hi", "--vocoder_name", "bigvgan", "--load_vocoder_from_local"], "BigVGAN vocoders are not supported"),
    ],
)
def test_upstream_model_and_vocoder_options_that_cannot_work_are_explained(tmp_path, capsys, args, message):
    assert main(["infer", *args, "-o", str(tmp_path / "x.wav"), "-q"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_vocoder_name_without_local_weights_says_griffin_lim_is_used(model_file, tmp_path, capsys):
    out = tmp_path / "v.wav"
    assert (
        main(
            ["infer", "--model", model_file, "-t", "Hi there.", "--steps", "2", "-o", str(out)]
            + ["--vocoder_name", "vocos"]
        )
        == 0
    )
    assert "Griffin-Lim vocoder is used" in capsys.readouterr().err and out.exists()
    missing = ["infer", "--model", model_file, "-t", "Hi.", "--load_vocoder_from_local", "-o", str(tmp_path / "w.wav")]
    assert main(missing) == 2
    assert "vocos-mel-24khz" in capsys.readouterr().err
