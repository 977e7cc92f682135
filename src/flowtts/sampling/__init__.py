"""Fixed-grid ODE integration with selectable gradient modes, and time grids."""

from flowtts.sampling.checkpoint import checkpoint
from flowtts.sampling.grids import epss, make_grid, sway, uniform
from flowtts.sampling.solvers import (
    GRAD_MODES,
    STEP_RULES,
    ODESolution,
    SplitVelocity,
    euler_step,
    integrate,
    midpoint_step,
)

__all__ = [
    "GRAD_MODES",
    "STEP_RULES",
    "ODESolution",
    "checkpoint",
    "epss",
    "euler_step",
    "integrate",
    "SplitVelocity",
    "make_grid",
    "midpoint_step",
    "sway",
    "uniform",
]
