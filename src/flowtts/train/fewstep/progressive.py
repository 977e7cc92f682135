"""Progressive distillation (Salimans & Ho): rounds that halve the step count, one student step for two.

Round ``r`` has a teacher sampled in ``2N`` steps on a grid ``t_0 < ... < t_2N`` and a student sampled in
``N`` steps on every other time of it. At a point ``x`` of the path at ``t_2i`` (data re-noised to that
time), the student's one step to ``t_2i+2`` learns the teacher's two steps through ``t_2i+1``::

    target = teacher(teacher(x, t_2i, t_2i+1), t_2i+1, t_2i+2)      (no gradient)
    loss   = |student(x, t_2i, t_2i+2) - target|^2 / (t_2i+2 - t_2i)^2

The division makes it a loss on the student's velocity (its network output for an Euler step), the same
scale whatever the step length; ``weighting="state"`` leaves it out. The next round starts from this
round's weights, with this round's student (frozen) as its teacher. The first teacher is the many-step
guided model; every student samples with ``cfg_strength = 0``, so guidance is distilled away in round one.

The halving grids must nest: uniform grids, or sway grids (sway is a pointwise map of the uniform
lattice, so ``sway(uniform(2N))[::2] = sway(uniform(N))``); EPSS grids do not nest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowtts.train.fewstep.velocity import StepMap, Time, masked_mean, time_like

WEIGHTINGS = ("velocity", "state")


@dataclass(frozen=True)
class ProgressiveSettings:
    """How a progressive distillation runs.

    Attributes:
        start_steps: The first teacher's steps (a power of two times ``end_steps``).
        end_steps: The last student's steps.
        steps_per_round: Optimiser steps of each round.
        teacher_cfg: Guidance of the first teacher (folded into its steps; students use 0).
        sway_coef: Sway of the nested grids (``None``: uniform).
        weighting: ``"velocity"`` (divide by the squared step length) or ``"state"``.
    """

    start_steps: int = 32
    end_steps: int = 1
    steps_per_round: int = 1000
    teacher_cfg: float = 2.0
    sway_coef: float | None = None
    weighting: str = "velocity"

    def __post_init__(self):
        halving_schedule(self.start_steps, self.end_steps)
        if self.steps_per_round < 1:
            raise ValueError(f"steps_per_round must be >= 1, got {self.steps_per_round}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")

    def student_recipe(self):
        """The last student's :class:`~flowtts.sampling.recipe.SamplingRecipe`: ``end_steps``, cfg 0, nested grid."""
        from flowtts.sampling.recipe import SamplingRecipe

        return SamplingRecipe(steps=self.end_steps, cfg_strength=0.0, sway_sampling_coef=self.sway_coef, use_epss=False)

    def rounds(self) -> list[tuple[int, int]]:
        """``(teacher steps, student steps)`` of each round, e.g. ``[(32, 16), (16, 8), ..., (2, 1)]``."""
        schedule = halving_schedule(self.start_steps, self.end_steps)
        return list(zip(schedule, schedule[1:]))


def halving_schedule(start_steps: int = 32, end_steps: int = 1) -> tuple[int, ...]:
    """The step counts of the rounds, halving from ``start_steps`` to ``end_steps``: ``(32, 16, 8, 4, 2, 1)``."""
    for name, value in (("start_steps", start_steps), ("end_steps", end_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    ratio = start_steps // end_steps
    if start_steps <= end_steps or start_steps % end_steps or ratio & (ratio - 1):
        raise ValueError(f"start_steps must be end_steps times a power of two > 1, got {start_steps} and {end_steps}")
    schedule = [start_steps]
    while schedule[-1] > end_steps:
        schedule.append(schedule[-1] // 2)
    return tuple(schedule)


def round_grid(teacher_steps: int, sway_coef: float | None = None) -> torch.Tensor:
    """The teacher's grid of a round (uniform, or swayed); the student's is every other time of it."""
    from flowtts.sampling.grids import make_grid

    if teacher_steps % 2:
        raise ValueError(f"a round's teacher takes an even number of steps, got {teacher_steps}")
    return make_grid(teacher_steps, use_epss=False, sway_coef=sway_coef)


def grid_triples(teacher_grid: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` times ``(t_2i, t_2i+1, t_2i+2)``: each student step and the two teacher steps inside it."""
    grid = torch.as_tensor(teacher_grid)
    if grid.ndim != 1 or grid.numel() < 3 or (grid.numel() - 1) % 2:
        raise ValueError(f"a teacher grid needs an even number of steps, got {grid.numel() - 1}")
    return torch.stack((grid[:-1:2], grid[1::2], grid[2::2]), dim=1)


def two_step_target(teacher: StepMap, x: torch.Tensor, t0: Time, t1: Time, t2: Time) -> torch.Tensor:
    """The teacher's two steps ``t0 -> t1 -> t2`` from ``x`` (no gradient): the student's one-step target."""
    with torch.no_grad():
        return teacher(teacher(x, t0, t1), t1, t2)


def progressive_loss(
    student: StepMap,
    teacher: StepMap,
    x: torch.Tensor,
    t0: Time,
    t1: Time,
    t2: Time,
    *,
    mask: torch.Tensor | None = None,
    weighting: str = "velocity",
) -> torch.Tensor:
    """The student's one step against the teacher's two (see the module docstring).

    Args:
        student: The student's step map (with gradient), e.g. an Euler step of its velocity at cfg 0.
        teacher: The teacher's step map (the guided model, or the previous round's student).
        x: States at ``t0`` ``(b, ...)``, e.g. :func:`~flowtts.train.fewstep.velocity.renoise` of data.
        t0, t1, t2: The student's step ``t0 -> t2`` and the teacher's middle time (scalars or ``(b,)``).
        mask: Elements the loss is taken on (the generated frames).
        weighting: ``"velocity"``: divide the squared error by ``(t2 - t0)^2``; ``"state"``: leave it.

    Returns:
        The mean squared error, a 0-dim tensor.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    target = two_step_target(teacher, x, t0, t1, t2)
    squared = (student(x, t0, t2) - target).pow(2)
    if weighting == "velocity":
        squared = squared / (time_like(t2, x) - time_like(t0, x)).pow(2)
    return masked_mean(squared, mask)
