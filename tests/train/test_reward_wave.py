"""Rewards on the rendered wave (``flowtts reward --on wave``): gradients through vocoder and sampler."""

import copy
import dataclasses
import math
import os

import pytest
import torch

from flowtts.train.data import MelDataset
from flowtts.train.prompts import draw_prompts, sample_with, velocity_field_of
from flowtts.train.rendering import (
    LoudnessReward,
    Rendered,
    WaveReward,
    level_db,
    load_vocoder,
    render,
    stft_distance,
    wave_stft_reward,
)
from flowtts.train.reward import REWARD_LOOP, RewardConfig, evaluate, finetune, format_rows, resolve_reward
from flowtts.vocoder.files import save_vocoder
from flowtts.vocoder.network import MelVocoder, VocoderConfig
from train.helpers import prepared_corpus, random_model, split_loop

HOP = 256


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("wcorpus")))


def _small_vocoder(dtype=torch.float64, seed=0, **mel):
    from flowtts.config import MelConfig

    torch.manual_seed(seed)
    vocoder = MelVocoder(VocoderConfig(mel=MelConfig(**mel), dim=16, blocks=1, mult=2.0))
    return vocoder.to(dtype).eval().requires_grad_(False)


def _prompts(corpus, model, rows=(0, 1), dtype=torch.float64):
    ds = MelDataset(corpus)
    config = RewardConfig(reward="loudness", on="wave")
    prompts = draw_prompts(ds, list(rows), model.num_channels, config, torch.Generator().manual_seed(4))
    return dataclasses.replace(
        prompts, cond=prompts.cond.to(dtype), noise=prompts.noise.to(dtype), data=prompts.data.to(dtype)
    )


def _config(**kw):
    base = dict(reward="loudness", on="wave", sample_steps=2, cfg_strength=0.0, steps=6, batch_size=3, lr=3e-3)
    return RewardConfig(**split_loop({**base, **kw}, REWARD_LOOP))


GRID = [0.0, 0.25, 0.625, 1.0]  # exact in float32 (the solver reads a list of times as float32)
SAMPLING = dict(steps=3, t_grid=GRID, cfg_strength=1.5, sway_sampling_coef=None)


def _grads(model, value) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def test_level_and_stft_distance_know_their_answers():
    t = torch.arange(24_000, dtype=torch.float64) / 24_000
    sine = 0.5 * torch.sin(2 * math.pi * 440 * t)  # RMS 0.5 / sqrt(2)
    assert float(level_db(sine)) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=1e-6)
    assert float(stft_distance(sine, sine)) == pytest.approx(0.0, abs=1e-9)
    assert float(stft_distance(2 * sine, sine)) > float(stft_distance(1.1 * sine, sine)) > 0
    # Loudness: minus the squared dB distance of the generated part (after ``starts``) to the target.
    waves = [torch.cat((torch.zeros(100, dtype=torch.float64), sine)), 0.1 * sine]
    rendered = Rendered(waves, [100, 0], 24_000, None, lambda m: m)
    got = LoudnessReward(-20.0)(rendered, None)
    expected = [-((20 * math.log10(a / math.sqrt(2)) + 20.0) ** 2) for a in (0.5, 0.05)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-6)  # 1e-10 floor


def test_wave_stft_reward_is_zero_for_the_recording_and_reads_only_generated_samples(corpus):
    model = random_model(corpus).double()
    prompts = _prompts(corpus, model)
    vocoder = _small_vocoder()
    reward = WaveReward(vocoder, wave_stft_reward)
    torch.testing.assert_close(reward(prompts.data, prompts), torch.zeros(2, dtype=torch.float64))
    other = prompts.data.clone()
    other[:, : int(prompts.lens.min()) - 4] += 3.0  # prompt frames far from the generated part barely matter ...
    generated = prompts.data.clone()
    generated[0, int(prompts.lens[0]) + 2 :] += 1.0  # ... the generated frames do
    assert float(reward(generated, prompts)[0]) < -0.05
    assert float(reward(generated, prompts)[1]) == pytest.approx(0.0, abs=1e-9)
    assert float(reward(other, prompts).abs().max()) < 0.2 * float(-reward(generated, prompts)[0])
    # Each utterance is rendered as if alone: padding after its duration is not heard.
    padded = prompts.data.clone()
    padded[1, int(prompts.durations[1]) :] = 40.0
    rendered = render(vocoder, padded, prompts)
    alone = vocoder(prompts.data[1, : int(prompts.durations[1])].T[None])[0]
    torch.testing.assert_close(rendered.waves[1], alone)
    assert rendered.starts == [int(k) * HOP for k in prompts.lens]
    assert rendered.waves[1].shape[0] == (int(prompts.durations[1]) - 1) * HOP


def test_wave_reward_gradients_through_the_sampler_match_checkpointed_and_an_independent_loop(corpus):
    model = random_model(corpus).double()
    prompts = _prompts(corpus, model)
    vocoder = _small_vocoder()
    combined = WaveReward(vocoder, lambda r, p: wave_stft_reward(r, p) + LoudnessReward(-20.0)(r, p) / 100)

    def value(reward, **kw):
        return reward(sample_with(model, prompts, cache=False, **SAMPLING, **kw), prompts).sum()

    plain = _grads(model, value(combined))
    checkpointed = _grads(model, value(combined, grad_checkpoint=True))
    assert plain.abs().max() > 1e-6
    torch.testing.assert_close(checkpointed, plain, rtol=1e-9, atol=1e-12)
    truncated = _grads(model, value(combined, backprop_steps=2))
    truncated_checkpointed = _grads(model, value(combined, backprop_steps=2, grad_checkpoint=True))
    torch.testing.assert_close(truncated_checkpointed, truncated, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(truncated, plain)

    # An independent reference: Euler steps written out over the velocity field, each utterance vocoded by
    # hand, the loudness computed from its definition, and plain autograd.grad through all of it.
    loudness = WaveReward(vocoder, LoudnessReward(-20.0))
    library = _grads(model, value(loudness))

    def by_hand():
        field = velocity_field_of(model, prompts, cfg_strength=1.5)
        x = prompts.noise.clone()
        for t0, t1 in zip(GRID[:-1], GRID[1:]):
            x = x + (t1 - t0) * field(torch.tensor(t0, dtype=x.dtype), x)
        out = torch.where(field.cond_mask, field.cond, x)
        total = out.new_zeros(())
        for i, (k, n) in enumerate(zip(prompts.lens.tolist(), prompts.durations.tolist())):
            wave = vocoder(out[i, :n].transpose(0, 1)[None])[0, k * HOP :]
            total = total - (10 * torch.log10((wave**2).mean() + 1e-10) + 20.0) ** 2
        return total

    reference = _grads(model, by_hand())
    assert reference.abs().max() > 1e-6
    torch.testing.assert_close(library, reference, rtol=1e-8, atol=1e-10)


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn`` runs (outside recomputed checkpoints)."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_wave_rewards_are_memory_flat_in_the_steps_under_checkpointing(corpus):
    model = random_model(corpus)
    prompts = _prompts(corpus, model, dtype=torch.float32)
    reward = WaveReward(_small_vocoder(torch.float32), wave_stft_reward)

    def kept(steps, checkpoint):
        def run():
            out = sample_with(model, prompts, cache=False, steps=steps, cfg_strength=0.0, grad_checkpoint=checkpoint)
            reward(out, prompts).sum()

        return _saved_bytes(run)

    plain = kept(8, False) - kept(2, False)
    flat = kept(8, True) - kept(2, True)
    state = prompts.noise.numel() * 4
    assert plain > 50 * state, plain  # the network's activations, every step
    assert flat <= state, (flat, state)  # nothing more is kept for more steps


def test_a_wave_reward_of_a_tiny_model_rises_with_fine_tuning(corpus, tmp_path):
    ds = MelDataset(corpus)
    model = random_model(corpus)
    config = _config(reward="loudness:-10", anchor_weight=0.0, steps=8, lr=5e-3)
    held = draw_prompts(ds, [5, 6, 7], model.num_channels, config, torch.Generator().manual_seed(11))
    reward = resolve_reward("loudness:-10", model, on="wave")
    sampling = config.recipe(model).sample_kwargs()

    def mean_reward(m):
        with torch.no_grad():
            return float(reward(sample_with(m, held, cache=True, **sampling), held).mean())

    before = mean_reward(model)
    summary = finetune(model, ds, str(tmp_path), config, progress=False)
    after = mean_reward(model)
    assert summary["finished"] and after > before + 0.3 * abs(before), (before, after)


def test_griffin_lim_renders_with_gradients(corpus):
    model = random_model(corpus)
    vocoder = load_vocoder("griffin-lim", model)
    mel = torch.randn(1, 12, model.num_channels, requires_grad=True)
    wave = vocoder(mel.transpose(1, 2))
    assert wave.shape == (1, 11 * HOP)
    (grad,) = torch.autograd.grad(wave.pow(2).mean(), mel)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


@pytest.mark.skipif(not __import__("importlib").util.find_spec("resemblyzer"), reason="resemblyzer not installed")
def test_the_wave_speaker_reward_reads_the_rendered_wave(corpus):
    from flowtts.train.rendering import WaveSpeakerReward

    model = random_model(corpus)
    prompts = _prompts(corpus, model, dtype=torch.float32)
    reward = resolve_reward("speaker", model, on="wave")
    assert isinstance(reward.reward, WaveSpeakerReward)
    mel = prompts.data.clone().requires_grad_(True)
    scores = reward(mel, prompts)
    assert scores.shape == (2,) and ((scores > 0.3) & (scores < 1)).all(), scores
    (grad,) = torch.autograd.grad(scores.sum(), mel)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    speaker = reward.reward
    wave = torch.randn(16_000) * 0.1
    torch.testing.assert_close(speaker.embed(wave, 24_000) @ speaker.embed(wave, 24_000), torch.tensor(1.0))
    # Levelled to -30 dBFS: the embedding does not hear the volume.
    torch.testing.assert_close(speaker.embed(3 * wave, 16_000), speaker.embed(wave, 16_000), atol=1e-5, rtol=1e-4)


def test_evaluate_reports_the_judges_and_n_a_where_one_cannot_judge(corpus):
    model = random_model(corpus)
    prompts = _prompts(corpus, model, rows=(0, 1, 2), dtype=torch.float32)
    sampling = dict(steps=2, cfg_strength=0.0)
    seen = []

    def judges(mel, p):
        seen.append(mel.shape[0])
        return {"WER": 0.5, "SIM": None, "OVRL": float(mel.mean())}

    models = {"before": (model, sampling), "after": (copy.deepcopy(model), sampling)}
    rows = evaluate(models, prompts, None, "before", judges=judges)
    assert seen == [3, 3, 3] and [r["reward"] for r in rows] == [None, None, None]
    text = format_rows(rows, "before")
    header, _, first, _, recordings = text.splitlines()
    assert header.split()[-3:] == ["WER", "SIM", "OVRL"]
    assert first.split()[1] == "n/a" and first.split()[-3:-1] == ["0.500", "n/a"]
    assert recordings.split()[-1] == f"{float(prompts.data.mean()):.3f}"


def test_bad_wave_settings_are_refused_naming_what(corpus, tmp_path):
    model = random_model(corpus)
    with pytest.raises(ValueError, match="reward 'timbre' reads mels; --on wave takes"):
        resolve_reward("timbre", model, on="wave")
    with pytest.raises(ValueError, match="'loudness' scores waves: pass --on wave"):
        resolve_reward("loudness", model)
    with pytest.raises(ValueError, match="loudness target must be a number"):
        resolve_reward("loudness:loud", model, on="wave")
    for target in ("1e9", "3", "-101", "nan", "-inf"):  # no wave in [-1, 1] has that RMS level
        with pytest.raises(ValueError, match=r"loudness target must be a number of dBFS in -100\.\.0"):
            resolve_reward(f"loudness:{target}", model, on="wave")
    with pytest.raises(ValueError, match="on must be one of"):
        RewardConfig(on="spectrum")
    with pytest.raises(FileNotFoundError, match="--vocoder: vocoder file not found"):
        resolve_reward("loudness", model, on="wave", vocoder=str(tmp_path / "none.safetensors"))
    path = str(tmp_path / "voc80.safetensors")
    save_vocoder(_small_vocoder(torch.float32, n_mel_channels=80), path)
    with pytest.raises(ValueError, match=r"vocoder inverts mels .*'n_mel_channels': 80.* the model makes .*100"):
        resolve_reward("wave-stft", model, on="wave", vocoder=path)
    config = _config(vocoder=path, steps=1)
    with pytest.raises(ValueError, match="vocoder inverts mels"):
        finetune(model, MelDataset(corpus), str(tmp_path / "run"), config, progress=False)
    assert not os.path.exists(tmp_path / "run")


def test_reward_command_on_waves_and_its_bad_flags(corpus, tmp_path, capsys):
    import flowtts
    from flowtts.cli import main

    flowtts.save(random_model(corpus), tmp_path / "model.safetensors")
    base = ["reward", "--model", str(tmp_path / "model.safetensors"), "--data", corpus, "-q", "--no-judges"]
    run = ["--out", str(tmp_path / "run"), "--on", "wave", "--reward", "loudness:-15", "--sample-steps", "2"]
    code = main(base + run + ["--cfg", "0", "--steps", "2", "--batch-size", "2", "--report-prompts", "2"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("fine-tuned 2 steps") and [line.split()[0] for line in lines[3:]] == [
        "before",
        "after",
        "recordings",
    ]
    path = str(tmp_path / "voc80.safetensors")
    save_vocoder(_small_vocoder(torch.float32, n_mel_channels=80), path)
    bad = [
        (["--on", "wave", "--reward", "timbre"], "reads mels"),
        (["--reward", "loudness"], "pass --on wave"),
        (["--on", "wave", "--reward", "loudness", "--vocoder", path], "vocoder inverts mels"),
        (["--reward", "preference:" + str(tmp_path / "nope.safetensors")], "no preference model file"),
    ]
    for flags, message in bad:
        assert main(base + ["--out", str(tmp_path / "bad")] + flags) == 2, flags
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / "bad")


def _have(*modules):
    import importlib.util

    return all(importlib.util.find_spec(m) for m in modules)


@pytest.mark.slow  # DNSMOS: seconds per utterance on a CPU
@pytest.mark.skipif(not _have("pocketsphinx", "resemblyzer"), reason="pocketsphinx or resemblyzer not installed")
def test_the_judges_score_what_they_hear(corpus):
    from flowtts.audio.transcribe import PocketSphinx
    from flowtts.eval.speaker import SpeakerSimilarity
    from flowtts.eval.wer import word_error_rate
    from flowtts.train.prompts import draw_unprompted_prompts
    from flowtts.train.rendering import Judges

    model = random_model(corpus)
    prompts = _prompts(corpus, model, dtype=torch.float32)
    vocoder = _small_vocoder(torch.float32)
    judges = Judges(model, vocoder)
    mel = prompts.data + 0.3 * torch.randn(prompts.data.shape, generator=torch.Generator().manual_seed(0))
    got = judges(mel, prompts)
    asr = PocketSphinx()
    heard = []
    for i, n in enumerate(prompts.durations.tolist()):  # prefix prompts: the whole utterance against its text
        heard.append(asr(vocoder(mel[i, :n].T[None])[0], 24_000))
    assert got["WER"] == pytest.approx(word_error_rate(prompts.texts, heard))
    with torch.no_grad():
        assert got["SIM"] == pytest.approx(float(SpeakerSimilarity(model.mel_spec)(mel, prompts).mean()), abs=1e-6)
    if judges.dnsmos:
        assert 1.0 <= got["OVRL"] <= 5.0
    else:
        assert got["OVRL"] is None
    unprompted = draw_unprompted_prompts(MelDataset(corpus), [0, 1], model.num_channels, torch.Generator())
    judges.asr, judges.dnsmos = None, False  # a judge left out reports None
    # SIM has no prompt audio to compare with.
    assert judges(unprompted.data, unprompted) == {"WER": None, "SIM": None, "OVRL": None}
