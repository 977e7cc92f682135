import copy
import dataclasses
import os

import pytest
import torch

from flowtts.train.data import MelDataset
from flowtts.train.prompts import Prompts, draw_prompts, sample_with
from flowtts.train.reward import REWARD_LOOP, RewardConfig, evaluate, finetune, resolve_reward, timbre_reward
from train.helpers import Killed, kill_at, prepared_corpus, random_model, run_two_ranks, split_loop


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("rcorpus")))


def _model(corpus):
    return random_model(corpus)


def _config(**kw):
    base = dict(
        reward="timbre", sample_steps=2, cfg_strength=0.0, steps=20, batch_size=3, lr=3e-3, warmup=2, save_every=10
    )
    return RewardConfig(**split_loop({**base, **kw}, REWARD_LOOP))


def _prompts(lens, durations, channels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = max(durations)
    return Prompts(
        cond=torch.zeros(len(lens), max(lens), channels),
        lens=torch.tensor(lens),
        texts=["x"] * len(lens),
        durations=torch.tensor(durations),
        noise=torch.randn(len(lens), n, channels, generator=g),
    )


def _reference_timbre(mel, lens, durations):
    """Loop-per-utterance form of the timbre reward, in float64."""
    out = []
    for b, (k, n) in enumerate(zip(lens, durations)):
        ref, gen = mel[b, :k].double(), mel[b, k:n].double()
        d_mean = gen.mean(0) - ref.mean(0)
        d_std = gen.std(0, unbiased=False) - ref.std(0, unbiased=False)
        out.append(-(d_mean**2 + d_std**2).mean())
    return torch.stack(out)


def test_timbre_reward_matches_a_per_utterance_reference_and_peaks_at_matching_statistics():
    prompts = _prompts([3, 5], [9, 8])
    mel = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mel[1, 8:] = 100.0  # padding after the duration is ignored
    got = timbre_reward(mel, prompts)
    torch.testing.assert_close(got, _reference_timbre(mel, [3, 5], [9, 8]), rtol=1e-6, atol=1e-8)
    assert (got < 0).all()
    # Generated frames that repeat the reference frames (same mean and spread) score the maximum, 0.
    same = mel.clone()
    same[0, 3:6], same[0, 6:9] = mel[0, :3], mel[0, :3]
    assert abs(float(timbre_reward(same, prompts)[0])) < 1e-6


def test_timbre_reward_gradient_matches_finite_differences():
    prompts = _prompts([2, 3], [6, 5])
    mel = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: timbre_reward(m, prompts), (mel,))


def test_reward_fine_tuning_raises_the_reward_on_fixed_prompts(corpus, tmp_path):
    ds = MelDataset(corpus)
    model = _model(corpus)
    config = _config(anchor_weight=0.0, steps=25)
    prompts = draw_prompts(ds, list(range(len(ds))), model.num_channels, config, torch.Generator().manual_seed(9))
    sampling = config.recipe(model).sample_kwargs()

    def mean_reward(m):
        return float(timbre_reward(sample_with(m, prompts, cache=True, **sampling), prompts).mean())

    before = mean_reward(model)
    summary = finetune(model, ds, str(tmp_path), config, progress=False)
    assert summary["step"] == 25 and summary["finished"]
    after = mean_reward(model)
    assert after > before + 0.3 * abs(before), (before, after)
    assert {"last.pt", "model.safetensors", "reward_log.csv"} <= set(os.listdir(tmp_path))
    assert torch.is_grad_enabled()  # grad mode restored for the caller


def test_the_anchor_holds_the_model_near_its_starting_samples(corpus, tmp_path):
    ds = MelDataset(corpus)
    start = _model(corpus)
    prompts = draw_prompts(ds, list(range(len(ds))), start.num_channels, _config(), torch.Generator().manual_seed(9))
    sampling = _config().recipe(start).sample_kwargs()
    origin = sample_with(start, prompts, cache=True, **sampling)
    mask = prompts.generated_mask()[..., None]
    drift, rewards = {}, {}
    for weight in (0.0, 30.0):
        model = copy.deepcopy(start)
        finetune(model, ds, str(tmp_path / f"w{weight}"), _config(anchor_weight=weight, steps=15), progress=False)
        out = sample_with(model, prompts, cache=True, **sampling)
        drift[weight] = float(((out - origin) ** 2 * mask).sum() / mask.sum())
        rewards[weight] = float(timbre_reward(out, prompts).mean())
    assert drift[30.0] < 0.5 * drift[0.0], drift
    assert rewards[30.0] < rewards[0.0], rewards


def test_a_callable_reward_and_truncated_checkpointed_backprop_train_the_model(corpus, tmp_path):
    ds = MelDataset(corpus)
    model = _model(corpus)
    start = copy.deepcopy(model.state_dict())
    seen = []

    def loudness(mel, prompts):  # any differentiable (b,) function of the output
        seen.append(mel.requires_grad)
        return mel.mean(dim=(1, 2))

    config = _config(steps=3, sample_steps=4, backprop_steps=1, grad_checkpoint=True, reward="unused")
    finetune(model, ds, str(tmp_path), config, reward=loudness, progress=False)
    assert seen == [True, True, True]
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_fine_tuned_students_keep_their_sampling_settings(corpus, tmp_path):
    import flowtts
    from flowtts.checkpoints.loader import read_metadata
    from flowtts.synthesis import recommended_options
    from flowtts.train.distill_config import student_recipe

    student = _model(corpus)
    student.metadata = student_recipe(3, "custom", times=(0, 0.1, 0.5, 1)).to_metadata()  # as a distilled file
    config = _config(steps=2, sample_steps=None, cfg_strength=None)
    assert config.recipe(student).t_grid == (0.0, 0.1, 0.5, 1.0)
    finetune(student, MelDataset(corpus), str(tmp_path), config, progress=False)
    path = str(tmp_path / "model.safetensors")
    meta = read_metadata(path)
    assert "reward_config" in meta and meta["reward_step"] == "2"
    assert recommended_options(flowtts.load(path)).t_grid == (0.0, 0.1, 0.5, 1.0)


def test_reward_fine_tuning_resumes_exactly(corpus, tmp_path):
    ds = MelDataset(corpus)
    config = _config(steps=8, save_every=3)
    reference = _model(corpus)
    finetune(reference, ds, str(tmp_path / "a"), config, progress=False)

    kill = kill_at(5)

    with pytest.raises(Killed):
        finetune(_model(corpus), ds, str(tmp_path / "b"), config, progress=False, on_step=kill)
    resumed = _model(corpus)
    finetune(resumed, ds, str(tmp_path / "b"), config, progress=False)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import torch.distributed as dist
from flowtts.train.data import MelDataset
from flowtts.train.loop import LoopSettings
from flowtts.train.reward import RewardConfig, finetune
from train.helpers import random_model
ds = MelDataset({corpus!r})
model = random_model({corpus!r})
finetune(model, ds, {out!r}, RewardConfig(**{config!r}), progress=False)
rank = dist.get_rank() if dist.is_initialized() else 0
torch.save(model.state_dict(), {out!r} + f"/params{{rank}}.pt")
"""


def test_two_process_fine_tuning_keeps_ranks_identical_and_matches_one_process(corpus, tmp_path):
    config = dict(reward="timbre", sample_steps=2, cfg_strength=0.0, steps=3, batch_size=4, lr=3e-3, warmup=1)
    config = split_loop(config, REWARD_LOOP)
    a, b = run_two_ranks(DDP_SCRIPT, corpus, tmp_path, config)
    single = _model(corpus)
    finetune(single, MelDataset(corpus), str(tmp_path / "single"), RewardConfig(**config), progress=False)
    for name, value in single.state_dict().items():
        assert torch.equal(a[name], b[name]), name
        torch.testing.assert_close(a[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.equal(a[k], v) for k, v in _model(corpus).state_dict().items())


def test_evaluate_scores_each_model_and_the_recordings(corpus):
    ds = MelDataset(corpus)
    model = _model(corpus)
    config = _config()
    prompts = draw_prompts(ds, [0, 1, 2], model.num_channels, config, torch.Generator().manual_seed(0))
    sampling = config.recipe(model).sample_kwargs()
    models = {"a": (model, sampling), "b": (copy.deepcopy(model), sampling)}
    rows = evaluate(models, prompts, timbre_reward, reference="a")
    assert [r["system"] for r in rows] == ["a", "b", "recordings"]
    assert rows[0]["distance"] == 0.0 and rows[1]["distance"] == 0.0 and rows[2]["distance"] > 0
    expected = float(timbre_reward(sample_with(model, prompts, cache=True, **sampling), prompts).mean())
    assert rows[0]["reward"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="reference"):
        evaluate({"a": (model, sampling)}, prompts, timbre_reward, reference="c")


def test_bad_settings_are_refused_before_anything_is_written(corpus, tmp_path):
    model = _model(corpus)
    ds = MelDataset(corpus)
    with pytest.raises(ValueError, match="anchor_weight"):
        RewardConfig(anchor_weight=-1.0)
    with pytest.raises(ValueError, match="backprop_steps"):
        _config(backprop_steps=0)
    with pytest.raises(ValueError, match="pair_gap / pair_rms: the pair gap"):
        RewardConfig(reward="ctc", pair_gap=(0.3, 0.1))
    for name in ("speaker", "timbre"):
        with pytest.raises(ValueError, match=f"the {name} reward compares with the prompt's audio; unprompted"):
            RewardConfig(reward=name, prompts="unprompted")
    with pytest.raises(ValueError, match="reward must be one of"):
        resolve_reward("loudness")
    with pytest.raises(ValueError, match="cannot import module"):
        resolve_reward("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="no callable"):
        resolve_reward("os.path:not_there")
    with pytest.raises(ValueError, match=r"must take \(mel, prompts\) .*it takes \(p\)"):
        resolve_reward("os.path:basename")  # callable, but no reward: refused before the run, not at its first step
    assert resolve_reward("flowtts.train.reward:timbre_reward") is timbre_reward
    model.train()
    with pytest.raises(ValueError, match="exceeds the 2 solver steps"):
        finetune(model, ds, str(tmp_path / "x"), _config(backprop_steps=3), progress=False)
    assert model.training  # a refused run leaves the caller's mode alone
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        finetune(model, ds, str(tmp_path / "y"), _config(), reward=lambda mel, p: mel.sum(), progress=False)
    assert not os.path.exists(tmp_path / "x")
    assert not os.path.exists(tmp_path / "y" / "last.pt")
    for row in ds.items:  # as an older flowtts prepared it: pairs cannot be laid out with a gap
        del row["speech"]
    gap = _config(prompts="pair", pair_gap=(0.1, 0.2))
    with pytest.raises(ValueError, match="no speech bounds"):
        finetune(model, ds, str(tmp_path / "z"), gap, reward=lambda mel, p: mel.mean((1, 2)), progress=False)
    assert not os.path.exists(tmp_path / "z")
    assert torch.is_grad_enabled()


def test_reward_command_fine_tunes_and_reports(corpus, tmp_path, capsys):
    import flowtts
    from flowtts.cli import main

    flowtts.save(_model(corpus), tmp_path / "model.safetensors")
    base = ["reward", "--model", str(tmp_path / "model.safetensors"), "--data", corpus, "-q", "--no-judges"]
    run = ["--out", str(tmp_path / "run"), "--reward", "timbre", "--sample-steps", "2", "--cfg", "0"]
    code = main(base + run + ["--steps", "4", "--batch-size", "2", "--lr", "3e-3", "--report-prompts", "3"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("fine-tuned 4 steps")
    systems = [line.split()[0] for line in lines[3:]]
    assert systems == ["before", "after", "recordings"]
    assert {"report.txt", "model.safetensors", "reward_log.csv", "last.pt"} <= set(os.listdir(tmp_path / "run"))
    assert main(base + ["--out", str(tmp_path / "bad"), "--reward", "nonsense"]) == 2
    assert "reward must be one of" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "bad"), "--report-prompts", "-1"]) == 2
    assert not os.path.exists(tmp_path / "bad")


@pytest.mark.skipif(not __import__("importlib").util.find_spec("resemblyzer"), reason="resemblyzer not installed")
def test_the_speaker_reward_is_built_for_the_model_and_scores_each_utterance(corpus):
    from flowtts.eval.speaker import SpeakerSimilarity

    model = _model(corpus)
    reward = resolve_reward("speaker", model)
    assert isinstance(reward, SpeakerSimilarity)
    ds = MelDataset(corpus)
    prompts = draw_prompts(ds, [0, 1, 2], model.num_channels, _config(), torch.Generator().manual_seed(0))
    # Built for the model: resemblyzer's trained encoder (not a fresh one), fed from this model's mel front end.
    from flowtts.eval.speaker import resemblyzer_weights

    trained = torch.load(resemblyzer_weights(), map_location="cpu", weights_only=True)
    trained = trained.get("model_state", trained)
    for name, value in reward.encoder.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert reward.features.to_bins.shape[1] == model.num_channels
    assert reward.features.frame_rate == model.mel_spec.target_sample_rate / model.mel_spec.hop_length
    with torch.no_grad():
        scores = reward(prompts.data, prompts)
        assert scores.shape == (3,)
        # Each utterance on its own: its score alone, frames past its duration ignored.
        padded = prompts.data.clone()
        for b in range(3):
            alone = prompts.rows([b])
            assert torch.allclose(reward(alone.data, alone), scores[b : b + 1], atol=1e-6), b
            padded[b, int(prompts.durations[b]) :] = 50.0
        assert torch.allclose(reward(padded, prompts), scores, atol=1e-6)
        # The cosine of unit embeddings: generated frames that are the reference frames score exactly 1,
        # the recordings' own continuations less (and not all alike).
        lens = prompts.lens.tolist()
        echo = torch.cat((prompts.data[:, : max(lens)], prompts.data[:, : max(lens)]), dim=1)
        for b, k in enumerate(lens):
            echo[b, k : 2 * k] = prompts.data[b, :k]
        echoed = dataclasses.replace(prompts, durations=2 * prompts.lens)
        assert torch.allclose(reward(echo, echoed), torch.ones(3), atol=1e-5)
    assert (scores < 1 - 1e-3).all() and float(scores.max() - scores.min()) > 1e-3, scores
    with pytest.raises(ValueError, match="pass model="):
        resolve_reward("speaker")


# ---------------------------------------------------------------------------- the CTC reward


def _ctc_recognizer(seed=0, dtype=torch.float32):
    from flowtts.config import MelConfig
    from flowtts.eval.recognizer import CTCRecognizer, RecognizerConfig

    torch.manual_seed(seed)
    config = RecognizerConfig(channels=16, hidden=8, gru_layers=1, dropout=0.0, mel=MelConfig())
    return CTCRecognizer(config).to(dtype).eval()


def test_pair_prompts_say_the_second_text_after_the_first_recording(corpus):
    from flowtts.train.prompts import draw_pair_prompts

    ds = MelDataset(corpus)
    prompts = draw_pair_prompts(ds, [(0, 1), (2, 0)], 100, torch.Generator().manual_seed(0))
    (m0, t0), (m1, t1), (m2, t2) = ds[0], ds[1], ds[2]
    assert prompts.texts == [f"{t0}. {t1}", f"{t2}. {t0}"] and prompts.targets == [t1, t0]
    assert prompts.lens.tolist() == [m0.shape[0], m2.shape[0]]
    assert prompts.durations.tolist() == [m0.shape[0] + m1.shape[0], m2.shape[0] + m0.shape[0]]
    torch.testing.assert_close(prompts.data[0, : m0.shape[0] + m1.shape[0]], torch.cat((m0, m1)))
    assert prompts.rows([1]).targets == [t0]


def test_the_ctc_reward_reads_only_the_generated_frames(corpus):
    from flowtts.train.prompts import draw_pair_prompts
    from flowtts.train.reward import CTCReward

    ds = MelDataset(corpus)
    prompts = draw_pair_prompts(ds, [(0, 1), (2, 3)], 100, torch.Generator().manual_seed(0))
    reward = CTCReward(_ctc_recognizer())
    mel = prompts.data.clone()
    got = reward(mel, prompts)
    changed = mel.clone()
    changed[:, : int(prompts.lens.min())] = 7.0  # the prompts' frames do not count
    torch.testing.assert_close(reward(changed, prompts), got)
    for i in range(2):  # each row is the recogniser's loss on that row's generated frames alone
        start, end = int(prompts.lens[i]), int(prompts.durations[i])
        alone, _ = reward.recognizer.ctc_loss(mel[i : i + 1, start:end], None, [prompts.targets[i]])
        torch.testing.assert_close(got[i], -alone[0])
    with pytest.raises(ValueError, match="needs prompts that know their target"):
        reward(mel, dataclasses.replace(prompts, targets=None))
    from flowtts.train.prompts import draw_unprompted_prompts

    unprompted = draw_unprompted_prompts(ds, [0, 2], 100, torch.Generator().manual_seed(0))
    mel = unprompted.data.clone()
    mel[:, 0] = 7.0  # the no-audio frame does not count either
    for i, row in enumerate([0, 2]):  # the recording's own frames, its own text
        alone, _ = reward.recognizer.ctc_loss(ds[row][0][None], None, [ds[row][1]])
        torch.testing.assert_close(reward(mel, unprompted)[i], -alone[0])


def test_the_ctc_reward_warns_and_counts_what_it_cannot_score(corpus):
    from flowtts.train.prompts import draw_pair_prompts
    from flowtts.train.reward import CTCReward

    ds = MelDataset(corpus)
    prompts = draw_pair_prompts(ds, [(0, 1), (2, 3)], 100, torch.Generator().manual_seed(0))
    prompts.targets = [prompts.targets[0], "x" * 500]  # far more characters than generated frames
    reward = CTCReward(_ctc_recognizer())
    with pytest.warns(UserWarning, match="1 utterance"):
        got = reward(prompts.data, prompts)
    assert got[1] == 0 and torch.isfinite(got).all() and reward.skipped == 1


def test_ctc_reward_gradient_through_the_sampler_matches_finite_differences(corpus):
    from flowtts.train.prompts import draw_pair_prompts
    from flowtts.train.reward import CTCReward

    ds = MelDataset(corpus)
    model = _model(corpus).double()
    prompts = draw_pair_prompts(ds, [(0, 1)], 100, torch.Generator().manual_seed(0))
    prompts = dataclasses.replace(prompts, cond=prompts.cond.double(), noise=prompts.noise.double())
    reward = CTCReward(_ctc_recognizer(dtype=torch.float64), model)
    params = [p for name, p in model.named_parameters() if name.endswith("proj_out.weight")]
    assert params, "the test needs the output projection"
    weight = params[0]
    direction = torch.randn(weight.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def value():
        out = sample_with(model, prompts, cache=False, steps=2, cfg_strength=1.5, sway_sampling_coef=None)
        return reward(out, prompts).sum()

    model.eval()
    (grad,) = torch.autograd.grad(value(), weight)
    eps = 1e-6
    with torch.no_grad():
        weight.add_(eps * direction)
        plus = float(value())
        weight.sub_(2 * eps * direction)
        minus = float(value())
        weight.add_(eps * direction)
    numeric = (plus - minus) / (2 * eps)
    analytic = float((grad * direction).sum())
    assert abs(analytic) > 1e-6
    assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), (numeric, analytic)


def test_ctc_reward_fine_tuning_lowers_the_ctc_loss_on_held_out_pairs(corpus, tmp_path):
    from flowtts.eval.recognizer import save_recognizer
    from flowtts.train.reward import CTCReward, heldout_prompts

    ds = MelDataset(corpus)
    path = str(tmp_path / "rec.safetensors")
    save_recognizer(_ctc_recognizer(seed=1), path)
    model = _model(corpus)
    config = _config(reward="ctc", recognizer=path, anchor_weight=0.0, steps=15, batch_size=2, lr=5e-3)
    assert config.prompts == "pair"
    held = heldout_prompts(ds, 6, config, model.num_channels, seed=5)
    reward = resolve_reward("ctc", model, path)
    sampling = config.recipe(model).sample_kwargs()

    def held_out_loss(m):
        return -float(reward(sample_with(m, held, cache=True, **sampling), held).mean())

    before = held_out_loss(model)
    finetune(model, ds, str(tmp_path / "run"), config, progress=False)
    after = held_out_loss(model)
    assert isinstance(reward, CTCReward)
    assert after < before - 0.1, (before, after)


def test_a_recogniser_for_other_mels_is_refused_naming_both(corpus, tmp_path):
    from flowtts.config import MelConfig
    from flowtts.eval.recognizer import CTCRecognizer, RecognizerConfig, save_recognizer

    path = str(tmp_path / "rec80.safetensors")
    save_recognizer(
        CTCRecognizer(RecognizerConfig(channels=8, hidden=4, gru_layers=1, mel=MelConfig(n_mel_channels=80))), path
    )
    with pytest.raises(ValueError, match="recogniser reads mels .*'n_mel_channels': 80.* but the model makes .*100"):
        resolve_reward("ctc", _model(corpus), path)
