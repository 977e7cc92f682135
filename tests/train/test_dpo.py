"""Flow-DPO (``flowtts reward --objective dpo``): the loss by hand, its limits, and the run."""

import copy
import csv
import math
import os

import pytest
import torch

from flowtts.prefs.store import PreferencePair as Pair
from flowtts.train.data import MelDataset
from flowtts.train.dpo import (
    DPO_LOOP,
    DPOConfig,
    PairDraws,
    finetune_dpo,
    flow_dpo_loss,
    load_pairs,
    pair_batch,
    ranked,
)
from train.helpers import Killed, kill_at, prepared_corpus, random_model, split_loop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("dcorpus")))


def _models(corpus):
    """A float64 model and a reference that differs from it (a perturbed copy)."""
    model = random_model(corpus).double()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model, reference.requires_grad_(False)


def _pairs(d=100):
    g = torch.Generator().manual_seed(1)

    def mel(n):
        return torch.randn(n, d, generator=g)

    return [
        Pair("the dog ran far", "a cat sat", 9, mel(30), mel(26), "a"),
        Pair("blue sky", "", 0, mel(14), mel(19), "b"),
        Pair("we go home now", "it is late", 5, mel(20), mel(20), "same"),
    ]


def _member_error(net, mel, prompt_frames, text, t, noise) -> float:
    """Mean squared velocity error over the generated frames, one row alone, written out."""
    mel = mel.double()
    x0 = noise[: mel.shape[0]]
    xt = (1 - t) * x0 + t * mel
    cond = mel.clone()
    cond[prompt_frames:] = 0.0
    ids = net.tokenize([text])
    with torch.no_grad():
        v = net.transformer(x=xt[None], cond=cond[None], text=ids, time=torch.tensor([t], dtype=torch.float64))[0]
    return float(((v - (mel - x0))[prompt_frames:] ** 2).mean())


def test_the_dpo_loss_matches_a_hand_computation(corpus):
    model, reference = _models(corpus)
    pairs = _pairs()
    usable = ranked(pairs, model.num_channels)
    assert len(usable) == 2  # "same" skipped
    batch = pair_batch(usable)
    draws = PairDraws(torch.tensor([0.3, 0.8], dtype=torch.float64), torch.randn(2, 30, 100, dtype=torch.float64))
    beta = 40.0
    terms = flow_dpo_loss(model, reference, batch, draws, beta)
    texts = ["a cat sat. the dog ran far", "blue sky"]  # the prompt's text joined with the generated one
    winners = [(pairs[0].mel_a, 9), (pairs[1].mel_b, 0)]  # choice "b": b won
    losers = [(pairs[0].mel_b, 9), (pairs[1].mel_a, 0)]
    for i in range(2):
        t, noise = float(draws.time[i]), draws.noise[i]
        e = {}
        for name, (mel, k) in (("w", winners[i]), ("l", losers[i])):
            e[name] = _member_error(model, mel, k, texts[i], t, noise) - _member_error(
                reference, mel, k, texts[i], t, noise
            )
        inside = -beta * (e["w"] - e["l"])
        expected = -math.log(1 / (1 + math.exp(-inside)))
        assert abs(e["w"] - e["l"]) > 1e-4  # the models differ: a margin to check
        assert float(terms.margin[i].detach()) == pytest.approx(e["l"] - e["w"], rel=1e-9, abs=1e-12)
        assert float(terms.loss[i].detach()) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # Gradients reach the model only.
    terms.loss.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in reference.parameters())


def test_beta_to_zero_gives_log_2_and_swapping_winner_and_loser_flips_the_margin(corpus):
    model, reference = _models(corpus)
    pairs = _pairs()
    draws = PairDraws(torch.tensor([0.5, 0.2], dtype=torch.float64), torch.randn(2, 30, 100, dtype=torch.float64))
    batch = pair_batch(ranked(pairs, model.num_channels))
    tiny = flow_dpo_loss(model, reference, batch, draws, beta=1e-9)
    torch.testing.assert_close(tiny.loss, torch.full((2,), math.log(2), dtype=torch.float64), rtol=0, atol=1e-9)
    swapped = [copy.copy(p) for p in pairs]
    for p in swapped:
        p.choice = {"a": "b", "b": "a", "same": "same"}[p.choice]
    base = flow_dpo_loss(model, reference, batch, draws, beta=10.0)
    flipped = flow_dpo_loss(model, reference, pair_batch(ranked(swapped, model.num_channels)), draws, beta=10.0)
    assert (base.margin.abs() > 1e-5).all()
    torch.testing.assert_close(flipped.margin, -base.margin, rtol=1e-12, atol=1e-14)
    # The model as its own reference: no margin, log 2 at any beta.
    same = flow_dpo_loss(model, model, batch, draws, beta=1e4)
    torch.testing.assert_close(same.loss, torch.full((2,), math.log(2), dtype=torch.float64))


def test_bad_pairs_and_settings_are_refused_naming_what(corpus, tmp_path):
    model = random_model(corpus)
    pairs = _pairs()
    with pytest.raises(ValueError, match="no pair has a preference"):
        ranked([pairs[2]], model.num_channels)
    with pytest.raises(ValueError, match=r"pair 0: mels must be \(frames, 100\)"):
        ranked([Pair("a", "", 0, torch.zeros(5, 80), torch.zeros(5, 80), "a")], model.num_channels)
    with pytest.raises(ValueError, match="pair 0: 5 prompt frames leave none generated"):
        ranked([Pair("a", "b", 5, torch.zeros(5, 100), torch.zeros(6, 100), "a")], model.num_channels)
    with pytest.raises(ValueError, match="choice must be"):
        ranked([Pair("a", "", 0, torch.zeros(5, 100), torch.zeros(5, 100), "c")], model.num_channels)
    for beta in (0.0, -1.0, float("nan"), float("inf"), 1e300):  # 1e300: NaN gradients, a model of NaNs
        with pytest.raises(ValueError, match="beta must be"):
            DPOConfig(beta=beta)
    with pytest.raises(ValueError, match="no such preference file"):
        load_pairs(str(tmp_path / "none.jsonl"))
    with pytest.raises(ValueError, match="no pair has a preference"):
        finetune_dpo(model, [pairs[2]], str(tmp_path / "run"), DPOConfig(), progress=False)
    assert not os.path.exists(tmp_path / "run")


def _corpus_pairs(corpus, n=6):
    """Recordings preferred over the same mels with noise added, a prompt of their leading third."""
    ds = MelDataset(corpus)
    g = torch.Generator().manual_seed(2)
    pairs = []
    for i in range(n):
        mel, text = ds[i]
        noisy = mel + 0.8 * torch.randn(mel.shape, generator=g)
        k = mel.shape[0] // 3
        pairs.append(Pair(text, "", k, noisy, mel, "b") if i % 2 else Pair(text, "", k, mel, noisy, "a"))
    return pairs


def _config(**kw):
    base = {"steps": 12, "batch_size": 3, "lr": 3e-3, "warmup": 1, "beta": 50.0}
    return DPOConfig(**split_loop({**base, **kw}, DPO_LOOP))


def test_a_dpo_run_raises_the_margin_starts_at_log_2_and_resumes_exactly(corpus, tmp_path):
    pairs = _corpus_pairs(corpus)
    model = random_model(corpus)
    start = copy.deepcopy(model)
    batch = pair_batch(ranked(pairs, model.num_channels))
    draws = PairDraws.draw(batch, torch.Generator().manual_seed(5))
    summary = finetune_dpo(model, pairs, str(tmp_path / "a"), _config(), progress=False)
    assert summary["finished"] and summary["step"] == 12 and summary["pairs"] == 6
    with open(tmp_path / "a" / "dpo_log.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["loss"]) == pytest.approx(math.log(2), abs=1e-6)  # the model is its reference at step 0
    with torch.no_grad():
        margin = flow_dpo_loss(model, start, batch, draws, beta=50.0).margin
    assert float(margin.mean()) > 0 and int((margin > 0).sum()) >= 5, margin
    assert {"last.pt", "model.safetensors", "dpo_log.csv"} <= set(os.listdir(tmp_path / "a"))

    with pytest.raises(Killed):
        finetune_dpo(random_model(corpus), pairs, str(tmp_path / "b"), _config(save_every=4), on_step=kill_at(6))
    resumed = random_model(corpus)
    finetune_dpo(resumed, pairs, str(tmp_path / "b"), _config(save_every=4), progress=False)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_reward_command_runs_dpo_and_refuses_bad_flags(corpus, tmp_path, capsys):
    import flowtts
    from flowtts.cli import main

    flowtts.save(random_model(corpus), tmp_path / "model.safetensors")
    base = ["reward", "--model", str(tmp_path / "model.safetensors"), "--data", corpus, "-q", "--no-judges"]
    out = ["--out", str(tmp_path / "bad")]
    pairs_file = str(tmp_path / "pairs.jsonl")
    bad = [
        (["--objective", "dpo"], "--objective dpo needs --pairs"),
        (["--objective", "dpo", "--pairs", str(tmp_path / "none.jsonl")], "--pairs: no such preference file"),
        (["--pairs", pairs_file], "--pairs belongs to --objective dpo"),
        (["--beta", "2"], "--beta belongs to --objective dpo"),
    ]
    open(pairs_file, "w").close()
    bad += [
        (["--objective", "dpo", "--pairs", pairs_file, "--beta", b], "--beta must be") for b in ("0", "-1", "1e300")
    ]
    bad += [(["--objective", "dpo", "--pairs", pairs_file], "--pairs " + pairs_file + ": pairs: there are none")]
    for flags in (["--reward", "ctc"], ["--on", "wave"], ["--backprop-steps", "2"], ["--anchor-weight", "0"]):
        bad.append((["--objective", "dpo", "--pairs", pairs_file, *flags], f"{flags[0]} belongs to --objective reward"))
    for flags, message in bad:
        assert main(base + out + flags) == 2, flags
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / "bad")

    store = pytest.importorskip("flowtts.prefs.store")
    os.remove(pairs_file)
    for pair in _corpus_pairs(corpus, n=4):
        fields = {k: getattr(pair, k) for k in ("text", "prompt_text", "prompt_frames", "mel_a", "mel_b", "choice")}
        store.append_pair(pairs_file, store.PreferencePair(**fields))
    run = ["--out", str(tmp_path / "run"), "--objective", "dpo", "--pairs", pairs_file, "--beta", "50"]
    code = main(base + run + ["--steps", "2", "--batch-size", "2", "--sample-steps", "2", "--report-prompts", "2"])
    assert code == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Flow-DPO 2 steps") and "on 4 pairs" in lines[0]
    assert [line.split()[0] for line in lines[3:]] == ["before", "after", "recordings"]
    assert lines[3].split()[1] == "n/a"  # no reward column after a DPO run
    assert {"report.txt", "model.safetensors", "dpo_log.csv"} <= set(os.listdir(tmp_path / "run"))
