import os
import time

import pytest
import soundfile as sf
import torch

from flowtts.app import engine
from flowtts.app.runs import Run
from train.helpers import prepared_corpus


def test_parts_texts_and_seeds_are_read_or_refused_with_what_was_expected(tmp_path):
    assert engine.parse_parts("1.2-1.8, 3-3.5") == [(1.2, 1.8), (3.0, 3.5)]
    with pytest.raises(ValueError, match="start-end seconds"):
        engine.parse_parts("1.2 to 1.8")
    with pytest.raises(ValueError, match="at least one part"):
        engine.parse_parts(" ")
    (tmp_path / "t.txt").write_bytes("héllo".encode())
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    assert engine.read_text_file(str(tmp_path / "t.txt")) == "héllo" and engine.read_text_file(None) == ""
    with pytest.raises(ValueError, match="b.txt is not UTF-8 text"):
        engine.read_text_file(str(tmp_path / "b.txt"))
    assert engine.choose_seed(7) == 7 and 0 <= engine.choose_seed(-1) < 2**31


def test_a_model_choice_is_loaded_once_and_a_missing_checkpoint_is_named():
    store = engine.ModelStore()
    assert store.get("builtin:student") is store.get("builtin:student")
    with pytest.raises(ValueError, match="choose a checkpoint file"):
        store.get(engine.CHECKPOINT_CHOICE, None)
    with pytest.raises(FileNotFoundError):
        store.get(engine.CHECKPOINT_CHOICE, "/nonexistent/model.safetensors")
    with pytest.raises(ValueError, match="model must be one of"):
        store.get("nonsense")


def test_speak_writes_24khz_speech_and_its_picture_and_refuses_empty_text(tmp_path):
    model = engine.ModelStore().get("builtin:student")
    speech = engine.speak(model, None, None, "The red bird sang.", out_dir=str(tmp_path), seed=3)
    wave, rate = sf.read(speech.wav)
    assert rate == 24_000 and abs(len(wave) / rate - speech.audio_seconds) < 1e-3 and speech.seed == 3
    assert os.path.getsize(speech.mel_png) > 1000 and speech.network_calls == 4 and speech.rtf > 0
    with pytest.raises(ValueError, match="the text to say is empty"):
        engine.speak(model, None, None, "  ", out_dir=str(tmp_path))


def test_multi_voice_refuses_unknown_tags_and_speaks_known_ones(tmp_path):
    model = engine.ModelStore().get("builtin:student")
    voices = [engine.VoiceSlot("main"), engine.VoiceSlot("other", speed=1.2, seed=4)]
    with pytest.raises(ValueError, match=r"voice \[nobody\]"):
        engine.speak_voices(model, voices, "[main] Hi. [nobody] Hello.", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="names must differ"):
        engine.speak_voices(model, [engine.VoiceSlot("a"), engine.VoiceSlot("a")], "Hi.", out_dir=str(tmp_path))
    speech = engine.speak_voices(model, voices, "[main] The red bird. [other] The blue sky.", out_dir=str(tmp_path))
    wave, rate = sf.read(speech.wav)
    assert rate == 24_000 and len(wave) > 0.5 * rate


def test_a_run_started_from_the_page_stops_with_a_resumable_checkpoint(tmp_path):
    corpus = prepared_corpus(str(tmp_path / "corpus"))
    out = str(tmp_path / "run")
    args = [
        "--data",
        corpus,
        "--preset",
        "tiny",
        "--steps",
        "100000",
        "--batch-frames",
        "400",
        "--save-every",
        "100000",
    ]
    run = Run("train", args, out)
    log = os.path.join(out, "train_log.csv")

    def logged_rows():
        return len(open(log).readlines()) - 1 if os.path.exists(log) else 0

    deadline = time.time() + 120
    while run.running() and logged_rows() < 3 and time.time() < deadline:  # a curve needs a few points
        time.sleep(0.5)
    assert run.running(), run.status()["log"]
    assert run.stop(timeout=120) == 0
    state = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    assert 1 <= state["step"] < 100000 and not os.path.exists(os.path.join(out, "STOP"))
    status = run.status()
    assert "exited with code 0" in status["state"] and status["curve"] is not None
    with pytest.raises(ValueError, match="'train' or 'distill'"):
        Run("serve", [], out)


def test_flowtts_app_refuses_share_and_bad_ports_in_one_line(capsys):
    from flowtts.cli import main

    assert main(["app", "--share"]) == 2
    assert "needs the internet" in capsys.readouterr().err
    pytest.importorskip("gradio")
    assert main(["app", "--port", "0"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


def test_the_reference_clip_choice_maps_to_continue_reference_and_is_checked():
    assert [engine.clip_use(k) for k in engine.CLIP_USES] == [None, True, False]
    assert engine.clip_use(None) is None and engine.clip_use("") is None
    with pytest.raises(ValueError, match="reference clip use must be one of"):
        engine.clip_use("both")


def test_a_few_step_runs_log_shows_on_the_page(tmp_path):
    """``distill --method M`` logs to fewstep_log.csv: the run's status shows its header and latest rows."""
    out = str(tmp_path / "run")
    run = Run("distill", ["--data", str(tmp_path / "missing")], out)
    run.stop(timeout=60)
    with open(os.path.join(out, "fewstep_log.csv"), "w") as f:
        f.write("step,loss,lr\n" + "".join(f"{s},0.{s:03d},1e-4\n" for s in range(1, 9)))
    log = run.status()["log"]
    assert log.startswith("step,loss,lr") and "8,0.008" in log and "2,0.002" not in log
