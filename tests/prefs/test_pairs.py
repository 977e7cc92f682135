"""Pairs to rate: each side is what synthesis gives for its seed, with the mel sample() returned for it."""

import json
import os

import pytest
import soundfile as sf
import torch

from flowtts.prefs.pairs import (
    answered_pairs,
    list_pairs,
    make_pair,
    make_pairs,
    make_sampler,
    pair_seeds,
    sample_text,
)
from flowtts.prefs.store import append_pair, pair_ids, read_pairs

TEXT = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def student():
    import flowtts

    return flowtts.load("builtin:student")


@pytest.fixture(scope="module")
def sampler(student):
    return make_sampler(student, "builtin:student")


def test_a_side_is_the_speech_synthesis_gives_for_its_seed_and_the_whole_mel_sample_returned(student, sampler):
    from flowtts.synthesis import synthesize

    sample = sample_text(sampler, TEXT, 7)
    (alone,) = synthesize(
        student, sampler.reference, [TEXT], vocoder=sampler.vocoder, options=sampler.options, seeds=[7], progress=False
    )
    # unprompted (the built-in models): one frame of no audio, then the generated frames
    assert sample.prompt_frames == 1 and sample.prompt_text == ""
    assert torch.equal(sample.mel[0], torch.zeros(sample.mel.shape[1]))
    assert torch.equal(sample.mel[1:], alone.mel.t())
    assert torch.equal(sample.wave, alone.wave)
    assert sample.settings["seed"] == 7 and sample.settings["model"] == "builtin:student"
    json.dumps(sample.settings)  # JSON values only


def test_a_model_continuing_the_clip_keeps_the_clip_as_the_prompt(student):
    from flowtts.synthesis import recommended_options

    sampler = make_sampler(student, "builtin:student", options=recommended_options(student, continue_reference=True))
    sample = sample_text(sampler, TEXT, 3)
    cut = sampler.reference.cut
    assert sample.prompt_frames == cut and sample.prompt_text == sampler.reference.text
    assert torch.equal(sample.mel[:cut], sampler.reference.mel[0, :cut].float())
    assert sample.mel.shape[0] > cut


def test_a_pair_of_one_sampler_differs_by_seed_and_of_two_samplers_shares_the_seed(student, sampler):
    from flowtts.synthesis import recommended_options

    a, b = make_pair(sampler, None, TEXT, seed=10, index=2)
    assert (a.settings["seed"], b.settings["seed"]) == pair_seeds(10, 2, True) == (14, 15)
    assert not torch.equal(a.mel, b.mel)
    other = make_sampler(student, "student@2", options=recommended_options(student, steps=2))
    a, b = make_pair(sampler, other, TEXT, seed=10, index=2)
    assert a.settings["seed"] == b.settings["seed"] == 12
    assert (a.settings["steps"], b.settings["steps"]) == (4, 2) and b.settings["model"] == "student@2"
    continuing = make_sampler(student, "c", options=recommended_options(student, continue_reference=True))
    with pytest.raises(ValueError, match="prompt"):
        make_pair(sampler, continuing, TEXT, seed=0)


def test_a_text_of_several_chunks_or_none_is_refused(sampler):
    with pytest.raises(ValueError, match="chunks"):
        sample_text(sampler, " ".join([TEXT] * 12), 0)
    with pytest.raises(ValueError, match="text"):
        sample_text(sampler, "  ", 0)


def test_no_pair_made_leaves_no_folder_behind(tmp_path, sampler):
    long = " ".join([TEXT] * 12)  # several chunks: no pair
    skipped = []
    out = tmp_path / "new"
    assert make_pairs(str(out), [long], sampler, on_skip=lambda *skip: skipped.append(skip)) == []
    assert len(skipped) == 1 and not out.exists()
    with pytest.raises(ValueError, match="chunks"):
        make_pairs(str(out), [long], sampler)  # no on_skip: it raises
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()  # the user's own empty folder stays
    assert make_pairs(str(mine), [long], sampler, on_skip=lambda *skip: None) == [] and mine.is_dir()


def test_a_pairs_folder_holds_each_pair_whole_and_its_answers_read_back(tmp_path, sampler):
    out = tmp_path / "pairs"
    skipped = []
    folders = make_pairs(
        str(out), [TEXT, " ".join([TEXT] * 12), "A bird sang."], sampler, seed=4,
        on_skip=lambda i, text, reason: skipped.append(i),
    )  # fmt: skip
    assert skipped == [1] and [os.path.basename(f) for f in folders] == ["0000", "0001"]
    os.makedirs(out / "0002.partial")  # what a kill while writing leaves: not a pair
    pairs = list_pairs(str(out))
    assert [p.text for p in pairs] == [TEXT, "A bird sang."]
    first = pairs[0]
    wave, rate = sf.read(first.wav("a"))
    assert rate == 24_000 and len(wave) > 0
    again = sample_text(sampler, TEXT, first.settings_b["seed"])
    assert torch.equal(first.mel("b"), again.mel) and first.prompt_frames == again.prompt_frames
    prefs = tmp_path / "p.jsonl"
    append_pair(prefs, first.answer("b"))
    (record,) = read_pairs(prefs)
    assert record.choice == "b" and record.human and record.judge == "listener"
    assert torch.equal(record.mel_b, again.mel.half().float())
    assert answered_pairs(pair_ids(prefs)) == {first.id}
    with pytest.raises(ValueError, match="not an empty folder"):
        make_pairs(str(out), [TEXT], sampler)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no pairs"):
        list_pairs(str(empty))


def test_a_pair_file_of_another_kind_is_refused(tmp_path, sampler):
    out = tmp_path / "pairs"
    make_pairs(str(out), [TEXT], sampler)
    path = out / "0000" / "pair.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps(dict(info, format="other")))
    with pytest.raises(ValueError, match="not a pair file"):
        list_pairs(str(out))
    path.write_text(json.dumps(info))
    os.remove(out / "0000" / "b.npy")
    with pytest.raises(FileNotFoundError, match="b.npy"):
        list_pairs(str(out))
