"""``flowtts vocoder train``: a known answer (a tone comes back), exact resume, torchrun-free bookkeeping, CLI."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from flowtts.config import MelConfig
from flowtts.train.loop import LoopSettings
from flowtts.train.vocoder.run import VOCODER_LOOP, VocoderTrainConfig, train_vocoder
from flowtts.vocoder.files import load_vocoder_file
from flowtts.vocoder.network import VocoderConfig
from train.helpers import Killed, kill_at

MEL = MelConfig(target_sample_rate=8000, n_mel_channels=16, hop_length=32, win_length=128, n_fft=128)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tone_corpus(root, frequencies=(440.0,), seconds=1.0, amplitude=0.5) -> str:
    os.makedirs(root / "wavs", exist_ok=True)
    lines = []
    for i, f in enumerate(frequencies):
        t = np.arange(int(MEL.target_sample_rate * seconds)) / MEL.target_sample_rate
        sf.write(root / "wavs" / f"{i}.wav", (amplitude * np.sin(2 * np.pi * f * t)).astype(np.float32), 8000)
        lines.append(f"wavs/{i}.wav|tone")
    (root / "metadata.csv").write_text("audio_file|text\n" + "\n".join(lines) + "\n")
    return str(root / "metadata.csv")


def config(steps: int, **overrides) -> VocoderTrainConfig:
    loop = LoopSettings(
        steps=steps,
        lr=1e-3,
        warmup=5,
        weight_decay=0.0,
        grad_clip=10.0,
        ema_decay=0.0,
        save_every=overrides.pop("save_every", 1000),
        log_every=5,
    )
    return VocoderTrainConfig(
        vocoder=VocoderConfig(mel=MEL, dim=32, blocks=2, kernel=3),
        loop=loop,
        batch_size=4,
        segment_frames=16,
        gain_db=(0.0, 0.0),
        **overrides,
    )


def test_a_vocoder_trained_on_a_tone_gives_the_tone_back(tmp_path):
    """Known answer: trained on a 500 Hz sine of amplitude 0.5, the vocoder turns the tone's mel into a sine of
    that frequency and amplitude (the spectrum peak and the RMS of the analytic wave, 0.5 / sqrt 2).

    500 Hz is a multiple of the frame rate (8000 / 32 = 250 Hz), so the tone's STFT phase is the same in every
    frame: a network that sees the same mel frame everywhere can only repeat one frame's phase, and a tone
    between multiples would come back at the nearest one (speech is never that stationary)."""
    path = train_vocoder(tone_corpus(tmp_path, (500.0,)), str(tmp_path / "run"), config(200), progress=False)
    vocoder = load_vocoder_file(path)
    t = np.arange(4000) / 8000
    wave = torch.tensor(0.5 * np.sin(2 * np.pi * 500 * t), dtype=torch.float32)
    from flowtts.model.mel import MelSpec

    mel = MelSpec(**dataclasses.asdict(MEL))(wave[None])
    with torch.no_grad():
        out = vocoder(mel)[0]
    inner = out[500:-500]
    spectrum = torch.fft.rfft(inner * torch.hann_window(inner.numel()))
    peak_hz = float(spectrum.abs().argmax()) * 8000 / inner.numel()
    assert abs(peak_hz - 500) < 8000 / inner.numel() + 1
    assert float(inner.pow(2).mean().sqrt()) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    log = (tmp_path / "run" / "vocoder_log.csv").read_text().splitlines()
    first, last = (float(line.split(",")[2]) for line in (log[1], log[-1]))
    assert last < 0.8 * first  # the mel loss fell (silent bins keep it high: their log floor is -11.5)


@pytest.mark.parametrize("adversarial_from", [None, 2])
def test_a_killed_run_resumes_exactly(tmp_path, adversarial_from):
    corpus = tone_corpus(tmp_path, frequencies=(300.0, 700.0))
    cfg = config(5, save_every=2, adversarial_from=adversarial_from)
    straight = train_vocoder(corpus, str(tmp_path / "a"), cfg, progress=False)
    with pytest.raises(Killed):
        train_vocoder(corpus, str(tmp_path / "b"), cfg, progress=False, on_step=kill_at(3))
    resumed = train_vocoder(corpus, str(tmp_path / "b"), cfg, progress=False)
    a, b = load_vocoder_file(straight), load_vocoder_file(resumed)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ("net" in state["discriminators"]) and state["step"] == 5
    if adversarial_from is not None:  # the discriminators were trained, and resumed with their optimiser
        assert state["discriminators"]["optimizer"]["state"]


def test_a_run_refuses_another_config_in_its_folder(tmp_path):
    corpus = tone_corpus(tmp_path)
    train_vocoder(corpus, str(tmp_path / "a"), config(2), progress=False)
    with pytest.raises(ValueError, match="written for another vocoder training config"):
        train_vocoder(corpus, str(tmp_path / "a"), dataclasses.replace(config(2), batch_size=2), progress=False)


def test_the_file_records_what_it_was_trained_on(tmp_path):
    corpus = tone_corpus(tmp_path)
    vocoder = load_vocoder_file(train_vocoder(corpus, str(tmp_path / "a"), config(3), progress=False))
    assert vocoder.metadata["trained_on"] == os.path.abspath(corpus)
    assert vocoder.metadata["steps"] == "3"
    assert vocoder.config.mel == MEL


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(segment_frames=4), "segment_frames must be an integer >= 8"),
        (dict(mel_weight=-1.0), "mel_weight must be >= 0"),
        (dict(adversarial_from=-3), "adversarial_from must be a step >= 0"),
        (dict(gain_db=(0.0, -6.0)), "gain_db must be"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        VocoderTrainConfig(**overrides)


def test_a_corpus_of_clips_shorter_than_a_segment_is_refused_naming_the_segment(tmp_path):
    corpus = tone_corpus(tmp_path, seconds=0.05)  # 400 samples; a segment of 16 frames x 32 is 512
    with pytest.raises(ValueError, match=r"none of its 1 waves .* segment_frames 16 x hop 32 .*--segment-frames"):
        train_vocoder(corpus, str(tmp_path / "run"), config(1), progress=False)
    assert not (tmp_path / "run").exists()


def test_segments_shorter_than_the_longest_stft_are_refused():
    with pytest.raises(ValueError, match="segment_frames must give at least 2 \\* n_fft"):
        fine_hop = dataclasses.replace(MEL, hop_length=16)  # 8 frames = 128 samples < 2 * n_fft = 256
        VocoderTrainConfig(vocoder=VocoderConfig(mel=fine_hop), segment_frames=8, loop=VOCODER_LOOP)


def test_cli_trains_and_refuses_bad_flags(tmp_path, capsys):
    from flowtts.cli import main

    corpus = tone_corpus(tmp_path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "vocoder",
                "train",
                "--data",
                corpus,
                "--out",
                str(out),
                "--dim",
                "16",
                "--blocks",
                "1",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--segment-frames",
                "8",
                "-q",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert load_vocoder_file(str(out / "vocoder.safetensors")).config.dim == 16
    for bad, said in (
        (["--max-minutes", "0"], "--max-minutes must be positive"),
        (["--kernel", "4"], "kernel must be odd"),
        (["--batch-size", "0"], "batch_size must be"),
    ):
        capsys.readouterr()
        code = main(["vocoder", "train", "--data", corpus, "--out", str(tmp_path / "bad"), *bad, "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and said in err and len(err.splitlines()) == 1
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert main(["vocoder", "train", "--data", corpus, "--out", str(a_file), "-q"]) == 2
    assert f"--out {a_file} is a file" in capsys.readouterr().err and a_file.read_text() == "mine"
    assert main(["vocoder", "train", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x"), "-q"]) == 2
    assert not (tmp_path / "bad").exists() and not (tmp_path / "x").exists()


def test_a_prepared_folder_is_a_corpus_whatever_the_working_directory(tmp_path, monkeypatch):
    import json

    from flowtts.model.mel import MelSpec
    from flowtts.train.data import prepare_dataset
    from flowtts.train.vocoder.data import corpus_audio_files

    metadata = tone_corpus(tmp_path / "corpus", frequencies=(440.0, 660.0))
    prepared = str(tmp_path / "prepared")
    prepare_dataset(metadata, None, prepared, mel_spec=MelSpec(**dataclasses.asdict(MEL)), progress=False)
    monkeypatch.chdir(tmp_path)  # anywhere but the corpus: its paths are relative to it
    files = corpus_audio_files(prepared)
    assert files == [str(tmp_path / "corpus" / "wavs" / f"{i}.wav") for i in (0, 1)]
    assert train_vocoder(prepared, str(tmp_path / "run"), config(1), progress=False)
    info = json.loads((tmp_path / "prepared" / "dataset.json").read_text())
    del info["audio_dir"]  # as an older flowtts prepared it
    (tmp_path / "prepared" / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(FileNotFoundError, match="prepared by an older flowtts.*give its metadata.csv"):
        corpus_audio_files(prepared)


def test_a_prepared_folder_with_a_torn_index_row_is_named(tmp_path):
    from flowtts.train.vocoder.data import corpus_audio_files

    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "index.jsonl").write_text('{"audio": "/a.wav"}\n{"text": "no audio"}\n')
    with pytest.raises(ValueError, match=r"index.jsonl line 2 is not a row with an 'audio' path"):
        corpus_audio_files(str(folder))


def test_the_library_and_the_command_line_default_to_the_same_batch(tmp_path):
    from flowtts.cli import build_parser

    args = build_parser().parse_args(["vocoder", "train", "--data", "d", "--out", "o"])
    assert args.batch_size is None and args.segment_frames is None  # left to VocoderTrainConfig
    assert VocoderTrainConfig().batch_size == 16 and VocoderTrainConfig().segment_frames == 48
