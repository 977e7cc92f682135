"""``flowtts reward --reward preference:FILE``: raising a learned preference model's score."""

import os
import sys
import types

import pytest
import torch
from torch import nn

from flowtts.config import MelConfig
from flowtts.train.data import MelDataset
from flowtts.train.prompts import draw_prompts, sample_with
from flowtts.train.reward import REWARD_LOOP, PreferenceReward, RewardConfig, finetune, resolve_reward
from train.helpers import prepared_corpus, random_model, split_loop

CHANNEL = 7


class StandIn(nn.Module):
    """A preference model with a known direction: the mean of one mel channel over the valid frames."""

    def __init__(self, channel: int = CHANNEL, mel: MelConfig | None = None):
        super().__init__()
        self.channel, self.mel = channel, mel or MelConfig()
        self.weight = nn.Parameter(torch.ones(()))  # frozen by the reward
        self.metadata = {"human": "false"}

    def score(self, mel: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(mel.shape[1], device=mel.device)[None, :] < lens[:, None]
        return self.weight * (mel[..., self.channel] * valid).sum(dim=1) / lens

    def check_fits(self, mel_config, what="the model"):
        if mel_config != self.mel:
            raise ValueError(f"the preference model reads mels {self.mel}, but {what} makes {mel_config}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(str(tmp_path_factory.mktemp("pcorpus")))


@pytest.fixture
def preference_file(tmp_path, monkeypatch):
    """A file path that ``flowtts.prefs.model.load_preference_model`` reads as a :class:`StandIn`."""
    path = tmp_path / "prefs.safetensors"
    path.write_bytes(b"stand-in")
    loaded = []

    def load_preference_model(p, device="cpu"):
        loaded.append((p, device))
        return StandIn()

    module = types.ModuleType("flowtts.prefs.model")
    module.load_preference_model = load_preference_model
    if "flowtts.prefs" not in sys.modules:
        monkeypatch.setitem(sys.modules, "flowtts.prefs", types.ModuleType("flowtts.prefs"))
    monkeypatch.setitem(sys.modules, "flowtts.prefs.model", module)
    return str(path), loaded


def _split(corpus):
    train, held = MelDataset(corpus), MelDataset(corpus)
    train.items, held.items = train.items[:5], held.items[5:]
    return train, held


def test_the_preference_reward_scores_only_the_generated_frames(corpus):
    model = random_model(corpus)
    ds = MelDataset(corpus)
    prompts = draw_prompts(ds, [0, 1, 2], model.num_channels, RewardConfig(), torch.Generator().manual_seed(0))
    reward = PreferenceReward(StandIn(), model)
    assert not reward.judge.weight.requires_grad and not reward.judge.training
    mel = prompts.data.clone()
    got = reward(mel, prompts)
    expected = [mel[i, k:n, CHANNEL].mean() for i, (k, n) in enumerate(zip(prompts.lens, prompts.durations))]
    torch.testing.assert_close(got, torch.stack(expected))
    changed = mel.clone()
    changed[:, : int(prompts.lens.min())] = 9.0  # prompt frames do not count
    for i, n in enumerate(prompts.durations.tolist()):
        changed[i, n:] = -9.0  # nor does padding past the duration
    torch.testing.assert_close(reward(changed, prompts), got)
    with pytest.raises(ValueError, match="preference model reads mels"):
        PreferenceReward(StandIn(mel=MelConfig(n_mel_channels=80)), model)


def test_fine_tuning_raises_the_preference_score_on_held_out_prompts(corpus, tmp_path, preference_file):
    path, loaded = preference_file
    train, held = _split(corpus)
    model = random_model(corpus)
    base = dict(reward=f"preference:{path}", sample_steps=2, cfg_strength=0.0, steps=10, batch_size=3, lr=3e-3)
    config = RewardConfig(**split_loop({**base, "anchor_weight": 0.0, "warmup": 2}, REWARD_LOOP))
    prompts = draw_prompts(held, list(range(len(held))), model.num_channels, config, torch.Generator().manual_seed(3))
    reward = resolve_reward(config.reward, model)
    assert isinstance(reward, PreferenceReward) and loaded == [(path, "cpu")]
    sampling = config.recipe(model).sample_kwargs()

    def held_out_score(m):
        with torch.no_grad():
            return float(reward(sample_with(m, prompts, cache=True, **sampling), prompts).mean())

    before = held_out_score(model)
    summary = finetune(model, train, str(tmp_path / "run"), config, progress=False)
    after = held_out_score(model)
    assert summary["finished"] and len(loaded) == 2
    assert after > before + 0.5, (before, after)


def test_a_missing_preference_file_is_refused_naming_it(corpus, tmp_path):
    model = random_model(corpus)
    missing = str(tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match=r"reward 'preference:.*none.safetensors': no preference model file"):
        resolve_reward(f"preference:{missing}", model)
    with pytest.raises(ValueError, match="no preference model file ''"):
        resolve_reward("preference:", model)
    with pytest.raises(ValueError, match="reads mels; --on wave"):
        resolve_reward(f"preference:{missing}", model, on="wave")
    assert not os.path.exists(missing)
