"""The note a user gets when a model will not take the voice of their clip (one-voice or unprompted models)."""

import os
import warnings

import pytest

import flowtts
from conftest import randomise
from flowtts.cli import main
from flowtts.model.build import build_model
from flowtts.synthesis.clip_note import CLONE_HINT, ClipNotCloned, clip_note

ASSET = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "birch_canoe_espeak_22k.wav")
REF_TEXT = "The birch canoe slid on the smooth planks."


class _Model:
    def __init__(self, **metadata):
        self.metadata = metadata


def test_a_one_voice_model_with_a_clip_gets_the_note_naming_the_model():
    note = clip_note(_Model(voices="1"), "builtin:student", has_clip=True)
    assert note.startswith("builtin:student speaks in its one built-in voice")
    assert "speaking rate and loudness" in note and CLONE_HINT in note
    assert clip_note(_Model(voices="1"), "builtin:student", has_clip=True, continue_reference=True) == note


def test_an_unprompted_model_is_explained_unless_the_user_continues_the_clip():
    model = _Model(continue_reference="false")
    assert "continue_reference: false" in clip_note(model, "m.safetensors", has_clip=True)
    assert clip_note(model, "m.safetensors", has_clip=True, continue_reference=True) is None


@pytest.mark.parametrize("metadata", [{}, {"voices": "3"}, {"continue_reference": "true"}])
def test_no_note_without_those_facts_or_without_a_clip(metadata):
    assert clip_note(_Model(**metadata), "m", has_clip=True) is None
    assert clip_note(_Model(voices="1", continue_reference="false"), "m", has_clip=False) is None


def test_editing_names_the_new_words_and_ignores_continue_reference():
    assert "new words will be in that voice" in clip_note(_Model(voices="1"), "b", has_clip=True, editing=True)
    assert clip_note(_Model(continue_reference="false"), "b", has_clip=True, editing=True) is None


@pytest.mark.parametrize("raw", ["0", "two", "-1", "1.5"])
def test_a_bad_recorded_voice_count_names_the_key(raw):
    with pytest.raises(ValueError, match="'voices' metadata must be an integer >= 1"):
        clip_note(_Model(voices=raw), "m", has_clip=True)


@pytest.mark.parametrize("name", ["builtin", "builtin:student"])
def test_the_built_in_files_record_one_voice_and_unprompted_speech(name):
    model = flowtts.load(name)
    assert model.metadata["voices"] == "1" and model.metadata["continue_reference"] == "false"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model = randomise(build_model("tiny"), std=0.02)
    one, plain = folder / "one_voice.safetensors", folder / "plain.safetensors"
    flowtts.save(model, one, extra={"voices": "1"})
    flowtts.save(model, plain)
    return str(one), str(plain)


def _notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]


def test_infer_says_it_once_before_synthesis_and_only_with_a_clip(files, tmp_path, capsys):
    one, plain = files
    common = ["--text", "A short test.", "--steps", "2", "--seed", "1", "-o", str(tmp_path / "o.wav")]
    clip = ["--ref-audio", ASSET, "--ref-text", REF_TEXT]
    assert main(["infer", "--model", one, *clip, *common]) == 0
    notes = _notes(capsys)
    assert notes == [f"note: {clip_note(flowtts.load(one), one, has_clip=True)}"]
    assert main(["infer", "--model", one, *common]) == 0  # the model's own clip
    assert _notes(capsys) == []
    assert main(["infer", "--model", plain, *clip, *common]) == 0  # a file that records nothing
    assert _notes(capsys) == []


def test_edit_says_the_new_words_are_in_the_model_voice(files, tmp_path, capsys):
    one, plain = files
    args = ["--audio", ASSET, "--text", REF_TEXT, "--parts", "0.5-0.9", "--steps", "2", "-o", str(tmp_path / "e.wav")]
    assert main(["edit", "--model", one, *args]) == 0
    (note,) = _notes(capsys)
    assert "new words will be in that voice" in note
    assert main(["edit", "--model", plain, *args]) == 0
    assert _notes(capsys) == []


def test_info_shows_the_voice_count_and_whether_the_clip_is_continued(files, capsys):
    one, plain = files
    assert main(["info", one]) == 0
    out = capsys.readouterr().out
    assert "voices        1 (a clip sets the speaking rate and loudness, not the voice)" in out
    assert "reference     continued, as F5-TTS does" in out
    assert main(["info", "builtin"]) == 0
    out = capsys.readouterr().out
    assert "reference     not continued: the text is spoken unprompted" in out
    assert main(["info", plain]) == 0
    assert "voices        not recorded" in capsys.readouterr().out


def test_the_api_warns_once_per_call_with_a_clip(files, tmp_path):
    from flowtts.api import F5TTS

    one, plain = files
    tts = F5TTS(model=one)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tts.infer(ASSET, REF_TEXT, "A short test.", nfe_step=2, seed=1, progress=False, show_info=lambda _: None)
        tts.infer(None, "", "A short test.", nfe_step=2, seed=1, progress=False, show_info=lambda _: None)
    notes = [w for w in caught if issubclass(w.category, ClipNotCloned)]
    assert len(notes) == 1 and str(notes[0].message).startswith(f"{one} speaks in its one built-in voice")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F5TTS(model=plain).infer(ASSET, REF_TEXT, "A short test.", nfe_step=2, seed=1, progress=False)
    assert not [w for w in caught if issubclass(w.category, ClipNotCloned)]
