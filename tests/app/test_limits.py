"""Bounded work in the web app, as plain Python (issue #31, 6-11 and the lesser items; issue #36's note)."""

import os
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import make_tiny, tiny_text
from flowtts.app import engine
from flowtts.app.access import check_exposure, is_loopback, read_credentials
from flowtts.app.limits import Job, JobBoard, Limits, Watched, WorkStopped
from flowtts.synthesis.edit import MAX_EDIT_SECONDS, edit_speech


@pytest.fixture(scope="module")
def student():
    return engine.ModelStore().get("builtin:student")


def _wav(path, seconds: float, rate: int = 8000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return str(path)


class Clock:
    """A clock that moves only when told."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_solver_calls_on_step_before_each_step_and_stops_when_it_raises():
    model = make_tiny()
    cond, text = torch.zeros(1, 4, 12), tiny_text()
    seen = []
    out, _ = model.sample(cond, text, 12, steps=5, seed=1, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(5)]
    assert torch.equal(out, model.sample(cond, text, 12, steps=5, seed=1)[0])  # the hook changes nothing

    def stop(i, n):
        if i == 2:
            raise WorkStopped("stop at 2")

    with pytest.raises(WorkStopped, match="stop at 2"):
        model.sample(cond, text, 12, steps=5, seed=1, on_step=stop)


def test_a_job_stops_when_its_time_is_up_or_its_client_has_gone_and_the_board_counts_it():
    clock = Clock()
    job = Job("speak", 3, clock=clock)
    job.check(0, 10)
    clock.now = 3.5
    with pytest.raises(WorkStopped, match=r"speak stopped after 3 s, the app's limit per request \(--max-seconds\)"):
        job.check(1, 10)
    waiting = [True]
    gone = Job("speak", 100, waiting=lambda: waiting[0])
    gone.check()
    waiting[0] = False
    with pytest.raises(WorkStopped, match="the client has gone"):
        gone.check()
    board = JobBoard(Limits(max_seconds=5))
    one = board.start("edit")
    assert board.active() == 1 and one.max_seconds == 5
    board.cancel_all()
    with pytest.raises(WorkStopped, match="the client has gone"):
        one.check()
    board.end(one, "stopped")
    assert board.active() == 0 and board.ended()[-1][:2] == ("edit", "stopped")
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        Limits(max_seconds=0)
    with pytest.raises(ValueError, match="max_runs must be an integer >= 1"):
        Limits(max_runs=0)


def test_a_watched_model_checks_its_job_between_steps_and_is_the_model_otherwise():
    model = make_tiny()
    calls = []
    job = Job("speak", 100, waiting=lambda: calls.append(1) or len(calls) < 4)
    watched = Watched(model, job)
    assert watched.mel_spec is model.mel_spec and watched.device == model.device
    with pytest.raises(WorkStopped, match="client has gone"):
        watched.sample(torch.zeros(1, 4, 12), tiny_text(), 12, steps=8, seed=1)
    assert len(calls) == 4  # before the call, then before steps 0, 1 and 2


def test_steps_texts_and_recordings_over_the_caps_are_refused_before_any_work(student, tmp_path):
    limits = Limits(max_text=300)
    out = str(tmp_path)
    cases = [  # (keyword arguments of speak, message)
        (dict(text="The red bird.", steps=100000), r"steps must be 1\.\.64 \(leave it empty for the model's own\)"),
        (dict(text="The red bird.", steps=0), r"steps must be 1\.\.64"),  # lesser: 0 meant "the model's"
        (dict(text="The red bird.", steps=2.5), "steps must be a whole number"),
        (dict(text="The red bird.", steps=float("nan")), "steps must be a whole number"),
        (dict(text="The red bird.", steps=float("inf")), "steps must be a whole number"),
        (dict(text="a" * 20000), r"the text to say has 20000 characters; the app takes at most 300 .*--max-text"),
        (dict(text="Hi.", ref_text="b" * 301), "the reference text has 301 characters"),
        (dict(text="Hi.", ref_audio=_wav(tmp_path / "long.wav", 600)), r"600\.0 s long; .* at most 60 s"),
    ]
    for kwargs, message in cases:
        start = time.perf_counter()
        text = kwargs.pop("text")
        with pytest.raises(ValueError, match=message):
            engine.speak(student, kwargs.pop("ref_audio", None), kwargs.pop("ref_text", None), text, out_dir=out,
                         limits=limits, **kwargs)  # fmt: skip
        assert time.perf_counter() - start < 2
    (tmp_path / "long.txt").write_text("c" * 400)
    with pytest.raises(ValueError, match="long.txt has 400 characters; the app takes at most 300"):
        engine.read_text_file(str(tmp_path / "long.txt"), limits)
    assert engine.read_text_file(str(tmp_path / "long.txt")) == "c" * 400
    (tmp_path / "huge.txt").write_text("d" * 1500)
    with pytest.raises(ValueError, match="huge.txt is 1500 bytes, more than the 300 characters"):
        engine.read_text_file(str(tmp_path / "huge.txt"), limits)


def test_speak_stops_at_the_time_limit_and_when_its_client_has_gone(student, tmp_path):
    clock = Clock()
    ticks = []

    def waiting():  # each check moves the clock on by 1 s
        ticks.append(1)
        clock.now += 1
        return True

    job = Job("speak", 3, waiting=waiting, clock=clock)
    with pytest.raises(WorkStopped, match="stopped after 3 s"):
        engine.speak(student, None, None, "The red bird sang.", out_dir=str(tmp_path), steps=64, job=job)
    assert len(ticks) == 4  # checked before the call and before each step: stopped after one of the 64
    gone = Job("speak", 100, waiting=lambda: False)
    with pytest.raises(WorkStopped, match="the client has gone"):
        engine.speak(student, None, None, "The red bird sang.", out_dir=str(tmp_path), job=gone)
    assert not os.listdir(tmp_path)


def test_edit_refuses_a_ten_minute_recording_in_the_app_and_in_flowtts_edit(student, tmp_path, capsys):
    from flowtts.cli import main

    long = _wav(tmp_path / "ten_minutes.wav", 600)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"edit is 600\.0 s long; the app takes recordings of at most 60 s"):
        engine.edit(student, long, "The red bird sang.", "1-2", out_dir=str(tmp_path))
    assert time.perf_counter() - start < 2
    with pytest.raises(ValueError, match=r"61\.0 s long; an edit takes at most 60 s \(MAX_EDIT_SECONDS"):
        edit_speech(student, torch.full((61 * 24000,), 0.1), "Hi.", [(1, 2)], vocoder=lambda m: m)
    assert MAX_EDIT_SECONDS == Limits().max_recording_seconds == 60
    args = ["edit", "--model", "builtin:student", "--audio", _wav(tmp_path / "long.wav", 61, 24000)]
    assert main([*args, "--text", "The red bird.", "--parts", "1-2", "-o", str(tmp_path / "o.wav"), "-q"]) == 2
    assert "an edit takes at most 60 s (MAX_EDIT_SECONDS" in capsys.readouterr().err


def test_multi_voice_text_of_tags_only_is_refused_with_a_message(student, tmp_path):
    voices = [engine.VoiceSlot("main"), engine.VoiceSlot("other")]
    with pytest.raises(ValueError, match=r"voice tags but nothing to say: .* \[main\] Hello there"):
        engine.speak_voices(student, voices, "[main][other]", out_dir=str(tmp_path))  # 11: IndexError before


def test_the_model_store_keeps_at_most_max_models_dropping_the_least_recently_used(tmp_path):
    from flowtts.checkpoints.loader import save
    from train.helpers import tiny_model

    files = []
    for k in range(3):
        files.append(str(tmp_path / f"m{k}.safetensors"))
        save(tiny_model({" ": 0, "a": 1}, seed=k), files[-1])
    store = engine.ModelStore(max_models=2)
    a, b = (store.get(engine.CHECKPOINT_CHOICE, f) for f in files[:2])
    assert store.get(engine.CHECKPOINT_CHOICE, files[0]) is a  # a is now the most recently used
    store.get(engine.CHECKPOINT_CHOICE, files[2])  # 9: every upload stayed loaded
    assert len(store) == 2 and store.get(engine.CHECKPOINT_CHOICE, files[0]) is a
    assert store.get(engine.CHECKPOINT_CHOICE, files[1]) is not b  # b was dropped, and is loaded again
    with pytest.raises(ValueError, match="model must be one of"):
        store.get(files[0])  # a path is not a choice (only the app's own --model is)
    with pytest.raises(ValueError, match="max_models must be an integer >= 1"):
        engine.ModelStore(max_models=0)


def test_a_non_loopback_host_needs_a_login(tmp_path, capsys):
    from flowtts.cli import main

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", [("u", "p")])
    with pytest.raises(ValueError, match="--host 0.0.0.0 serves the page to your network.*--auth USER:PASSWORD"):
        check_exposure("0.0.0.0", None)
    assert main(["app", "--host", "0.0.0.0"]) == 2  # 6: served to the network, no login, no warning
    assert "give a login with --auth USER:PASSWORD or --auth-file FILE" in capsys.readouterr().err
    logins = tmp_path / "logins"
    logins.write_text("# page users\nann:s3cret:with:colons\n\nbob:pw\n")
    assert read_credentials("me:pw", str(logins)) == [("me", "pw"), ("ann", "s3cret:with:colons"), ("bob", "pw")]
    assert read_credentials() is None
    for bad in ("nopassword", ":pw", "user:"):
        with pytest.raises(ValueError, match="--auth must be USER:PASSWORD"):
            read_credentials(bad)
    assert main(["app", "--max-runs", "0"]) == 2
    assert "max_runs must be an integer >= 1" in capsys.readouterr().err


def test_the_clip_note_is_said_once_for_a_single_voice_model_with_a_users_clip(student, tmp_path, monkeypatch):
    import copy

    from flowtts.checkpoints.loader import builtin_reference

    model = copy.copy(student)  # the single-voice fact, whatever the built-in file records today
    model.metadata = {**student.metadata, "voices": "1"}
    speech = engine.speak(
        model, builtin_reference()[0], builtin_reference()[1], "The red bird sang.", out_dir=str(tmp_path),
        model_name="builtin:student", seed=1,
    )  # fmt: skip
    assert speech.summary().count("note: builtin:student speaks in its one built-in voice") == 1
    assert engine.clip_notes(model, "builtin:student", has_clip=False) == ()
    plain = copy.copy(student)
    plain.metadata = {}  # an F5-TTS checkpoint records neither fact: it clones the clip
    assert engine.clip_notes(plain, "model.pt", has_clip=True) == ()

    def fake_speak(model, ref_audio, ref_text, text, **kw):  # the pieces' own speech, without the work
        notes = engine.clip_notes(model, kw.get("model_name"), has_clip=bool(ref_audio))
        return engine.Speech("", "", 0, "", 0.1, 0.1, 4, torch.zeros(2400), notes)

    monkeypatch.setattr(engine, "speak", fake_speak)
    clip = builtin_reference()[0]
    voices = [engine.VoiceSlot("main", clip, "x"), engine.VoiceSlot("other", clip, "x")]
    speech = engine.speak_voices(model, voices, "[main] One. [other] Two.", out_dir=str(tmp_path), model_name="b")
    assert speech.summary().count("speaks in its one built-in voice") == 1
    store = engine.ModelStore()
    monkeypatch.setattr(store, "get", lambda choice, *a: model)
    results = engine.compare(store, "One.", out_dir=str(tmp_path), ref_audio=clip, ref_text="x")
    assert [r.summary().count("speaks in its one built-in voice") for _, r in results] == [1, 0, 0]
    assert "note:" not in engine.compare(store, "One.", out_dir=str(tmp_path))[0][1].summary()  # no clip


def test_characters_outside_the_vocabulary_are_named(student):
    note = engine.vocabulary_note(student, ["The red bird.", "Zoë sang 3!"])
    assert note.startswith("characters not in the model's vocabulary, read as id 0 (' '):")
    assert all(repr(c) in note for c in "Zë3!") and "'a'" not in note
    assert engine.vocabulary_note(student, ["The red bird."]) is None


def test_a_page_error_keeps_its_quotes():
    from flowtts.app.tabs.common import message

    assert message(ValueError("a run is already going in 'run0'")) == "a run is already going in 'run0'"
    assert message(KeyError("no voice 'x'")) == "no voice 'x'"


def test_result_folders_are_bounded_and_removed_with_the_app(tmp_path):
    outputs = engine.OutputFolders(keep=3, root=str(tmp_path))
    made = []
    for _ in range(5):
        made.append(outputs.new())
        with open(os.path.join(made[-1], "x.wav"), "wb") as f:
            f.write(b"0")
    assert [os.path.isdir(folder) for folder in made] == [False, False, True, True, True]
    assert sorted(os.listdir(outputs.root)) == sorted(os.path.basename(f) for f in made[2:])
    outputs.close()
    assert not os.path.exists(outputs.root) and os.listdir(tmp_path) == []


def test_uploads_are_capped_by_gradio_at_the_limit(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from flowtts.app.ui import build_app, launch

    app = build_app("builtin:student", workspace=str(tmp_path / "ws"), limits=Limits(max_upload_mb=3))
    seen = {}
    monkeypatch.setattr(type(app), "launch", lambda self, **kw: seen.update(kw))
    launch(app, "127.0.0.1", 7860)
    assert seen["max_file_size"] == 3 * 1024 * 1024
    assert app.delete_cache == (600, Limits().keep_seconds)  # Gradio's copies of uploads and results
    with pytest.raises(ValueError, match="max_upload_mb"):
        Limits(max_upload_mb=0)
