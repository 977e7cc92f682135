import pytest
import torch

from flowtts.text.units import join_texts
from flowtts.train.data import MelDataset
from flowtts.train.distill import DistillConfig
from flowtts.train.prompts import check_prompt_kind, draw_kind, draw_pair_prompts, draw_prompts, fixed_prompts
from train.test_data import padded  # noqa: F401  (a fixture)
from train.test_distill import corpus  # noqa: F401  (a fixture)

CONFIG = DistillConfig(student_steps=2, teacher_steps=8)


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
    with pytest.raises(ValueError, match=r"prompts must be one of \('prefix', 'pair'\), got 'pairs'"):
        check_prompt_kind("pairs")
    with pytest.raises(ValueError, match="prompts must be one of"):
        DistillConfig(student_steps=2, teacher_steps=8, prompts="both")
