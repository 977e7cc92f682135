"""Distribution matching distillation (Yin et al., DMD and DMD2), as DMOSpeech uses it on an F5-TTS teacher.

The student is a generator ``x = G(z)``. A second copy of the teacher, the *fake* model, learns the
velocity of the student's own output distribution online (plain flow matching on the student's samples),
while the frozen guided teacher gives the velocity of the data. At a re-noised point
``x_t = (1 - t) n + t x`` both predict the data, ``x1_hat = x_t + (1 - t) v(t, x_t)``; the difference of
the two predictions is, up to a positive factor ``t / (1 - t)^2``, the difference of the two scores, and
it is the direction that lowers the reverse KL divergence from the student's distribution to the
teacher's. DMD2's normalised form, used here::

    g    = (x1_fake - x1_real) / mean|x - x1_real|          (per sample, no gradient)
    loss = 0.5 * mean |x - stopgrad(x - g)|^2               (d loss / dx = g / numel)

so gradient descent moves each sample towards the teacher's prediction and away from the fake's.
The fake model is updated ``fake_updates_per_generator`` times per generator update (DMD2's two
time-scale rule) with :func:`fake_score_loss`.

A multi-step student (DMD2's few-step generator, DMOSpeech's 4 steps) is trained at each of its grid
times ``t_k``: its input there is made by its own sampler from pure noise (:func:`backward_simulation`,
no gradient), and the output judged is its one-jump data prediction from ``t_k``. With re-noising
(``sampler="renoise"``) it samples as DMD2 does; with ``sampler="ode"`` (the implied noise) its sampler is
exactly the Euler solve on the grid, what :meth:`flowtts.CFM.sample` runs. Optional terms (DMOSpeech):
an adversarial head on the fake model's features (:mod:`~flowtts.train.fewstep.adversarial`) and a
recogniser's CTC loss on the sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowtts.train.fewstep.velocity import (
    DataPrediction,
    Time,
    Velocity,
    flow_matching_loss,
    masked_mean,
    multistep_sample,
    renoise,
)

SAMPLERS = ("renoise", "ode")


@dataclass(frozen=True)
class DMDSettings:
    """How a DMD run goes.

    Attributes:
        student_steps: Steps of the student's sampler (uniform grid).
        sampler: ``"renoise"`` (predict, re-noise with fresh noise) or ``"ode"`` (Euler on the grid).
        backward_simulation: Make the student's input at ``t_k`` with its own sampler (else: re-noised data).
        teacher_cfg: The real (teacher) velocity's guidance; the fake model and the student use none.
        fake_updates_per_generator: Fake-model updates per generator update (two time-scale rule).
        time_range: Range of the re-noising time ``t`` of the DMD term.
        adversarial_weight: Weight of an adversarial term on the fake model's features (0: off).
        ctc_weight: Weight of a recogniser's CTC loss on the student's samples (0: off).
        sway_coef: Sway of the student's grid (``None``: uniform).
    """

    student_steps: int = 4
    sampler: str = "renoise"
    backward_simulation: bool = True
    teacher_cfg: float = 2.0
    fake_updates_per_generator: int = 5
    time_range: tuple[float, float] = (0.02, 0.98)
    adversarial_weight: float = 0.0
    ctc_weight: float = 0.0
    sway_coef: float | None = None

    def __post_init__(self):
        if self.student_steps < 1:
            raise ValueError(f"student_steps must be >= 1, got {self.student_steps}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.fake_updates_per_generator < 1:
            raise ValueError(f"fake_updates_per_generator must be >= 1, got {self.fake_updates_per_generator}")
        lo, hi = self.time_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"time_range must satisfy 0 <= lo < hi <= 1, got {self.time_range}")
        if self.adversarial_weight < 0 or self.ctc_weight < 0:
            raise ValueError("adversarial_weight and ctc_weight must be >= 0")

    def student_grid(self) -> torch.Tensor:
        """The student's ``student_steps + 1`` times (uniform, or swayed)."""
        from flowtts.sampling.grids import make_grid

        return make_grid(self.student_steps, use_epss=False, sway_coef=self.sway_coef)


def generator_turn(step: int, fake_updates_per_generator: int) -> bool:
    """Whether step ``step`` (0-based) also updates the generator; the fake model is updated every step."""
    return step % fake_updates_per_generator == 0


def draw_times(
    batch: int, time_range: tuple[float, float], *, generator: torch.Generator | None = None, dtype=torch.float32
) -> torch.Tensor:
    """``(batch,)`` re-noising times uniform in ``time_range``."""
    lo, hi = time_range
    return lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=dtype)


def dmd_direction(
    x: torch.Tensor, x1_real: torch.Tensor, x1_fake: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """DMD2's normalised direction ``g = (x1_fake - x1_real) / mean|x - x1_real|`` (per sample, NaNs zeroed).

    Args:
        x: The student's samples ``(b, ...)``.
        x1_real: The teacher's data prediction at the re-noised samples.
        x1_fake: The fake model's data prediction there.
        mask: Elements the per-sample mean runs over (the generated frames).
    """
    x, x1_real, x1_fake = x.detach(), x1_real.detach(), x1_fake.detach()
    gap = (x - x1_real).abs()
    if mask is None:
        scale = gap.flatten(1).mean(dim=1)
    else:
        weight = mask.to(device=x.device, dtype=x.dtype)
        while weight.ndim < x.ndim:
            weight = weight[..., None]
        weight = weight.expand_as(x)
        scale = (gap * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1)
    scale = scale.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.nan_to_num((x1_fake - x1_real) / scale)


def dmd_loss(
    x: torch.Tensor, x1_real: torch.Tensor, x1_fake: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``0.5 * mean|x - stopgrad(x - g)|^2``, ``g`` of :func:`dmd_direction`: its gradient in ``x`` is ``g / numel``."""
    g = dmd_direction(x, x1_real, x1_fake, mask)
    return 0.5 * masked_mean((x - (x - g).detach()).pow(2), mask)


def dmd_generator_loss(
    x: torch.Tensor,
    real: DataPrediction,
    fake: DataPrediction,
    noise: torch.Tensor,
    t: Time,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DMD term of a generator update: re-noise the samples, ask both models, :func:`dmd_loss`.

    Args:
        x: The student's samples ``(b, ...)`` with their graph.
        real: The guided teacher's data prediction ``x_t + (1 - t) v_real(t, x_t)`` (run without gradient).
        fake: The fake model's data prediction (run without gradient).
        noise: The re-noising noise, like ``x``.
        t: Re-noising times (scalar or ``(b,)``), see :func:`draw_times`.
        mask: Elements the loss is taken on.
    """
    with torch.no_grad():
        x_t = renoise(x.detach(), noise, t)
        x1_real, x1_fake = real(x_t, t), fake(x_t, t)
    return dmd_loss(x, x1_real, x1_fake, mask)


def fake_score_loss(
    fake: Velocity, x: torch.Tensor, noise: torch.Tensor, t: Time, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The fake model's update: flow matching on the student's (detached) samples."""
    return flow_matching_loss(fake, x.detach(), noise, t, mask)


def backward_simulation(
    predict: DataPrediction,
    noise: torch.Tensor,
    grid: torch.Tensor,
    k: int,
    *,
    sampler: str = "renoise",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The student's input at ``grid[k]`` as its own sampler makes it from ``noise`` (``k`` calls, no gradient).

    Args:
        predict: The student's data prediction.
        noise: Pure noise at ``grid[0] = 0``.
        grid: The student's times.
        k: The step to train, ``0 <= k < len(grid) - 1``.
        sampler: ``"renoise"`` (fresh noise from ``generator``) or ``"ode"`` (Euler on the grid).
        generator: Random source of the re-noising.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    with torch.no_grad():
        return multistep_sample(predict, noise, grid, upto=k, fresh_noise=sampler == "renoise", generator=generator)
