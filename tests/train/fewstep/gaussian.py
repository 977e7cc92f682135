"""The analytic problem of the few-step tests: flow matching from N(0, I) noise to N(mean, diag(std^2)) data.

On the path x_t = (1 - t) x_0 + t x_1 the marginal at t is N(t mean, s_t^2) with s_t^2 = (1 - t)^2 + t^2 std^2,
and everything is closed-form (per dimension):

    velocity   v(t, x)        = mean + (t std^2 - (1 - t)) / s_t^2 * (x - t mean)
    flow map   x_t0 -> x_t1   = t1 mean + s_t1 / s_t0 * (x - t0 mean)        (so x_1 = mean + std x_0)
    prediction E[x_1 | x_t]   = mean + t std^2 / s_t^2 * (x - t mean)       (= x + (1 - t) v)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowtts.train.fewstep.velocity import time_like


class Gaussian:
    """Data N(mean, diag(std^2)) in float64; times are scalars or one per sample."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.std = torch.as_tensor(std, dtype=torch.float64)

    def scale(self, t, x):
        t = time_like(t, x)
        return ((1 - t) ** 2 + t**2 * self.std**2).sqrt()

    def velocity(self, t, x):
        tt = time_like(t, x)
        return self.mean + (tt * self.std**2 - (1 - tt)) / self.scale(t, x) ** 2 * (x - tt * self.mean)

    def flow(self, x, t0, t1):
        """The exact flow map from time t0 to t1 (a step map)."""
        return time_like(t1, x) * self.mean + self.scale(t1, x) / self.scale(t0, x) * (x - time_like(t0, x) * self.mean)

    def predict(self, x, t):
        tt = time_like(t, x)
        return self.mean + tt * self.std**2 / self.scale(t, x) ** 2 * (x - tt * self.mean)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mean + self.std * noise(n, self.mean.numel(), generator)


def noise(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n, dim, generator=generator, dtype=torch.float64)


class HatField(nn.Module):
    """A velocity linear in x with piecewise-linear time features: v(t, x) = a(t) * x + b(t).

    a and b interpolate linearly between values at the knots t = k / intervals, so at the knots every
    affine velocity is representable exactly (the exact answers of the Gaussian problem are affine in x).
    """

    def __init__(self, dim: int, intervals: int):
        super().__init__()
        self.intervals = intervals
        self.a = nn.Parameter(torch.zeros(intervals + 1, dim, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(intervals + 1, dim, dtype=torch.float64))

    def set_to(self, gaussian: Gaussian) -> HatField:
        """Take the exact velocity of ``gaussian`` at the knots (a teacher's weights)."""
        t = torch.arange(self.intervals + 1, dtype=torch.float64)[:, None] / self.intervals
        slope = (t * gaussian.std**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * gaussian.std**2)
        with torch.no_grad():
            self.a.copy_(slope)
            self.b.copy_(gaussian.mean * (1 - slope * t))
        return self

    def forward(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype)
        knots = torch.arange(self.intervals + 1, dtype=x.dtype)
        hats = (1 - (t[..., None] * self.intervals - knots).abs()).clamp(min=0)  # (..., knots)
        return (hats @ self.a) * x + hats @ self.b


@pytest.fixture(autouse=True)
def single_thread():
    """Tests importing this run on one thread: with tiny tensors on a shared CPU, more threads only wait
    for each other (a tiny DiT call went from 0.02 s to 3.7 s on two busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
