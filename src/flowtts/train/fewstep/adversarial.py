"""Adversarial diffusion distillation (Sauer et al., ADD; the teacher-feature discriminator of their LADD).

The student samples from noise in a few steps through the differentiable sampler
(``CFM.sample(cache=False, grad_checkpoint=True)``: memory stays flat in the step count). Its sample ``x``
is re-noised, ``x_t = (1 - t) n + t x``, and judged by a discriminator: light trainable heads
(:class:`FeatureDiscriminator`) over hidden features of the frozen teacher at ``(x_t, t)``
(:func:`dit_features`), which the teacher computes conditioned on the text and prompt (and/or over the
mel itself). Real mels are re-noised the same way. The generator's loss adds a distillation term, the
frozen guided teacher's data prediction at the re-noised sample as a fixed target::

    L_G = L_adv_G(D(x_t)) + distill_weight * |x - stopgrad(x1_teacher(x_t, t))|^2
    L_D = L_adv_D(D(real_t), D(fake_t)) + r1_weight * E |grad_real D(real_t)|^2

with the hinge losses (ADD) or the least-squares ones (DMOSpeech):

* hinge: ``L_D = mean relu(1 - D(real)) + mean relu(1 + D(fake))``, ``L_G = -mean D(fake)``;
* least squares: ``L_D = mean (D(real) - 1)^2 + mean D(fake)^2``, ``L_G = mean (D(fake) - 1)^2``.

The gradient of ``L_G`` reaches the student's weights through every solver step of its sample and
through the frozen teacher's features (the teacher's weights get none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flowtts.train.fewstep.velocity import DataPrediction, Time, masked_mean, renoise

LOSSES = ("hinge", "ls")


@dataclass(frozen=True)
class AdversarialSettings:
    """How an adversarial distillation runs.

    Attributes:
        loss: ``"hinge"`` or ``"ls"`` (least squares).
        student_steps: Steps of the student's sample (uniform grid, cfg 0).
        grad_checkpoint: Recompute each solver step in backward (memory flat in the steps).
        distill_weight: Weight of the distillation term in the generator loss.
        r1_weight: Weight of the R1 penalty on real mels.
        warmup_steps: Steps in which the generator trains on the distillation term alone (the
            discriminator already trains).
        d_updates_per_g: Discriminator updates per generator update.
        time_range: Range of the re-noising time the discriminator sees (``t = 1``: the clean mel).
        feature_layers: Teacher blocks whose outputs the heads read (negative: from the last).
        read_mel: Also give the heads the re-noised mel itself.
        teacher_cfg: The teacher's guidance in the distillation target.
        sway_coef: Sway of the student's grid (``None``: uniform).
    """

    loss: str = "hinge"
    student_steps: int = 4
    grad_checkpoint: bool = True
    distill_weight: float = 2.5
    r1_weight: float = 1e-3
    warmup_steps: int = 0
    d_updates_per_g: int = 1
    time_range: tuple[float, float] = (0.25, 1.0)
    feature_layers: tuple[int, ...] = (-1,)
    read_mel: bool = False
    teacher_cfg: float = 2.0
    sway_coef: float | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.student_steps < 1 or self.d_updates_per_g < 1 or self.warmup_steps < 0:
            raise ValueError("student_steps and d_updates_per_g must be >= 1, warmup_steps >= 0")
        if self.distill_weight < 0 or self.r1_weight < 0:
            raise ValueError("distill_weight and r1_weight must be >= 0")
        lo, hi = self.time_range
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"time_range must satisfy 0 <= lo <= hi <= 1, got {self.time_range}")
        if not self.feature_layers:
            raise ValueError("feature_layers must name at least one teacher block")

    def student_recipe(self):
        """The student's :class:`~flowtts.sampling.recipe.SamplingRecipe`: ``student_steps`` on its grid, cfg 0."""
        from flowtts.sampling.recipe import SamplingRecipe

        return SamplingRecipe(
            steps=self.student_steps, cfg_strength=0.0, sway_sampling_coef=self.sway_coef, use_epss=False
        )


@dataclass(frozen=True)
class Turn:
    """What one training step updates."""

    discriminator: bool
    generator: bool
    adversarial: bool  # the generator's loss includes the adversarial term


def turn(step: int, settings: AdversarialSettings) -> Turn:
    """Step ``step`` (0-based): the discriminator every step, the generator every ``d_updates_per_g`` steps,
    its adversarial term from ``warmup_steps`` on."""
    return Turn(
        discriminator=True,
        generator=step % settings.d_updates_per_g == 0,
        adversarial=step >= settings.warmup_steps,
    )


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean relu(1 - D(real)) + mean relu(1 + D(fake))``."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean D(fake)``."""
    return -fake_logits.mean()


def ls_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean (D(real) - 1)^2 + mean D(fake)^2``."""
    return (real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean()


def ls_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean (D(fake) - 1)^2``."""
    return (fake_logits - 1).pow(2).mean()


D_LOSSES = {"hinge": hinge_d_loss, "ls": ls_d_loss}
G_LOSSES = {"hinge": hinge_g_loss, "ls": ls_g_loss}


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1: the mean over samples of ``|d sum(D) / d real_inputs|^2``, with a graph (it is trained through).

    Args:
        real_logits: The discriminator's logits on real inputs (any shape; per-frame logits are summed).
        real_inputs: The tensor they were computed from, with ``requires_grad`` set before the discriminator
            ran (the re-noised real mel).
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


def distillation_loss(
    x: torch.Tensor, teacher: DataPrediction, noise: torch.Tensor, t: Time, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """ADD's distillation term ``mean |x - stopgrad(teacher(x_t, t))|^2`` at ``x_t = renoise(x, noise, t)``.

    Args:
        x: The student's samples with their graph.
        teacher: The guided teacher's data prediction (run without gradient).
        noise: Re-noising noise like ``x``.
        t: Re-noising times (scalar or ``(b,)``).
        mask: Elements the loss is taken on.
    """
    with torch.no_grad():
        target = teacher(renoise(x.detach(), noise, t), t)
    return masked_mean((x - target).pow(2), mask)


class FeatureDiscriminator(nn.Module):
    """Trainable heads over frozen features: one per feature, per-frame logits averaged over the heads.

    Each head is ``Conv1d(c_i, hidden, k) -> LeakyReLU(0.2) -> Conv1d(hidden, 1, 1)`` over frames, plus,
    with ``cond_dim``, a projection term ``<W c, h> / sqrt(hidden)`` for a per-frame conditioning ``c``
    (a text embedding). ``kernel_size=1`` makes each head an MLP (the analytic problems' case).

    Args:
        feature_dims: Channels ``c_i`` of each feature.
        hidden: Width of each head.
        kernel_size: Odd temporal kernel of the first layer.
        cond_dim: Channels of the conditioning (``None``: none).
    """

    def __init__(
        self, feature_dims: Sequence[int], hidden: int = 256, kernel_size: int = 3, cond_dim: int | None = None
    ):
        super().__init__()
        if not feature_dims or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError("need at least one feature and an odd kernel_size")
        self.hidden = hidden
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv1d(c, hidden, kernel_size, padding=kernel_size // 2), nn.LeakyReLU(0.2))
            for c in feature_dims
        )
        self.outs = nn.ModuleList(nn.Conv1d(hidden, 1, 1) for _ in feature_dims)
        self.projections = (
            nn.ModuleList(nn.Linear(cond_dim, hidden, bias=False) for _ in feature_dims) if cond_dim else None
        )

    def forward(self, features: Sequence[torch.Tensor], cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(b, n)`` for features ``(b, n, c_i)``, or ``(b,)`` for features ``(b, c_i)``.

        Args:
            features: One tensor per head.
            cond: Conditioning ``(b, n, cond_dim)`` (or ``(b, cond_dim)``), when built with ``cond_dim``.
        """
        if len(features) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} features, got {len(features)}")
        if (cond is None) != (self.projections is None):
            raise ValueError("cond goes with a discriminator built with cond_dim (and that one needs it)")
        flat = features[0].ndim == 2
        total = 0
        for i, (feature, head, out) in enumerate(zip(features, self.heads, self.outs)):
            h = head((feature[:, None] if flat else feature).transpose(1, 2))  # (b, hidden, n)
            logits = out(h)[:, 0]
            if self.projections is not None:
                c = cond[:, None] if flat else cond
                logits = logits + (self.projections[i](c).transpose(1, 2) * h).sum(dim=1) / math.sqrt(self.hidden)
            total = total + logits
        total = total / len(self.heads)
        return total[:, 0] if flat else total


def dit_features(dit, x: torch.Tensor, time: torch.Tensor, conditioning, layers: Sequence[int]) -> list[torch.Tensor]:
    """Hidden states ``(b, n, dim)`` of a :class:`flowtts.DiT` after the given blocks, at ``(x, time)``.

    The same computation as :meth:`flowtts.DiT.velocity` up to the deepest block asked for (the blocks
    after it are not run). Differentiable in ``x`` whether or not the DiT's weights require grad.

    Args:
        dit: The (frozen) teacher's backbone.
        x: Noisy mel ``b n d``.
        time: Flow time, scalar or ``b``.
        conditioning: A one-branch :meth:`flowtts.DiT.condition` result (``cfg_infer=False``): the text and
            prompt the features are conditioned on.
        layers: Block indices (negative: from the last), in the order the features are returned.
    """
    from flowtts.model.conditioning import step_inputs
    from flowtts.sampling.checkpoint import checkpoint

    if conditioning.branches != 1:
        raise ValueError("dit_features needs a one-branch conditioning (condition(..., cfg_infer=False))")
    depth = len(dit.transformer_blocks)
    if not layers or any(not -depth <= i < depth for i in layers):
        raise ValueError(f"layers must be block indices in [-{depth}, {depth}), got {list(layers)}")
    wanted = [i % depth for i in layers]
    c = conditioning
    h, t = step_inputs(dit, x, time, c)
    h = dit.input_embed.conv_pos_embed(h, mask=c.mask) + h
    kept = {}
    for i, block in enumerate(dit.transformer_blocks[: max(wanted) + 1]):
        args = (h, t, c.mask, c.rope, c.attn_mask_enabled, c.qkv[i])
        h = checkpoint(block, *args) if dit.checkpoint_activations and torch.is_grad_enabled() else block(*args)
        if i in wanted:
            kept[i] = h
    return [kept[i] for i in wanted]
