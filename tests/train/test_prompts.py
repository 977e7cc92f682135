import pytest
import torch

from flowtts.sampling.recipe import SamplingRecipe
from flowtts.text.units import join_texts
from flowtts.train.data import MelDataset
from flowtts.train.distill_config import DistillConfig, student_recipe
from flowtts.train.prompts import check_prompt_kind, draw_kind, draw_pair_prompts, draw_prompts, fixed_prompts
from train.test_data import padded  # noqa: F401  (a fixture)
from train.test_distill import corpus  # noqa: F401  (a fixture)

CONFIG = DistillConfig(student=student_recipe(2), teacher=SamplingRecipe(steps=8))


def test_pair_prompts_pair_each_row_with_another_and_repeat_for_a_seed(corpus):  # noqa: F811
    ds = MelDataset(corpus)
    rows = [0, 3, 3, 5, 7]
    first = draw_kind(ds, rows, "pair", 100, CONFIG, torch.Generator().manual_seed(4))
    again = draw_kind(ds, rows, "pair", 100, CONFIG, torch.Generator().manual_seed(4))
    assert torch.equal(first.noise, again.noise) and first.texts == again.texts
    for k, row in enumerate(rows):
        mel, text = ds[row]
        assert int(first.lens[k]) == mel.shape[0]  # the whole row is the reference
        partner = [i for i in range(len(ds)) if ds[i][1] == first.targets[k] and i != row]
        assert partner, "the text to say comes from another row"
        assert first.texts[k] == join_texts(text, first.targets[k])
        assert int(first.durations[k]) - mel.shape[0] in {ds[i][0].shape[0] for i in partner}
    prefix = draw_kind(ds, rows, "prefix", 100, CONFIG, torch.Generator().manual_seed(4))
    expected = draw_prompts(ds, rows, 100, CONFIG, torch.Generator().manual_seed(4))
    assert torch.equal(prefix.noise, expected.noise) and torch.equal(prefix.lens, expected.lens)


def test_partners_are_drawn_uniformly_from_the_other_rows(corpus):  # noqa: F811
    from flowtts.train.prompts import draw_partners

    ds = MelDataset(corpus)
    pairs = draw_partners(ds, [2] * 4000, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor([b for _, b in pairs]), minlength=len(ds)).float()
    assert counts[2] == 0 and all(a == 2 for a, _ in pairs)
    share = counts[torch.arange(len(ds)) != 2] / 4000
    assert float((share - 1 / (len(ds) - 1)).abs().max()) < 0.03


def test_fixed_pair_prompts_read_only_the_rows_given(corpus):  # noqa: F811
    ds = MelDataset(corpus)
    held = fixed_prompts(ds, [2, 3, 4], "pair", 100, CONFIG, seed=1)
    assert held.targets == [ds[3][1], ds[4][1], ds[2][1]]  # the last row says the first's text
    expected = draw_pair_prompts(ds, [(2, 3), (3, 4), (4, 2)], 100, torch.Generator().manual_seed(1))
    assert torch.equal(held.noise, expected.noise) and torch.equal(held.data, expected.data)
    with pytest.raises(ValueError, match="at least 2 held-out rows, got 1"):
        fixed_prompts(ds, [2], "pair", 100, CONFIG, seed=1)


def test_pair_prompts_can_lay_the_reference_out_as_inference_does(padded):  # noqa: F811
    from flowtts.train.data import PairLayout, item_frames, join_item

    ds, _ = padded
    layout = PairLayout(gap=(0.1, 0.5), target_rms=0.1, seed=2)
    prompts = fixed_prompts(ds, [0, 1, 2], "pair", 100, CONFIG, seed=1, layout=layout)
    for k, (a, b) in enumerate([(0, 1), (1, 2), (2, 0)]):
        mel, _ = join_item(ds, (a, b), layout)
        n_ref = item_frames(ds, (a, b), layout) - ds.items[b]["frames"]
        # the reference is the first clip cut to its speech plus the gap, shorter than the recording
        assert int(prompts.lens[k]) == n_ref < ds.items[a]["frames"]
        assert int(prompts.durations[k]) == mel.shape[0] == n_ref + ds.items[b]["frames"]
        assert torch.equal(prompts.cond[k, :n_ref], mel[:n_ref])
        assert torch.equal(prompts.data[k, : mel.shape[0]], mel)
        assert int(prompts.generated_mask()[k].sum()) == ds.items[b]["frames"]  # the second recording's length
    assert prompts.targets == [ds[1][1], ds[2][1], ds[0][1]]


def test_unknown_prompt_kinds_are_refused_by_name():
    with pytest.raises(ValueError, match=r"prompts must be one of \('prefix', 'pair', 'unprompted'\), got 'pairs'"):
        check_prompt_kind("pairs")
    with pytest.raises(ValueError, match="prompts must be one of"):
        DistillConfig(student=student_recipe(2), teacher=SamplingRecipe(steps=8), prompts="both")


def test_unprompted_prompts_are_each_row_after_no_audio_as_inference_without_its_clip(corpus):  # noqa: F811
    from flowtts.text.units import text_units
    from flowtts.train.prompts import sample_with
    from train.helpers import random_model

    ds = MelDataset(corpus)
    rows = [1, 4, 2]
    prompts = fixed_prompts(ds, rows, "unprompted", 100, CONFIG, seed=3)
    again = draw_kind(ds, rows, "unprompted", 100, CONFIG, torch.Generator().manual_seed(3))
    assert torch.equal(prompts.noise, again.noise) and prompts.kind == again.kind == "unprompted"
    assert prompts.lens.tolist() == [1, 1, 1] and not prompts.cond.any()
    for k, row in enumerate(rows):
        mel, text = ds[row]
        assert prompts.texts[k] == prompts.targets[k] == text  # the row's own text, nothing before it
        assert int(prompts.durations[k]) == mel.shape[0] + 1
        assert int(prompts.generated_mask()[k].sum()) == mel.shape[0]  # the recording's length is generated
        assert torch.equal(prompts.data[k, 1 : mel.shape[0] + 1], mel)
    assert prompts.rows([2]).kind == "unprompted"
    # sampled, a row is what synthesis without its clip computes: no audio, the text alone
    model = random_model(corpus)
    out = sample_with(model, prompts.rows([0]), cache=True, steps=3, cfg_strength=2.0, sway_sampling_coef=-1.0)
    frames = int(prompts.durations[0])
    alone, _ = model.sample(
        torch.zeros(1, 1, 100),
        [text_units(model, prompts.texts[0])],
        frames,
        noise=prompts.noise[:1, :frames],
        steps=3,
        cfg_strength=2.0,
        sway_sampling_coef=-1.0,
        no_ref_audio=True,
    )
    torch.testing.assert_close(out[0, 1:frames], alone[0, 1:])
