import math

import pytest
import torch

from flowtts.config import MelConfig
from flowtts.eval.recognizer import (
    CTCRecognizer,
    RecognizerConfig,
    load_recognizer,
    normalize_text,
    save_recognizer,
)

SMALL = dict(channels=16, hidden=8, gru_layers=1, dropout=0.0)


def small_recognizer(n_mels: int = 12, seed: int = 0, dtype=torch.float32) -> CTCRecognizer:
    torch.manual_seed(seed)
    mel = MelConfig(n_mel_channels=n_mels)
    return CTCRecognizer(RecognizerConfig(mel=mel, **SMALL)).to(dtype).eval()


def test_normalize_text_keeps_only_the_alphabet():
    assert normalize_text("  Where did the OLD man go?  It's late!") == "where did the old man go it's late"
    assert normalize_text("a--b") == "a b"
    assert normalize_text("123 ...") == ""
    with pytest.raises(TypeError, match="text must be a string"):
        normalize_text(None)


def test_each_utterance_of_a_batch_is_scored_as_if_alone():
    rec = small_recognizer()
    g = torch.Generator().manual_seed(1)
    mel = torch.randn(3, 40, 12, generator=g)
    lens = torch.tensor([40, 27, 33])
    texts = ["ab", "a cab", "bad"]
    loss, scored = rec.ctc_loss(mel, lens, texts)
    assert scored.all()
    for i in range(3):
        alone, _ = rec.ctc_loss(mel[i : i + 1, : lens[i]], None, [texts[i]])
        torch.testing.assert_close(loss[i], alone[0], rtol=1e-5, atol=1e-6)
    # Padding content does not matter.
    noisy = mel.clone()
    noisy[1, 27:] = 50.0
    torch.testing.assert_close(rec.ctc_loss(noisy, lens, texts)[0], loss, rtol=1e-5, atol=1e-6)
    assert rec.transcribe(noisy, lens) == rec.transcribe(mel, lens)
    longer = torch.cat((mel, torch.randn(3, 9, 12, generator=g)), dim=1)  # padding past every length
    torch.testing.assert_close(rec.ctc_loss(longer, lens, texts)[0], loss, rtol=1e-5, atol=1e-6)


def test_ctc_loss_is_per_character_and_matches_torch_on_one_utterance():
    rec = small_recognizer()
    mel = torch.randn(1, 30, 12, generator=torch.Generator().manual_seed(2))
    loss, _ = rec.ctc_loss(mel, None, ["Bad cab."])
    log_probs, out_lens = rec(mel)
    target = torch.tensor([rec.encode("bad cab")])
    total = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), target, out_lens, torch.tensor([7]), reduction="sum"
    )
    torch.testing.assert_close(loss[0], total / 7)


def test_too_short_or_empty_targets_are_not_scored_and_never_nan():
    rec = small_recognizer()
    mel = torch.randn(3, 10, 12, generator=torch.Generator().manual_seed(3), requires_grad=True)
    # 10 frames -> 5 encoder frames: 5 characters fit, 6 do not; "aa" needs 3 (a blank between repeats).
    loss, scored = rec.ctc_loss(mel, None, ["abcab", "abcabc", "!!"])
    assert scored.tolist() == [True, False, False]
    assert torch.isfinite(loss).all() and loss[1] == 0 and loss[2] == 0
    loss.sum().backward()
    assert torch.isfinite(mel.grad).all() and mel.grad[1].abs().sum() == 0
    _, scored = rec.ctc_loss(mel[:, :4], None, ["aab", "aba", "ab"])  # 2 encoder frames
    assert scored.tolist() == [False, False, True]


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    rec = small_recognizer()
    ids = [rec.alphabet.index(c) + 1 if c != "-" else 0 for c in "aa-b--bc c"]
    log_probs = torch.full((1, len(ids), len(rec.alphabet) + 1), -10.0)
    log_probs[0, torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    assert rec.decode(log_probs, torch.tensor([len(ids)])) == ["abbc c"]
    assert rec.decode(log_probs, torch.tensor([3])) == ["a"]


def test_bad_inputs_name_the_argument():
    rec = small_recognizer()
    with pytest.raises(ValueError, match="mel has 10 channels"):
        rec(torch.zeros(1, 8, 10))
    with pytest.raises(ValueError, match="lens must lie in"):
        rec(torch.zeros(1, 8, 12), torch.tensor([9]))
    with pytest.raises(ValueError, match="texts must be a list of 2"):
        rec.ctc_loss(torch.zeros(2, 8, 12), None, ["a"])
    with pytest.raises(ValueError, match="kernel must be odd"):
        RecognizerConfig(kernel=4)


def test_save_load_round_trip_and_refusals(tmp_path):
    rec = small_recognizer(seed=4)
    rec.mel_mean.fill_(0.5)
    path = str(tmp_path / "r.safetensors")
    save_recognizer(rec, path, extra={"heldout": {"cer": 0.1}})
    back = load_recognizer(path)
    mel = torch.randn(2, 20, 12, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(back(mel)[0], rec(mel)[0])
    assert back.config == rec.config and '"cer": 0.1' in back.metadata["heldout"]
    with pytest.raises(FileNotFoundError):
        load_recognizer(str(tmp_path / "missing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_recognizer(str(tmp_path / "junk.safetensors"))
    with pytest.raises(ValueError, match="recogniser reads mels .*100.* but the model makes .*12"):
        small_recognizer(n_mels=100).check_fits(MelConfig(n_mel_channels=12), "the model")


def test_gradient_with_respect_to_the_mel_matches_finite_differences():
    rec = small_recognizer(dtype=torch.float64)
    mel = torch.randn(2, 14, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([14, 11])
    assert torch.autograd.gradcheck(
        lambda m: rec.ctc_loss(m, lens, ["ab c", "cab"])[0], (mel,), atol=1e-6, fast_mode=True
    )
    assert math.isfinite(float(rec.ctc_loss(mel.detach(), lens, ["ab c", "cab"])[0].sum()))


def test_the_builtin_recogniser_reads_the_builtin_voice():
    from importlib.resources import files

    import flowtts
    from flowtts.train.asr import evaluate_recognizer
    from flowtts.train.data import MelDataset

    recognizer = flowtts.load_recognizer("builtin")
    assert recognizer.config.mel == MelConfig() and not recognizer.training
    held = MelDataset(str(files("flowtts").joinpath("assets", "prompts", "heldout")))
    figures = evaluate_recognizer(recognizer, held)
    assert figures["cer"] < 0.05 and figures["wer"] < 0.15, figures
    # Scrambling the frames in time makes the speech unreadable: the recogniser reads words, not voice.
    mel, text = held[0]
    scrambled = mel[torch.randperm(mel.shape[0], generator=torch.Generator().manual_seed(0))]
    loss, _ = recognizer.ctc_loss(torch.stack([mel, scrambled]), None, [text, text])
    assert loss[1] > 5 * loss[0]
