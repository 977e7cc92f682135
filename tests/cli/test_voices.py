import logging

import pytest

from conftest import write_file
from flowtts.cli.voices import Voice, read_config, split_voices


def test_tags_switch_the_voice_until_the_next_tag():
    text = "Hello there. [town] Good evening. [country]  [main] Bye now. [town]"
    assert split_voices(text, ["town", "country"]) == [
        ("main", "Hello there."),
        ("town", "Good evening."),
        ("main", "Bye now."),
    ]
    assert split_voices("[town]Hi.", ["town"]) == [("town", "Hi.")]
    assert split_voices("No tags at all.", []) == [("main", "No tags at all.")]
    assert split_voices(" [town] ", ["town"]) == []


def test_an_unknown_voice_tag_is_named():
    with pytest.raises(ValueError, match=r"names voice \[city\].*voices: main, town"):
        split_voices("Hi. [city] Hello.", ["town"])


def _write(tmp_path, text):
    return write_file(tmp_path, "c.toml", text)


def test_an_upstream_config_is_read_with_its_voices(tmp_path, caplog):
    path = _write(
        tmp_path,
        """
model = "F5TTS_v1_Base"
ckpt_file = "model.safetensors"
ref_audio = "main.wav"
ref_text = ""
gen_text = "Hi. [town] Hello."
remove_silence = true
nfe_step = 16
cfg_strength = 2
output_dir = "out"
vocoder_name = "vocos"

[voices.town]
ref_audio = "town.wav"
ref_text = "Town text."
speed = 0.8

[voices.country]
ref_audio = "country.wav"
ref_text = ""
""",
    )
    with caplog.at_level(logging.WARNING, logger="flowtts"):
        config = read_config(path)
    assert config["ref_text"] is None  # empty: transcribe, as upstream
    assert config["nfe_step"] == 16 and config["remove_silence"] is True and config["output_dir"] == "out"
    assert config["voices"] == {
        "town": Voice("town.wav", "Town text.", 0.8),
        "country": Voice("country.wav", None, None),
    }
    assert "vocoder_name is an F5-TTS setting flowtts does not use" in caplog.text
    assert "vocoder_name" not in config


@pytest.mark.parametrize(
    "text, message",
    [
        ('ref_audio = "a.wav"\nspeeed = 1', "unknown keys speeed"),
        ('speed = "fast"', "speed must be a number"),
        ("remove_silence = 1", "remove_silence must be a bool"),
        ("gen_text = 3", "gen_text must be a string"),
        ('[voices.town]\nref_text = "x"', r"\[voices.town\]: ref_audio is missing"),
        ('[voices.town]\nref_audio = "t.wav"\npitch = 2', r"\[voices.town\]: unknown keys pitch"),
        ('[voices.town]\nref_audio = "t.wav"\nspeed = 0', "speed must be positive"),
        ('[voices.main]\nref_audio = "t.wav"', "the main voice is the top-level ref_audio"),
        ('[voices."new town"]\nref_audio = "t.wav"', "a voice name is letters, digits and underscores"),
        ("ref_audio = [", "not a TOML file"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_config(_write(tmp_path, text))


def test_a_missing_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_config(str(tmp_path / "nope.toml"))
