"""The distillation loop a user writes around ``sample(cache=False)`` (no flowtts training code)."""

import copy

import torch
from torch import nn

from conftest import make_tiny, tiny_text


def _prompt(batch: int) -> torch.Tensor:
    return torch.randn(batch, 10, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()


def test_distillation_loop_lowers_student_loss():
    torch.manual_seed(0)
    teacher = make_tiny(seed=1).eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    student.transformer.apply(lambda m: setattr(m, "p", 0.1) if isinstance(m, nn.Dropout) else None)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    cond, text = _prompt(2), tiny_text(2)
    target, _ = teacher.sample(cond, text, 24, steps=16, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=[3, 4])

    def distance():
        student.eval()
        with torch.no_grad():
            out, _ = student.sample(cond, text, 24, steps=2, cfg_strength=2.0, seed=[3, 4], cache=False)
        student.train()
        return nn.functional.mse_loss(out[:, 10:], target[:, 10:]).item()

    before = distance()
    for _ in range(20):
        out, _ = student.sample(cond, text, 24, steps=2, cfg_strength=2.0, seed=[3, 4], cache=False)
        assert student.training
        loss = nn.functional.mse_loss(out[:, 10:], target[:, 10:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = distance()
    assert after < 0.7 * before, (before, after)
