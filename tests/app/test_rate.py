"""The Rate tab at the engine level: the pair is two seeds of the model, under the app's limits; each answer is
one record in the workspace's preferences file, capped, confined, and given once."""

import os

import pytest
import soundfile as sf
import torch

from flowtts.app import engine
from flowtts.app.limits import Job, Limits, WorkStopped
from flowtts.app.workspace import MARKER, Workspace
from flowtts.prefs.store import read_pairs

TEXT = "The birch canoe slid on the smooth planks."


@pytest.fixture(scope="module")
def store():
    return engine.ModelStore("builtin:student")


@pytest.fixture(scope="module")
def pair(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("rate")
    return engine.rate_pair(store.get("builtin:student"), TEXT, out_dir=str(out), seed=11, model_name="builtin:student")


def test_the_pair_is_the_model_with_two_seeds_as_prefs_make_samples_it(store, pair):
    from flowtts.prefs.pairs import make_sampler, sample_text

    sampler = make_sampler(store.get("builtin:student"), "builtin:student")
    for sample, seed, wav in ((pair.a, 11, pair.wav_a), (pair.b, 12, pair.wav_b)):
        alone = sample_text(sampler, TEXT, seed)
        assert torch.equal(sample.mel, alone.mel) and sample.settings["seed"] == seed
        wave, rate = sf.read(wav)
        assert rate == 24_000 and len(wave) == alone.wave.numel()


def test_the_limits_of_the_speak_tab_hold(store, tmp_path):
    model = store.get("builtin:student")
    small = Limits(max_text=20, max_steps=8)
    with pytest.raises(ValueError, match="at most 20"):
        engine.rate_pair(model, TEXT, out_dir=str(tmp_path), limits=small)
    with pytest.raises(ValueError, match="steps must be 1..8"):
        engine.rate_pair(model, "Hello there.", out_dir=str(tmp_path), steps=9, limits=small)
    with pytest.raises(ValueError, match="empty"):
        engine.rate_pair(model, " ", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="over the 60 s .*at the model's own speed: give a shorter text"):
        engine.rate_pair(model, "x" * 1500, out_dir=str(tmp_path), steps=2)  # one chunk, over 60 s
    ticks = iter([0.0, 0.0] + [100.0] * 100)
    late = Job("rate", 1.0, clock=lambda: next(ticks))
    with pytest.raises(WorkStopped, match="rate stopped after 1 s"):
        engine.rate_pair(model, "Hello there.", out_dir=str(tmp_path), job=late)
    assert not os.listdir(tmp_path)


def test_an_answer_is_one_record_in_the_workspace_and_a_pair_takes_one_answer(pair, tmp_path):
    space = Workspace(tmp_path / "ws")
    assert engine.count_preferences(space) == 0
    with pytest.raises(ValueError, match="no answers"):
        engine.export_preferences(space, str(tmp_path))
    assert engine.record_preference(space, pair, "b") == 1
    path = os.path.join(space.root, engine.PREFERENCES_FOLDER, engine.PREFERENCES_FILE)
    (answer,) = read_pairs(path)
    assert answer.choice == "b" and answer.human and answer.judge == "listener" and answer.text == TEXT
    assert torch.equal(answer.mel_a, pair.a.mel.half().float()) and answer.settings_b["seed"] == 12
    assert os.path.isfile(os.path.join(space.root, engine.PREFERENCES_FOLDER, MARKER))
    with pytest.raises(ValueError, match="generate two samples first"):
        engine.record_preference(space, pair, "a")  # the same pair again (another button, a replay)
    with pytest.raises(ValueError, match="generate two samples first"):
        engine.record_preference(space, None, "a")
    assert len(read_pairs(path)) == 1
    exported = engine.export_preferences(space, str(tmp_path))
    assert open(exported, "rb").read() == open(path, "rb").read()


def test_bad_choices_and_caps_are_refused_and_nothing_is_written(pair, tmp_path):
    fresh = engine.RatePair(text=pair.text, a=pair.a, b=pair.b)
    space = Workspace(tmp_path / "ws")
    with pytest.raises(ValueError, match="choice"):
        engine.record_preference(space, fresh, "A")
    with pytest.raises(ValueError, match="cap per session"):
        engine.record_preference(space, fresh, "a", answers=5, max_answers=5)
    with pytest.raises(ValueError, match="cap of 1000 bytes"):
        engine.record_preference(space, fresh, "a", max_bytes=1000)
    assert engine.count_preferences(space) == 0 and not fresh.answered  # not stored: may still be answered
    assert engine.record_preference(space, fresh, "same") == 1


def test_the_preferences_file_stays_in_the_workspace(pair, tmp_path):
    foreign = Workspace(tmp_path / "foreign")
    os.makedirs(os.path.join(foreign.root, engine.PREFERENCES_FOLDER))  # not made by the app
    with pytest.raises(ValueError, match="not made by the app"):
        engine.record_preference(foreign, engine.RatePair(text=TEXT, a=pair.a, b=pair.b), "a")
    linked = Workspace(tmp_path / "linked")
    folder = os.path.join(linked.root, engine.PREFERENCES_FOLDER)
    linked.make_folder(folder)
    outside = tmp_path / "outside.jsonl"
    os.symlink(outside, os.path.join(folder, engine.PREFERENCES_FILE))
    with pytest.raises(ValueError, match="outside the workspace"):
        engine.record_preference(linked, engine.RatePair(text=TEXT, a=pair.a, b=pair.b), "a")
    assert not outside.exists()


def test_two_answers_to_one_pair_at_once_store_one(pair, tmp_path, monkeypatch):
    """Two buttons clicked together run at once (the queue's concurrency): one answer is kept, the other refused."""
    import copy
    import threading

    space = Workspace(tmp_path / "ws")
    fresh = engine.RatePair(text=pair.text, a=pair.a, b=pair.b)
    slow_file = engine.preferences_file
    both_inside = threading.Barrier(2, timeout=2)

    def preferences_file(workspace):  # where both would stand together before the fix
        try:
            both_inside.wait()
        except threading.BrokenBarrierError:
            pass
        return slow_file(workspace)

    monkeypatch.setattr(engine, "preferences_file", preferences_file)
    outcomes = []

    def answer(choice):
        try:
            outcomes.append(engine.record_preference(space, fresh, choice))
        except ValueError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=answer, args=(c,)) for c in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcomes)) == ["1", "generate two samples first (each pair takes one answer)"]
    assert engine.count_preferences(space) == 1 and fresh.answered
    assert copy.deepcopy(fresh).answered  # the page's state stays copyable
