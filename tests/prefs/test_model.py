"""The preference model: features, score gradients, files (flowtts.prefs.model)."""

import json

import pytest
import torch

from flowtts.config import MelConfig
from flowtts.eval.recognizer import CTCRecognizer, RecognizerConfig, save_recognizer
from flowtts.prefs.model import (
    PREFERENCE_FORMAT,
    PreferenceModel,
    RecognizerFeatures,
    load_feature_net,
    load_preference_model,
    masked_mean_std,
    save_preference_model,
)

TINY_MEL = MelConfig(n_mel_channels=6)


def tiny_recognizer(seed: int = 0, dtype=torch.float32, mel: MelConfig = TINY_MEL) -> CTCRecognizer:
    torch.manual_seed(seed)
    config = RecognizerConfig(channels=5, hidden=3, gru_layers=1, kernel=3, dropout=0.5, mel=mel)
    return CTCRecognizer(config).to(dtype)


def randomise_head(model: PreferenceModel, seed: int = 1) -> PreferenceModel:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.5)
        model.feature_mean.copy_(torch.randn(model.in_dim, generator=g, dtype=torch.float64).to(model.feature_mean))
        model.feature_std.copy_(torch.rand(model.in_dim, generator=g, dtype=torch.float64).to(model.feature_std) + 0.5)
    return model


@pytest.fixture
def recognizer_file(tmp_path):
    path = tmp_path / "tiny-recognizer.safetensors"
    save_recognizer(tiny_recognizer(), str(path))
    return path


def tiny_model(recognizer_file, features: str = "recognizer+stats") -> PreferenceModel:
    net = load_feature_net(f"recognizer:{recognizer_file}") if features != "stats" else None
    return randomise_head(PreferenceModel(net, TINY_MEL, features=features, hidden=4))


def test_recognizer_hidden_states_are_what_its_output_layer_reads():
    rec = tiny_recognizer().eval()
    mel = torch.randn(2, 9, 6, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([9, 6])
    hidden, out_lens = rec.hidden_states(mel, lens)
    log_probs, forward_lens = rec(mel, lens)
    assert hidden.shape == (2, 5, 6)
    assert torch.equal(out_lens, forward_lens) and out_lens.tolist() == [5, 3]
    torch.testing.assert_close(torch.log_softmax(rec.out(hidden), dim=-1), log_probs, rtol=0, atol=0)
    assert hidden[1, 3:].abs().max() == 0  # past the second utterance's end


def test_masked_mean_std_by_hand():
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]]])
    got = masked_mean_std(x, torch.tensor([[True, True, False]]))
    expected = torch.tensor([[2.0, 4.0, (1.0 + 1e-5) ** 0.5, (4.0 + 1e-5) ** 0.5]])
    torch.testing.assert_close(got, expected)


def test_feature_layout_and_each_utterance_is_scored_as_if_alone(recognizer_file):
    model = tiny_model(recognizer_file).eval()
    assert model.in_dim == 2 * 6 + 2 * 6  # pooled recogniser states (2 x 3 per direction) + mel mean/std
    g = torch.Generator().manual_seed(3)
    mel = torch.randn(3, 11, 6, generator=g)
    lens = torch.tensor([11, 7, 4])
    scores = model.score(mel, lens)
    assert scores.shape == (3,)
    for i in range(3):
        alone = model.score(mel[i : i + 1, : lens[i]], lens[i : i + 1])
        torch.testing.assert_close(scores[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    noisy = mel.clone()
    noisy[1, 7:] = 40.0  # padding content does not count
    torch.testing.assert_close(model.score(noisy, lens), scores, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model.score(mel + 0.5, lens), scores)  # the mel itself does


def test_the_frozen_recogniser_stays_in_eval_mode_and_untrained(recognizer_file):
    model = tiny_model(recognizer_file)
    model.train()
    assert not model.feature_net.recognizer.training  # its dropout (0.5) would make scores random
    mel = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(4))
    lens = torch.tensor([8, 8])
    torch.testing.assert_close(model.score(mel, lens), model.score(mel, lens), rtol=0, atol=0)
    assert all(not p.requires_grad for p in model.feature_net.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


@pytest.mark.parametrize("features", ["recognizer+stats", "recognizer", "stats"])
def test_score_gradient_matches_float64_finite_differences(features):
    net = None
    if features != "stats":
        net = RecognizerFeatures(tiny_recognizer(dtype=torch.float64), "recognizer:in-memory")
    model = randomise_head(PreferenceModel(net, TINY_MEL, features=features, hidden=4)).double()
    mel = torch.randn(2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    lens = torch.tensor([7, 5])

    def total(x):
        return (model.score(x, lens) * torch.tensor([1.0, -0.7], dtype=torch.float64)).sum()

    (grad,) = torch.autograd.grad(total(mel), mel)
    assert grad[0].abs().max() > 1e-3
    assert grad[1, 5:].abs().max() == 0  # frames past the length do not count
    eps = 1e-6
    fd = torch.zeros_like(mel)
    with torch.no_grad():
        for index in torch.cartesian_prod(torch.arange(2), torch.arange(7), torch.arange(6)).tolist():
            bump = torch.zeros_like(mel)
            bump[tuple(index)] = eps
            fd[tuple(index)] = (total(mel + bump) - total(mel - bump)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_bad_inputs_are_refused_naming_the_argument(recognizer_file):
    model = tiny_model(recognizer_file)
    mel = torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match="channels"):
        model.score(torch.randn(2, 5, 7), torch.tensor([5, 5]))
    with pytest.raises(ValueError, match="lens must lie in 1..5"):
        model.score(mel, torch.tensor([5, 0]))
    with pytest.raises(ValueError, match="lens must be an integer tensor"):
        model.score(mel, torch.tensor([5.0, 5.0]))
    with pytest.raises(ValueError, match="features must be one of"):
        PreferenceModel(None, TINY_MEL, features="loudness")
    with pytest.raises(ValueError, match="need a feature network"):
        PreferenceModel(None, TINY_MEL, features="recognizer")
    with pytest.raises(ValueError, match="reads mels"):
        PreferenceModel(model.feature_net, MelConfig(n_mel_channels=8))
    with pytest.raises(ValueError, match="'recognizer:builtin' or 'recognizer:PATH'"):
        load_feature_net("builtin")


@pytest.mark.parametrize("features", ["recognizer+stats", "stats"])
def test_save_load_round_trip_gives_identical_scores_and_metadata(recognizer_file, tmp_path, features):
    model = tiny_model(recognizer_file, features).eval()
    model.metadata.update({"human": "false", "heldout_accuracy": "0.9100"})
    path = tmp_path / "prefs.safetensors"
    save_preference_model(model, path, extra={"pairs": {"files": [{"file": "x.prefs", "pairs": 3}], "count": 3}})
    loaded = load_preference_model(path)
    mel = torch.randn(2, 9, 6, generator=torch.Generator().manual_seed(6))
    lens = torch.tensor([9, 4])
    torch.testing.assert_close(loaded.score(mel, lens), model.score(mel, lens), rtol=0, atol=0)
    assert not loaded.training
    assert loaded.metadata["human"] == "false" and loaded.metadata["heldout_accuracy"] == "0.9100"
    assert json.loads(loaded.metadata["pairs"])["count"] == 3
    assert loaded.metadata["features"] == features
    assert all(isinstance(v, str) for v in loaded.metadata.values())
    if features != "stats":
        assert loaded.metadata["feature_source"] == f"recognizer:{recognizer_file}"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["format"] == PREFERENCE_FORMAT
        assert not [k for k in f.keys() if k.startswith("feature_net.")]  # the frozen network is not stored


def test_the_builtin_recogniser_is_recorded_by_name_and_loaded_again(tmp_path):
    net = load_feature_net("recognizer:builtin")
    model = randomise_head(PreferenceModel(net, hidden=4)).eval()
    assert model.mel == MelConfig()
    path = tmp_path / "builtin-prefs.safetensors"
    save_preference_model(model, path)
    assert path.stat().st_size < 200_000  # head only, not the recogniser's 4 MB
    loaded = load_preference_model(path)
    assert loaded.metadata["feature_source"] == "recognizer:builtin"
    mel = torch.randn(1, 30, 100, generator=torch.Generator().manual_seed(7)) - 5
    torch.testing.assert_close(loaded.score(mel, torch.tensor([30])), model.score(mel, torch.tensor([30])))


def test_a_file_for_another_mel_front_end_is_refused_naming_both(recognizer_file, tmp_path):
    path = tmp_path / "prefs.safetensors"
    save_preference_model(tiny_model(recognizer_file), path)
    loaded = load_preference_model(path)
    loaded.check_fits(TINY_MEL)
    with pytest.raises(ValueError) as error:
        loaded.check_fits(MelConfig(n_mel_channels=100), "the student")
    message = str(error.value)
    assert "'n_mel_channels': 6" in message and "'n_mel_channels': 100" in message and "the student" in message


def test_other_files_are_refused(recognizer_file, tmp_path):
    with pytest.raises(ValueError, match="not a flowtts preference model"):
        load_preference_model(recognizer_file)  # a safetensors file of another kind
    pt = tmp_path / "prefs.pt"
    torch.save({"head": 1}, pt)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        load_preference_model(pt)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_preference_model(garbage)
    with pytest.raises(FileNotFoundError):
        load_preference_model(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_preference_model(tiny_model(recognizer_file), tmp_path / "prefs.pt")


def test_a_feature_network_with_other_weights_is_refused(recognizer_file, tmp_path):
    path = tmp_path / "prefs.safetensors"
    save_preference_model(tiny_model(recognizer_file), path)
    other = tmp_path / "other-recognizer.safetensors"
    save_recognizer(tiny_recognizer(seed=9), str(other))
    with pytest.raises(ValueError, match="has other weights"):
        load_preference_model(path, feature_source=f"recognizer:{other}")
    moved = tmp_path / "moved.safetensors"
    recognizer_file.rename(moved)  # the same weights elsewhere are accepted; the record keeps the original
    loaded = load_preference_model(path, feature_source=f"recognizer:{moved}")
    assert loaded.metadata["feature_source"] == f"recognizer:{recognizer_file}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_score_gradient_on_cuda_matches_cpu(recognizer_file):
    """cuDNN's GRU has no backward in eval mode: the frozen recogniser must still pass gradients to the mel."""
    model = tiny_model(recognizer_file).eval()
    mel = torch.randn(2, 9, 6, generator=torch.Generator().manual_seed(8))
    lens = torch.tensor([9, 6])
    cpu_mel = mel.clone().requires_grad_(True)
    model.score(cpu_mel, lens).sum().backward()
    cuda_mel = mel.cuda().requires_grad_(True)
    model.cuda().score(cuda_mel, lens.cuda()).sum().backward()
    torch.testing.assert_close(cuda_mel.grad.cpu(), cpu_mel.grad, rtol=1e-4, atol=1e-5)


def test_loading_and_scoring_imports_no_training_module(recognizer_file, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "prefs.safetensors"
    save_preference_model(tiny_model(recognizer_file), path)
    code = (
        "import sys, torch\n"
        "from flowtts.prefs.model import load_preference_model\n"
        f"model = load_preference_model({str(path)!r})\n"
        "model.score(torch.randn(1, 8, 6), torch.tensor([8]))\n"
        "print(sorted(m for m in sys.modules if m.startswith('flowtts.train')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"
