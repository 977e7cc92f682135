"""Time grids for the flow ODE: pure functions returning float32 tensors from 0 to 1.

They compose: ``sway(epss(7), -1.0)`` is F5-TTS's default 7-step grid with sway sampling.
"""

from __future__ import annotations

import math

import torch

# Empirically pruned step sampling (EPSS): hand-picked grids on a 1/32 lattice for low step counts.
EPSS_GRIDS: dict[int, tuple[int, ...]] = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def uniform(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``steps + 1`` evenly spaced times in [0, 1]."""
    _check_steps(steps)
    return torch.linspace(0, 1, steps + 1, device=device, dtype=torch.float32)


def epss(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """F5-TTS's EPSS grid for 5, 6, 7, 10, 12 or 16 steps; the uniform grid otherwise."""
    _check_steps(steps)
    lattice = EPSS_GRIDS.get(steps)
    if lattice is None:
        return uniform(steps, device)
    return (1 / 32) * torch.tensor(lattice, device=device, dtype=torch.float32)


# The sway map t + c (cos(pi t / 2) - 1 + t) has slope 1 + c (1 - pi/2 sin(pi t / 2)) on [0, 1]; it stays
# increasing from 0 to 1 exactly when -1 <= c <= 1 / (pi/2 - 1) (F5-TTS's default -1 is the lower end).
SWAY_RANGE = (-1.0, 1.0 / (math.pi / 2 - 1))


def check_sway(coef) -> float:
    """``coef`` as a float, or a ``ValueError`` when it is not a number in :data:`SWAY_RANGE`."""
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef):
        raise ValueError(f"sway_sampling_coef must be None or a finite number, got {coef!r}")
    lo, hi = SWAY_RANGE
    if not lo <= coef <= hi:
        raise ValueError(
            f"sway_sampling_coef must lie in [{lo:g}, {hi:.4f}] (the range that keeps the time grid increasing "
            f"from 0 to 1), got {coef!r}"
        )
    return float(coef)


def sway(t: torch.Tensor, coef: float | None) -> torch.Tensor:
    """Sway sampling ``t + coef * (cos(pi t / 2) - 1 + t)``; negative ``coef`` crowds steps near 0.

    Raises:
        ValueError: ``coef`` outside :data:`SWAY_RANGE`, where the grid would leave [0, 1] or turn back.
    """
    if coef is None:
        return t
    coef = check_sway(coef)
    return t + coef * (torch.cos(torch.pi / 2 * t) - 1 + t)


def make_grid(
    steps: int,
    *,
    use_epss: bool = True,
    sway_coef: float | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The grid :meth:`flowtts.CFM.sample` uses: EPSS (or uniform) followed by sway sampling."""
    t = epss(steps, device) if use_epss else uniform(steps, device)
    return sway(t, sway_coef)
