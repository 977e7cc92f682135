import os

import pytest
import torch

from flowtts.config import MelConfig
from flowtts.eval.recognizer import RecognizerConfig, load_recognizer
from flowtts.train.asr import ASR_LOOP, ASRConfig, augment, evaluate_recognizer, train_recognizer
from flowtts.train.data import MelDataset
from train.helpers import Killed, kill_at, prepared_corpus, split_loop

ARCH = RecognizerConfig(channels=16, hidden=8, gru_layers=1, dropout=0.1, mel=MelConfig())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("asrcorpus")), n=8)


def _levenshtein(a, b) -> int:
    """Edit distance by the textbook recursion (memoised): insertions, deletions, substitutions cost 1."""
    import functools

    @functools.cache
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def _config(**kw):
    base = dict(steps=8, lr=3e-3, warmup=2, batch_frames=1200, max_samples=4, save_every=3, eval_every=4, seed=1)
    return ASRConfig(**split_loop({**base, **kw}, ASR_LOOP))


def test_training_lowers_the_loss_writes_its_files_and_reports_error_rates(corpus, tmp_path):
    ds = MelDataset(corpus)
    summary = train_recognizer(
        ds, str(tmp_path), _config(steps=30), held_out=ds, recognizer_config=ARCH, progress=False
    )
    assert summary["finished"] and summary["step"] == 30
    assert {"last.pt", "recognizer.safetensors", "asr_log.csv"} <= set(os.listdir(tmp_path))
    rec = load_recognizer(str(tmp_path / "recognizer.safetensors"))
    import csv

    with open(tmp_path / "asr_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    figures = evaluate_recognizer(rec, ds)
    assert abs(figures["cer"] - float(rows[-1]["cer"])) < 1e-4  # the file is the EMA that was evaluated
    # The error rates, recomputed independently: each utterance transcribed alone (no batch padding) and a
    # plain recursive edit distance over characters and words.
    from flowtts.eval.recognizer import normalize_text

    refs, hyps = [], []
    for i in range(len(ds)):
        mel, text = ds[i]
        refs.append(normalize_text(text, rec.alphabet))
        hyps.append(rec.transcribe(mel[None])[0])
    assert hyps == figures["hypotheses"]
    cer = sum(_levenshtein(r, h) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)
    wer = sum(_levenshtein(r.split(), h.split()) for r, h in zip(refs, hyps)) / sum(len(r.split()) for r in refs)
    assert figures["cer"] == pytest.approx(cer, abs=1e-12) and figures["wer"] == pytest.approx(wer, abs=1e-12)
    assert rec.mel_std.min() > 0 and not torch.equal(rec.mel_mean, torch.zeros(100))  # from the data


def test_a_killed_run_resumes_to_the_uninterrupted_weights(corpus, tmp_path):
    ds = MelDataset(corpus)
    train_recognizer(ds, str(tmp_path / "a"), _config(), recognizer_config=ARCH, progress=False)

    kill = kill_at(5)

    with pytest.raises(Killed):
        train_recognizer(ds, str(tmp_path / "b"), _config(), recognizer_config=ARCH, progress=False, on_step=kill)
    train_recognizer(ds, str(tmp_path / "b"), _config(), recognizer_config=ARCH, progress=False)
    a = load_recognizer(str(tmp_path / "a" / "recognizer.safetensors")).state_dict()
    b = load_recognizer(str(tmp_path / "b" / "recognizer.safetensors")).state_dict()
    for name, value in a.items():
        assert torch.equal(value, b[name]), name
    other = RecognizerConfig(channels=8, hidden=8, gru_layers=1, mel=MelConfig())
    with pytest.raises(ValueError, match="another recogniser architecture"):
        train_recognizer(ds, str(tmp_path / "b"), _config(steps=9), recognizer_config=other, progress=False)


def test_augmentation_is_reproducible_and_keeps_the_floor():
    mels = torch.randn(2, 50, 100)
    lens = torch.tensor([50, 31])
    a = augment(mels, lens, _config(), torch.Generator().manual_seed(0))
    b = augment(mels, lens, _config(), torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    lo, hi = _config().stretch
    assert all(lo * n - 1 <= m <= hi * n + 1 for n, m in zip(lens.tolist(), a[1].tolist()))


def test_bad_data_and_settings_are_refused(corpus, tmp_path):
    ds = MelDataset(corpus)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        _config(steps=0)
    with pytest.raises(ValueError, match="stretch must satisfy"):
        _config(stretch=(1.2, 1.0))
    other_mels = RecognizerConfig(channels=8, hidden=4, gru_layers=1, mel=MelConfig(n_mel_channels=80))
    with pytest.raises(ValueError, match="recogniser reads mels .*80.* but the training data makes .*100"):
        train_recognizer(ds, str(tmp_path / "x"), _config(), recognizer_config=other_mels, progress=False)
    assert not os.path.exists(tmp_path / "x")


def test_the_asr_commands_train_test_and_transcribe(corpus, tmp_path, capsys):
    from flowtts.cli import main

    out = str(tmp_path / "asr")
    code = main(
        [
            "asr",
            "train",
            "--data",
            corpus,
            "--heldout",
            corpus,
            "--out",
            out,
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--batch-frames",
            "1200",
            "--channels",
            "16",
            "--hidden",
            "8",
            "--gru-layers",
            "1",
            "-q",
        ]
    )
    assert code == 0 and "held-out CER" in capsys.readouterr().out
    path = os.path.join(out, "recognizer.safetensors")
    assert main(["asr", "test", "--recognizer", path, "--data", corpus, "--show", "1"]) == 0
    assert "CER" in capsys.readouterr().out
    wav = os.path.join(os.path.dirname(corpus), "wavs", "000.wav")
    assert main(["asr", "transcribe", "--recognizer", path, wav]) == 0
    assert capsys.readouterr().out.startswith(wav + "\t")
    assert main(["asr", "test", "--recognizer", str(tmp_path / "none.safetensors"), "--data", corpus]) == 2
    assert "recogniser file not found" in capsys.readouterr().err
