"""Fitting the reward model to preference pairs (flowtts.train.prefs) and ``flowtts prefs train``."""

import json
import math
import re

import pytest
import torch

from flowtts.cli import main
from flowtts.cli.prefs_train import FEATURE_CHOICES
from flowtts.prefs.model import FEATURES, load_preference_model
from flowtts.prefs.store import PreferencePair, append_pair
from flowtts.train.prefs import (
    bradley_terry_loss,
    pair_features,
    ranking_accuracy,
    split_pairs,
    train_preference_model,
)

BAND = slice(20, 30)


def toy_pairs(count: int, seed: int, learnable: bool = True, judge: str = "toy-judge", same: int = 0) -> list:
    """Pairs of random log-mels (100 channels, 10 prompt frames, 25-45 frames each).

    ``learnable``: the preferred one's generated frames are louder in a band (+0.5 in 10 channels), and a
    decoy in the prompt frames (+3 in the same band, on a random side) punishes reading them. Otherwise the
    choices are coin flips. The last ``same`` pairs are "same".
    """
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(count):
        mels = [torch.randn(int(torch.randint(25, 46, (1,), generator=g)), 100, generator=g) * 1.5 - 5 for _ in "ab"]
        better = int(torch.randint(0, 2, (1,), generator=g))
        decoy = int(torch.randint(0, 2, (1,), generator=g))
        if learnable:
            mels[better][10:, BAND] += 0.5
        mels[decoy][:10, BAND] += 3.0
        choice = "same" if i >= count - same else "ab"[better]
        pairs.append(
            PreferencePair(
                text="toy",
                prompt_text="prompt",
                prompt_frames=10,
                mel_a=mels[0],
                mel_b=mels[1],
                choice=choice,
                human=judge == "listener",
                judge=judge,
                id=f"{seed}-{i}",
            )
        )
    return pairs


def test_bradley_terry_loss_by_hand():
    score_a = torch.tensor([2.0, 0.0, 1.0])
    score_b = torch.tensor([1.0, 3.0, 1.5])
    target = torch.tensor([1.0, 0.0, 0.5])  # a preferred, b preferred, same
    expected = [
        math.log1p(math.exp(-1.0)),  # -log sigmoid(s_w - s_l) = -log sigmoid(1)
        math.log1p(math.exp(-3.0)),  # -log sigmoid(3)
        0.5 * (math.log1p(math.exp(0.5)) + math.log1p(math.exp(-0.5))),  # same: half of each direction
    ]
    torch.testing.assert_close(bradley_terry_loss(score_a, score_b, target), torch.tensor(expected))
    # A "same" pair's loss is least when the scores agree.
    margins = torch.linspace(-2, 2, 41)
    same = bradley_terry_loss(margins, torch.zeros(41), torch.full((41,), 0.5))
    assert int(same.argmin()) == 20


def test_ranking_accuracy_counts_decided_pairs_and_half_ties():
    score_a = torch.tensor([2.0, 0.0, 1.0, 5.0, 1.0])
    score_b = torch.tensor([1.0, 3.0, 1.5, 0.0, 1.0])
    target = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0])  # right, right, wrong, (same: left out), tie
    assert ranking_accuracy(score_a, score_b, target) == pytest.approx(2.5 / 4)
    with pytest.raises(ValueError, match="all 'same'"):
        ranking_accuracy(score_a[:1], score_b[:1], torch.tensor([0.5]))


def test_split_is_seeded_disjoint_and_complete():
    train, held = split_pairs(50, 0.2, seed=3)
    assert len(held) == 10 and sorted(train + held) == list(range(50))
    assert split_pairs(50, 0.2, seed=3) == (train, held)
    assert split_pairs(50, 0.2, seed=4)[1] != held
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"heldout_fraction must lie in \(0, 1\)"):
            split_pairs(50, bad, seed=0)
    with pytest.raises(ValueError, match="too few pairs for a held-out split"):
        split_pairs(2, 0.2, seed=0)


def test_only_the_generated_frames_are_read():
    from flowtts.prefs.model import PreferenceModel

    model = PreferenceModel(None, features="stats")
    pairs = toy_pairs(3, seed=1)
    before = pair_features(model, pairs)
    for p in pairs:
        p.mel_a[:10] += 7.0  # the prompt frames
    after = pair_features(model, pairs)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    p = pairs[0]
    alone = model.pooled_features(p.mel_b[None, 10:], torch.tensor([p.mel_b.shape[0] - 10]))
    torch.testing.assert_close(before[1][:1], alone)  # batching by length changes nothing


def test_learns_a_separable_preference(tmp_path):
    """Known answer: the louder band in the generated frames decides; held-out accuracy above 0.9."""
    out = tmp_path / "reward.safetensors"
    summary = train_preference_model(toy_pairs(160, seed=0), out, heldout_fraction=0.25, seed=0)
    assert summary["heldout_accuracy"] > 0.9, summary
    assert summary["train_accuracy"] > 0.9
    assert summary["pairs"] == 160 and summary["heldout_pairs"] == 40 and summary["train_pairs"] == 120
    model = load_preference_model(out)
    assert model.metadata["heldout_accuracy"] == f"{summary['heldout_accuracy']:.4f}"
    assert model.metadata["feature_source"] == "recognizer:builtin"
    # The band decides: raising it in a fresh mel raises the score.
    mel = torch.randn(1, 30, 100, generator=torch.Generator().manual_seed(9)) * 1.5 - 5
    louder = mel.clone()
    louder[..., BAND] += 0.5
    lens = torch.tensor([30])
    with torch.no_grad():
        assert float(model.score(louder, lens)) > float(model.score(mel, lens))


def test_random_choices_stay_near_chance_on_held_out_pairs(tmp_path):
    """The accuracy means something: coin-flip choices are fitted on the training pairs, not on held-out ones."""
    summary = train_preference_model(
        toy_pairs(300, seed=1, learnable=False), tmp_path / "r.safetensors", heldout_fraction=0.5, seed=0
    )
    assert summary["train_accuracy"] > 0.9  # the head can memorise ...
    assert abs(summary["heldout_accuracy"] - 0.5) < 0.12, summary  # ... but not generalise (150 pairs: sd 0.04)


def test_the_file_records_what_it_was_trained_on(tmp_path):
    people = tmp_path / "people.jsonl"
    machine = tmp_path / "machine.jsonl"
    for pair in toy_pairs(12, seed=2, judge="listener", same=3):
        append_pair(people, pair)
    for pair in toy_pairs(8, seed=3, judge="ctc-judge"):
        append_pair(machine, pair)
    out = tmp_path / "reward.safetensors"
    summary = train_preference_model([people, machine], out, features="stats", heldout_fraction=0.3, steps=20)
    assert summary["human"] is False and summary["judges"] == ["ctc-judge", "listener"]
    assert summary["pairs"] == 20 and summary["same_pairs"] == 3 and summary["heldout_pairs"] == 6
    meta = load_preference_model(out).metadata
    assert meta["human"] == "false"
    assert json.loads(meta["judges"]) == ["ctc-judge", "listener"]
    recorded = json.loads(meta["pairs"])
    assert recorded["files"] == [{"file": "people.jsonl", "pairs": 12}, {"file": "machine.jsonl", "pairs": 8}]
    assert recorded["count"] == 20 and recorded["heldout"] == 6
    assert meta["features"] == "stats" and meta["feature_source"] == "none"
    assert meta["train_accuracy"] == f"{summary['train_accuracy']:.4f}"
    trained = json.loads(meta["trained_with"])
    assert trained["steps"] == 20 and trained["heldout_fraction"] == 0.3 and "0.5" in trained["loss"]

    only_people = train_preference_model(people, tmp_path / "p.safetensors", features="stats", steps=5)
    assert only_people["human"] is True
    assert load_preference_model(tmp_path / "p.safetensors").metadata["human"] == "true"


def test_a_run_is_determined_by_its_seed_and_leaves_the_global_generator_alone(tmp_path):
    from safetensors.torch import load_file

    pairs = toy_pairs(20, seed=6)
    state = torch.get_rng_state()
    runs = [tmp_path / f"{name}.safetensors" for name in ("one", "two", "other")]
    for path, seed in zip(runs, (0, 0, 1)):
        train_preference_model(pairs, path, features="stats", steps=10, seed=seed)
    assert torch.equal(torch.get_rng_state(), state)
    one, two, other = (load_file(str(path)) for path in runs)
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(one["head.1.weight"], other["head.1.weight"])


def test_bad_input_is_refused(tmp_path):
    out = tmp_path / "r.safetensors"
    kwargs = dict(features="stats", steps=2)
    with pytest.raises(ValueError, match="no preference pairs"):
        train_preference_model([], out, **kwargs)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="no preference pairs in .*empty.jsonl"):
        train_preference_model(empty, out, **kwargs)
    with pytest.raises(ValueError, match="all 10 pairs are 'same'"):
        train_preference_model(toy_pairs(10, seed=0, same=10), out, **kwargs)
    with pytest.raises(ValueError, match=r"heldout_fraction must lie in \(0, 1\)"):
        train_preference_model(toy_pairs(10, seed=0), out, heldout_fraction=1.0, **kwargs)
    with pytest.raises(ValueError, match="too few pairs for a held-out split"):
        train_preference_model(toy_pairs(2, seed=0), out, **kwargs)
    with pytest.raises(ValueError, match="held-out pairs .* are all 'same'"):
        train_preference_model(toy_pairs(10, seed=0, same=9), out, heldout_fraction=0.1, seed=0, **kwargs)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        train_preference_model(toy_pairs(10, seed=0), out, features="stats", steps=0)
    with pytest.raises(ValueError, match="features must be one of"):
        train_preference_model(toy_pairs(10, seed=0), out, features="loudness")
    with pytest.raises(ValueError, match="out_path must end in .safetensors"):
        train_preference_model(toy_pairs(10, seed=0), tmp_path / "r.pt", **kwargs)
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("hello\n")
    with pytest.raises(ValueError, match="is not a preferences file"):
        train_preference_model(not_ours, out, **kwargs)
    assert not out.exists()


def test_cli_trains_and_prints_both_accuracies(tmp_path, capsys):
    assert FEATURE_CHOICES == FEATURES
    pairs = tmp_path / "pairs.jsonl"
    for pair in toy_pairs(30, seed=4):
        append_pair(pairs, pair)
    out = tmp_path / "reward.safetensors"
    code = main(["prefs", "train", "--pairs", str(pairs), "--out", str(out), "--steps", "50", "--seed", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "train accuracy" in printed and "held-out accuracy" in printed and str(out) in printed
    meta = load_preference_model(out).metadata
    assert f"held-out accuracy {float(meta['heldout_accuracy']):.3f}" in printed
    assert json.loads(meta["trained_with"])["seed"] == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--heldout-fraction", "0"], r"--heldout-fraction must lie in \(0, 1\)"),
        (["--heldout-fraction", "1.2"], r"--heldout-fraction must lie in \(0, 1\)"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--lr", "-1"], "--lr must be positive"),
    ],
)
def test_cli_refuses_bad_flags_in_one_line(tmp_path, capsys, flags, message):
    pairs = tmp_path / "pairs.jsonl"
    append_pair(pairs, toy_pairs(1, seed=0)[0])
    code = main(["prefs", "train", "--pairs", str(pairs), "--out", str(tmp_path / "r.safetensors"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_cli_refuses_bad_files_in_one_line(tmp_path, capsys):
    same = tmp_path / "same.jsonl"
    for pair in toy_pairs(5, seed=0, same=5):
        append_pair(same, pair)
    few = tmp_path / "few.jsonl"
    for pair in toy_pairs(2, seed=0):
        append_pair(few, pair)
    notes = tmp_path / "notes.txt"
    notes.write_text("not preferences\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    cases = {
        same: "are 'same'",
        few: "too few pairs for a held-out split",
        notes: "is not a preferences file",
        empty: "no preference pairs",
        tmp_path / "missing.jsonl": "not found",
    }
    for path, message in cases.items():
        code = main(["prefs", "train", "--pairs", str(path), "--out", str(tmp_path / "r.safetensors")])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert message in err and err.startswith("flowtts prefs: error:"), err


def test_a_file_given_twice_counts_each_answer_once(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    for pair in toy_pairs(10, seed=7):
        append_pair(pairs, pair)
    summary = train_preference_model([pairs, pairs], tmp_path / "r.safetensors", features="stats", steps=2)
    assert summary["pairs"] == 10 and summary["heldout_pairs"] == 2  # no answer both trained on and held out
    recorded = json.loads(load_preference_model(tmp_path / "r.safetensors").metadata["pairs"])
    assert recorded["files"] == [{"file": "pairs.jsonl", "pairs": 10}, {"file": "pairs.jsonl", "pairs": 0}]


def test_cli_refuses_an_out_it_cannot_write_before_any_work(tmp_path, capsys, monkeypatch):
    import flowtts.train.prefs as prefs_training

    pairs = tmp_path / "pairs.jsonl"
    for pair in toy_pairs(10, seed=0):
        append_pair(pairs, pair)
    monkeypatch.setattr(prefs_training, "_read", lambda *_: pytest.fail("read the pairs before checking --out"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "folder.safetensors").mkdir()
    cases = {
        tmp_path / "missing" / "r.safetensors": "does not exist",
        a_file / "r.safetensors": "is a file, not a directory",
        tmp_path / "folder.safetensors": "is a folder",
    }
    for out, message in cases.items():
        code = main(["prefs", "train", "--pairs", str(pairs), "--out", str(out), "--steps", "2"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "missing").exists()
