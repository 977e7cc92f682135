"""Fixed-grid ODE integration over a velocity function ``v(t, x)``, with explicit gradient modes.

This module is the one place where the sampler's grad modes live:

* ``"none"``: no autograd at all (fast inference).
* ``"full"``: plain backprop; every step's activations are kept for backward.
* ``"checkpoint"``: each step keeps only its input state and is recomputed during backward
  (dropout masks reproduced); memory no longer grows with the step count beyond one state per step.

A velocity that is a fixed combination of separately computable parts (classifier-free guidance: a
conditional and an unconditional branch) can say so with :class:`SplitVelocity`; the checkpoint mode
then recomputes and backpropagates one part at a time, so backward holds the activations of half a
step instead of a whole one.

Independently, ``backprop_steps=K`` truncates backprop to the last ``K`` steps: the earlier ones run
without a graph (no activations kept, no recompute cost).

The step rules match torchdiffeq's fixed-grid ``euler`` and ``midpoint`` operation for operation,
so on the same grid they give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowtts.sampling.checkpoint import checkpoint

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepRule = Callable[[Velocity, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

GRAD_MODES = ("none", "full", "checkpoint")


@dataclass(frozen=True)
class SplitVelocity:
    """A velocity ``combine([part(t, x) for part in parts])``, optionally with a fused equivalent.

    Attributes:
        parts: Velocity-like callables evaluated separately.
        combine: Maps the parts' outputs (in order) to the velocity.
        joint: A faster callable computing the same function in one go (e.g. both CFG branches as one
            batch), used outside the checkpoint mode; ``None`` evaluates the parts. It must compute
            the same function as the parts, random draws included (pass ``None`` when stochastic
            layers such as dropout are active, so every grad mode draws the same masks).
    """

    parts: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]
    joint: Velocity | None = None

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.joint is not None:
            return self.joint(t, x)
        return self.combine([part(t, x) for part in self.parts])

    def checkpointed(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The parts, each under its own activation checkpoint."""
        return self.combine([checkpoint(part, t, x) for part in self.parts])


def _velocity_as(velocity: Velocity, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # The state and its update stay in the state's dtype whatever precision the network runs in.
    return velocity(t, x).to(x.dtype)


def euler_step(velocity: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """One explicit Euler step from ``t0`` to ``t1``."""
    dt = t1 - t0
    return x + dt * _velocity_as(velocity, t0, x)


def midpoint_step(velocity: Velocity, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    """One explicit midpoint step (two velocity evaluations) from ``t0`` to ``t1``."""
    dt = t1 - t0
    half = 0.5 * dt
    x_mid = x + _velocity_as(velocity, t0, x) * half
    return x + dt * _velocity_as(velocity, t0 + half, x_mid)


STEP_RULES: dict[str, StepRule] = {"euler": euler_step, "midpoint": midpoint_step}


@dataclass
class ODESolution:
    """Result of :func:`integrate`.

    Attributes:
        x: State at the last grid time.
        trajectory: States at every grid time ``(len(grid), *x.shape)`` when requested, else ``None``.
    """

    x: torch.Tensor
    trajectory: torch.Tensor | None = None


def check_grad_options(grad: str, backprop_steps: int | None, steps: int) -> None:
    """Raise ``ValueError`` for a grad mode or truncation that :func:`integrate` cannot honour."""
    if grad not in GRAD_MODES:
        raise ValueError(f"grad must be one of {GRAD_MODES}, got {grad!r}")
    if backprop_steps is None:
        return
    if isinstance(backprop_steps, bool) or not isinstance(backprop_steps, int):
        raise TypeError(f"backprop_steps must be an int or None, got {type(backprop_steps).__name__}")
    if not 1 <= backprop_steps <= steps:
        raise ValueError(f"backprop_steps must be in 1..steps={steps}, got {backprop_steps}")
    if grad == "none":
        raise ValueError("backprop_steps needs a grad mode with gradients ('full' or 'checkpoint'), got 'none'")


def integrate(
    velocity: Velocity,
    x0: torch.Tensor,
    grid: torch.Tensor,
    *,
    method: str = "euler",
    grad: str = "none",
    backprop_steps: int | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> ODESolution:
    """Integrate ``dx/dt = velocity(t, x)`` over the times in ``grid`` with a fixed-step rule.

    Args:
        velocity: Function ``v(t, x)``; ``t`` is a 0-dim tensor of the grid's dtype. A
            :class:`SplitVelocity` is checkpointed part by part.
        x0: State at ``grid[0]``.
        grid: 1-D tensor of times, at least two entries.
        method: Step rule, a key of :data:`STEP_RULES` (``"euler"`` or ``"midpoint"``).
        grad: ``"none"``, ``"full"`` or ``"checkpoint"`` (see the module docstring). The grad mode
            is set for the duration of the call and restored afterwards, also on error.
        backprop_steps: Build a graph for the last this many steps only (``None``: all steps).
        return_trajectory: Also return the states at every grid time.
        progress: Show a tqdm progress bar over steps.
        on_step: Called as ``on_step(i, steps)`` before step ``i`` (0-based); an exception it raises
            stops the integration and propagates (e.g. a request's time limit, or a cancel).

    Returns:
        An :class:`ODESolution`.
    """
    if method not in STEP_RULES:
        raise ValueError(f"method must be one of {tuple(STEP_RULES)}, got {method!r}")
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a 1-D tensor with at least 2 times, got shape {tuple(grid.shape)}")
    steps = grid.numel() - 1
    check_grad_options(grad, backprop_steps, steps)
    rule = STEP_RULES[method]
    first_graph_step = 0 if backprop_steps is None else steps - backprop_steps

    def step(x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return rule(velocity, x, t0, t1)

    split = isinstance(velocity, SplitVelocity)

    indices = range(steps)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="sampling", unit="step", leave=False)

    states = [x0] if return_trajectory else None
    x = x0
    with torch.set_grad_enabled(grad != "none"):
        for i in indices:
            if on_step is not None:
                on_step(i, steps)
            t0, t1 = grid[i], grid[i + 1]
            if i < first_graph_step:
                with torch.no_grad():
                    x = step(x, t0, t1)
            elif grad == "checkpoint" and split:  # keeps the step's input state(s); parts recomputed one by one
                x = rule(velocity.checkpointed, x, t0, t1)
            elif grad == "checkpoint":
                x = checkpoint(step, x, t0, t1)
            else:
                x = step(x, t0, t1)
            if states is not None:
                states.append(x)
    trajectory = torch.stack(states) if states is not None else None
    return ODESolution(x=x, trajectory=trajectory)
