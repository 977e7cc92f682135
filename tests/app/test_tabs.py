"""The app's Multi-voice, Edit and Compare tabs at the engine level, each against an independent way of getting
the same result (the command line, the library, F5-TTS's join restated), and the request queue's limits."""

import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from flowtts.app import engine
from flowtts.cli import main

QUANTUM = 2 / 2**15  # two steps of a 16-bit wav file


@pytest.fixture(scope="module")
def store():
    return engine.ModelStore()


def _read(path):
    wave, rate = sf.read(path)
    assert rate == 24_000, path
    return wave


def _cli_infer(tmp_path, name, *args):
    out = tmp_path / f"{name}.wav"
    assert main(["infer", "--model", "builtin:student", "-o", str(out), "-q", *args]) == 0
    return _read(out)


# ----------------------------------------------------------------- Multi-voice


def test_multi_voice_says_each_piece_in_order_at_its_voices_speed_and_seed_and_joins_them(store, tmp_path):
    from flowtts.synthesis import load_reference, recommended_options

    model = store.get("builtin:student")
    voices = [engine.VoiceSlot("main"), engine.VoiceSlot("other", speed=1.2, seed=4)]
    text = "The red bird sang. [other] The blue sky was clear."  # before the first tag: the first voice
    out = tmp_path / "voices"
    out.mkdir()
    speech = engine.speak_voices(model, voices, text, out_dir=str(out))
    base = speech.seed  # the run's seed; piece k of a voice without a seed of its own uses base + k
    joined = _read(speech.wav)

    # Each piece is that text said alone in its voice: the first at the run's seed and the model's speed, the
    # other at its own seed and speed.
    alone = tmp_path / "alone"
    alone.mkdir()
    expected = [
        engine.speak(model, None, None, "The red bird sang.", out_dir=str(alone), seed=base, name="a"),
        engine.speak(model, None, None, "The blue sky was clear.", out_dir=str(alone), seed=4, speed=1.2, name="b"),
    ]
    singles = [_read(single.wav) for single in expected]
    # The pieces' waves end to end, as upstream's infer_cli (np.concatenate) and `flowtts infer -c` join them.
    assert joined.shape == (sum(map(len, singles)),)
    pieces = [joined[: len(singles[0])], joined[len(singles[0]) :]]
    for k, (piece, wave) in enumerate(zip(pieces, singles)):
        assert piece.shape == wave.shape and np.abs(piece - wave).max() <= QUANTUM, k
    # ...and its length is the duration rule's at speed 1.2 (times the rate factor the model file records).
    options = recommended_options(model, speed=1.2)
    reference = load_reference(model, None, None, options)
    said = "The blue sky was clear."
    ref_bytes = len(reference.text.encode("utf-8"))
    frames = int(reference.mel.shape[1] / ref_bytes * len(said.encode("utf-8")) / options.speed)
    assert options.speed == pytest.approx(1.2 * recommended_options(model).speed)
    assert len(pieces[1]) == (frames - 1) * 256  # Griffin-Lim: a hop per frame after the first
    assert speech.audio_seconds == pytest.approx(len(joined) / 24_000, abs=1e-4)


# ----------------------------------------------------------------- Edit


def test_edit_regenerates_the_marked_part_keeps_the_rest_and_equals_flowtts_edit(store, tmp_path):
    from flowtts.checkpoints.loader import builtin_reference

    model = store.get("builtin:student")
    clip, clip_text = builtin_reference()
    text = clip_text.replace("white", "black")
    assert text != clip_text
    results = []
    for seed in (5, 6):
        out = tmp_path / f"edit{seed}"
        out.mkdir()
        speech = engine.edit(model, clip, text, "1.5-1.9", out_dir=str(out), seed=seed)
        assert speech.seed == seed and speech.network_calls == 4  # the student's own 4 unguided steps
        results.append(_read(speech.wav))
    a, b = results
    recording = sf.info(clip)
    frames = round(recording.duration * 24_000) // 256 + 1  # at its own length: the part keeps its 0.4 s
    assert len(a) == len(b) == (frames - 1) * 256  # Griffin-Lim: a hop per frame after the first

    # Another seed changes the marked part and leaves the rest of the recording as it was (Griffin-Lim's phase
    # estimate spreads a change over about 0.2 s: the comparison stays 0.4 s away).
    inside = slice(round(1.5 * 24_000), round(1.9 * 24_000))
    outside = np.ones(len(a), dtype=bool)
    outside[round(1.1 * 24_000) : round(2.3 * 24_000)] = False
    assert np.abs(a - b)[inside].mean() > 0.005  # measured 0.03
    assert np.abs(a - b)[outside].max() <= 4 * QUANTUM  # measured 1

    # The tab is `flowtts edit` with the same model, text, part and seed (both raise a quiet recording to the
    # model file's target RMS, 0.05 for the built-in models).
    cli = tmp_path / "cli_edit.wav"
    args = ["edit", "--model", "builtin:student", "--audio", clip, "--text", text, "--parts", "1.5-1.9"]
    assert main([*args, "--seed", "5", "-o", str(cli), "-q"]) == 0
    cli_wave = _read(cli)
    assert cli_wave.shape == a.shape and np.abs(cli_wave - a).max() <= QUANTUM


def test_edit_refuses_what_it_cannot_do_with_a_message(store, tmp_path):
    from flowtts.checkpoints.loader import builtin_reference

    model = store.get("builtin:student")
    clip, clip_text = builtin_reference()
    for audio, text, parts, message in [
        (None, clip_text, "1-2", "load the recording to edit"),
        (clip, "  ", "1-2", "transcript of the whole recording"),
        (clip, clip_text, "1 to 2", "start-end seconds"),
        (clip, clip_text, "1-60", "after the recording"),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.edit(model, audio, text, parts, out_dir=str(tmp_path), seed=1)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".wav")]


# ----------------------------------------------------------------- Compare


def test_compare_says_one_text_with_one_seed_through_each_sampler_at_its_settings(store, tmp_path):
    text = "The red bird sang."
    results = engine.compare(store, text, out_dir=str(tmp_path), seed=3)
    assert [label for label, _ in results] == [label for label, _, _ in engine.COMPARE_SAMPLERS]
    assert [s.seed for _, s in results] == [3, 3, 3]
    # network calls: 32 and 7 steps with guidance (two calls a step), the student's 4 without
    assert [s.network_calls for _, s in results] == [64, 14, 4]
    waves = [_read(s.wav) for _, s in results]
    assert len({os.path.basename(s.wav) for _, s in results}) == 3

    # Each column is that model with those settings: the EPSS column is `flowtts infer` with 7 steps and
    # guidance 2 (at 7 steps the model's EPSS grid), the student's column the student alone at its own settings.
    teacher7 = tmp_path / "t7.wav"
    assert main(["infer", "--model", "builtin", "-t", text, "--steps", "7", "--cfg", "2", "--seed", "3",
                 "-o", str(teacher7), "-q"]) == 0  # fmt: skip
    alone = engine.speak(store.get("builtin:student"), None, None, text, out_dir=str(tmp_path), seed=3, name="s")
    for k, wave in ((1, _read(teacher7)), (2, _read(alone.wav))):
        assert waves[k].shape == wave.shape and np.abs(waves[k] - wave).max() <= QUANTUM, k
    # The same seed, so the same starting noise: the two teacher samplers say nearly the same thing; the
    # 32-step one is not the 7-step one (its settings were used).
    assert waves[0].shape == waves[1].shape and 0 < np.abs(waves[0] - waves[1]).max()
    with pytest.raises(ValueError, match="the text to say is empty"):
        engine.compare(store, " ", out_dir=str(tmp_path), seed=3)


# ----------------------------------------------------------------- the request queue


def test_the_queue_runs_at_most_concurrency_requests_at_once_and_holds_32(tmp_path, monkeypatch):
    """``build_app(concurrency=n)``: Gradio's queue with n as every handler's limit and room for 32 waiting;
    more than n requests sent at once are run n at a time."""
    pytest.importorskip("gradio")
    client_module = pytest.importorskip("gradio_client")
    from PIL import Image

    from conftest import free_port
    from flowtts.app.ui import build_app, launch

    monkeypatch.chdir(tmp_path)  # whatever the app makes in its working directory stays here
    running, most = [0], [0]
    lock = threading.Lock()
    wav, png = str(tmp_path / "s.wav"), str(tmp_path / "s.png")
    sf.write(wav, np.zeros(2400), 24_000)
    Image.new("RGB", (4, 4)).save(png)

    def slow_speak(model, ref_audio, ref_text, text, **kwargs):  # stands in for the synthesis: time, no work
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1
        return engine.Speech(wav, png, 1, "", 0.5, 0.1, 4)

    monkeypatch.setattr(engine, "speak", slow_speak)
    app = build_app("builtin:student", concurrency=3)  # not the default (2)
    assert app._queue.default_concurrency_limit == 3 and app._queue.max_size == 32
    handlers = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}
    assert {"speak", "voices", "edit", "compare"} <= set(handlers)
    for name in ("speak", "voices", "edit", "compare"):
        assert handlers[name].concurrency_limit == "default", name  # none runs outside the limit
    port = free_port()
    launch(app, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = client_module.Client(f"http://127.0.0.1:{port}/", verbose=False)
        args = [None, "", "Hello.", None, "builtin:student", None, None, None, None, None, None, 1.0, 1, False,
                0.15, "float32", "as the model file says"]  # fmt: skip
        start = time.perf_counter()
        jobs = [client.submit(*args, api_name="/speak") for _ in range(7)]
        results = [job.result(timeout=60) for job in jobs]
        elapsed = time.perf_counter() - start
    finally:
        app.close()
    assert len(results) == 7 and all(r[3] == 1 for r in results)
    assert most[0] == 3  # three at once, never more
    assert elapsed >= 1.5  # seven half-second requests, three at a time: three rounds


# ----------------------------------------------------------------- the Speak tab's Advanced fields


def test_opening_advanced_and_speaking_asks_for_the_models_own_steps_guidance_and_sway(tmp_path, monkeypatch):
    """Gradio 6 sends 0 for an empty number field once it is shown (opening Advanced): 0 steps means the
    model's own, and guidance and sway are text fields whose empty value is the model's own."""
    pytest.importorskip("gradio")
    import gradio as gr
    from PIL import Image

    from flowtts.app.ui import build_app

    monkeypatch.chdir(tmp_path)
    wav, png = str(tmp_path / "s.wav"), str(tmp_path / "s.png")
    sf.write(wav, np.zeros(2400), 24_000)
    Image.new("RGB", (4, 4)).save(png)
    asked = []

    def fake_speak(model, ref_audio, ref_text, text, **kwargs):  # what the tab asks of the engine, no work
        asked.append({k: kwargs[k] for k in ("steps", "cfg", "sway")})
        return engine.Speech(wav, png, 1, "", 0.5, 0.1, 4)

    monkeypatch.setattr(engine, "speak", fake_speak)
    app = build_app("builtin:student", workspace=tmp_path / "ws")
    speak = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}["speak"].fn

    def call(steps, cfg, sway):
        speak(None, "", "Hello.", None, "builtin:student", None, None, None, steps, cfg, sway, 1.0, 1, False, 0.15,
              "float32", "as the model file says")  # fmt: skip
        return asked[-1]

    assert call(0, "", "") == {"steps": None, "cfg": None, "sway": None}  # Advanced opened, nothing typed
    assert call(None, None, None) == {"steps": None, "cfg": None, "sway": None}  # an API call leaving them out
    assert call(8, "0", " -1 ") == {"steps": 8, "cfg": 0.0, "sway": -1.0}  # 0 guidance is a real value
    assert call(8, 2.5, 0) == {"steps": 8, "cfg": 2.5, "sway": 0.0}  # an API call sending numbers
    for bad in ("loud", "nan", "inf"):
        with pytest.raises(gr.Error, match="guidance strength must be a number"):
            call(None, bad, "")
    app.close()
