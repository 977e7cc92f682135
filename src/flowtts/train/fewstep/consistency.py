"""Consistency distillation (Song et al.) along the guided teacher's trajectories, in the flow convention.

A consistency function maps every point ``x_t`` of a trajectory to the trajectory's end at ``t = 1``.
Its boundary condition here is ``f(x, 1) = x`` (data sits at ``t = 1``), and the parametrisation builds it
in::

    f(x, t) = x + (1 - t) F(t, x)

so ``f(x, 1) = x`` exactly for any network ``F``. With ``F`` a velocity this is the Euler jump to ``t = 1``:
the TTS model is a consistency function as it stands (sampled with ``cfg_strength = 0``), and the teacher's
weights start it at the teacher's one-jump prediction. (Song et al. write ``c_skip(t) x + c_out(t) F``
with ``c_skip = 1, c_out = 0`` at the data end; here ``c_skip = 1`` and ``c_out = 1 - t``.)

Distillation, with a skip of ``k`` intervals of an ``N``-interval lattice (the skipping step of latent
consistency models): draw ``n``, set ``t = n / N`` and ``t' = min((n + k) / N, 1)``; re-noise data to
``x_t``; let the guided teacher solve from ``x_t`` to ``x_t'``; and match::

    loss = |f_theta(x_t, t) - f_target(teacher(x_t, t, t'), t')|^2     (target: no gradient)

``f_target`` is the same parametrisation with the weights of an EMA of the student (the target network,
decay ``target_decay``). Where ``t' = 1`` the target is the teacher's own endpoint: the boundary anchors
the chain. Sampling: :func:`~flowtts.train.fewstep.velocity.multistep_sample` in 1, 2 or 4 steps
(predict, re-noise with fresh noise, predict again).

On a ``CFM``: ``f_theta = jump_to_data(model_step_map(student, ..., cfg_strength=0, cache=False))`` (one
Euler jump to ``t = 1``, the identity at ``t = 1``), ``f_target`` the same on the target copy with
``cache=True``, and the teacher ``model_step_map(teacher, ..., cfg_strength=teacher_cfg, cache=True,
substeps=teacher_substeps)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowtts.train.fewstep.velocity import (
    DataPrediction,
    StepMap,
    Time,
    Velocity,
    masked_mean,
    renoise,
    time_like,
)

SAMPLE_STEPS = (1, 2, 4)


@dataclass(frozen=True)
class ConsistencySettings:
    """How a consistency distillation runs.

    Attributes:
        intervals: ``N``, the lattice of training times ``n / N``.
        skip: ``k``, lattice intervals between a point and its teacher target.
        teacher_substeps: Teacher solver steps across one skip (guided: two network calls each).
        teacher_cfg: The teacher's guidance.
        target_decay: EMA decay of the target network.
        sample_steps: Steps the student samples with (1, 2 or 4).
        sway_coef: Sway of the lattice and of the sampling grid (``None``: uniform ``n / N``; the TTS runner
            then draws ``t`` from the swayed lattice, where F5-TTS's sampler spends its steps).
    """

    intervals: int = 32
    skip: int = 4
    teacher_substeps: int = 4
    teacher_cfg: float = 2.0
    target_decay: float = 0.95
    sample_steps: int = 2
    sway_coef: float | None = None

    def __post_init__(self):
        if self.intervals < 1 or not 1 <= self.skip <= self.intervals:
            raise ValueError(f"need intervals >= 1 and 1 <= skip <= intervals, got {self.intervals} and {self.skip}")
        if self.teacher_substeps < 1:
            raise ValueError(f"teacher_substeps must be >= 1, got {self.teacher_substeps}")
        if not 0 <= self.target_decay < 1:
            raise ValueError(f"target_decay must be in [0, 1), got {self.target_decay}")
        if self.sample_steps not in SAMPLE_STEPS:
            raise ValueError(f"sample_steps must be one of {SAMPLE_STEPS}, got {self.sample_steps}")

    def sample_grid(self) -> torch.Tensor:
        """The student's ``sample_steps + 1`` uniform times (the model is called at all but the last)."""
        from flowtts.sampling.grids import make_grid

        return make_grid(self.sample_steps, use_epss=False, sway_coef=self.sway_coef)


def consistency_fn(raw: Velocity, x: torch.Tensor, t: Time) -> torch.Tensor:
    """The consistency function ``f(x, t) = x + (1 - t) F(t, x)``: exactly ``x`` at ``t = 1``.

    Args:
        raw: The network ``F(t, x)`` (a velocity, the student's at cfg 0).
        x: States ``(b, ...)`` at ``t``.
        t: A scalar or ``(b,)`` times in ``[0, 1]``.
    """
    return x + (1 - time_like(t, x)) * raw(t, x)


def skip_times(
    batch: int, intervals: int, skip: int, *, generator: torch.Generator | None = None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t, t')``, ``(batch,)`` each: ``t = n / N`` with ``n`` uniform in ``0..N-1``, ``t' = min((n + k) / N, 1)``."""
    n = torch.randint(intervals, (batch,), generator=generator)
    t = n.to(dtype) / intervals
    t_next = ((n + skip).clamp(max=intervals)).to(dtype) / intervals
    return t, t_next


def consistency_loss(
    student: DataPrediction,
    target: DataPrediction,
    teacher: StepMap,
    x1: torch.Tensor,
    noise: torch.Tensor,
    t: Time,
    t_next: Time,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Consistency distillation with a skipping step (see the module docstring).

    Args:
        student: ``f_theta(x, t)`` with gradient (:func:`consistency_fn` of the student's network).
        target: ``f_target(x, t)``, the EMA target network's consistency function (run without gradient).
        teacher: The guided teacher's step map from ``t`` to ``t_next`` (run without gradient).
        x1: Data ``(b, ...)``.
        noise: Noise like ``x1``.
        t, t_next: The point's time and its target's time, ``t < t_next <= 1`` (scalars or ``(b,)``).
        mask: Elements the loss is taken on.

    Returns:
        The mean squared distance, a 0-dim tensor.
    """
    x_t = renoise(x1, noise, t)
    with torch.no_grad():
        goal = target(teacher(x_t, t, t_next), t_next)
    return masked_mean((student(x_t, t) - goal).pow(2), mask)
