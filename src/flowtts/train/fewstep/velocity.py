"""What the few-step methods share: velocities, step maps, re-noising, the data prediction, a multistep sampler.

Convention (flowtts's and F5-TTS's): noise ``x_0`` at ``t = 0``, data ``x_1`` at ``t = 1``, the path
``x_t = (1 - t) x_0 + t x_1`` and the velocity target ``x_1 - x_0``.

Three kinds of plain function carry a model into the methods, so that the same objective runs on a
``CFM`` and on an analytic problem:

* a *velocity* ``v(t, x) -> dx/dt`` (what :func:`flowtts.sampling.integrate` solves);
* a *step map* ``step(x, t0, t1) -> x at t1``: one solver step of a model (an Euler step of its velocity,
  guidance folded in or not), several sub-steps of a teacher, or an exact flow map;
* a *data prediction* ``predict(x, t) -> x_1``: where the model sends ``x_t`` in one jump,
  ``x + (1 - t) v(t, x)`` for an Euler jump (a consistency function, DMD's "denoised" sample).

Times are a float, a 0-dim tensor, or a ``(b,)`` tensor (one time per sample, broadcast over the other
axes with :func:`time_like`); the ``CFM`` adapter :func:`model_step_map` takes one time per call.

Shapes: ``b`` batch, then any state shape (``n d`` for mels).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowtts.sampling.solvers import integrate

Time = float | torch.Tensor
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepMap = Callable[[torch.Tensor, Time, Time], torch.Tensor]
DataPrediction = Callable[[torch.Tensor, Time], torch.Tensor]


def time_like(t: Time, x: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of ``x``'s dtype and device that broadcasts against ``x``.

    Args:
        t: A float, a 0-dim tensor, or a ``(b,)`` tensor with ``b = x.shape[0]``.
        x: The state ``(b, ...)``.

    Returns:
        A 0-dim tensor, or ``(b, 1, ..., 1)`` with ``x.ndim`` axes.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and t.shape[0] == x.shape[0]:
        return t.reshape(-1, *([1] * (x.ndim - 1)))
    raise ValueError(f"a time must be a scalar or one per sample ({x.shape[0]},), got shape {tuple(t.shape)}")


def renoise(x1: torch.Tensor, noise: torch.Tensor, t: Time) -> torch.Tensor:
    """The point of the path from ``noise`` to ``x1`` at time ``t``: ``(1 - t) noise + t x1``."""
    t = time_like(t, x1)
    return (1 - t) * noise + t * x1


def flow_target(x1: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching velocity target ``x1 - noise``."""
    return x1 - noise


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the elements where ``mask`` is true (all elements without a mask).

    Args:
        values: Any shape ``(b, ...)``.
        mask: Boolean or 0/1 weights broadcastable to ``values`` after adding trailing axes
            (a ``(b, n)`` frame mask for ``(b, n, d)`` mels).
    """
    if mask is None:
        return values.mean()
    weight = mask.to(device=values.device, dtype=values.dtype)
    while weight.ndim < values.ndim:
        weight = weight[..., None]
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum()


def predict_data(velocity: Velocity, x: torch.Tensor, t: Time) -> torch.Tensor:
    """The data a velocity reaches in one Euler jump from ``(t, x)``: ``x + (1 - t) v(t, x)``.

    For the exact flow-matching velocity this is the posterior mean ``E[x_1 | x_t = x]``.
    """
    return x + (1 - time_like(t, x)) * velocity(t, x)


def guided(cond: Velocity, uncond: Velocity, cfg_strength: float) -> Velocity:
    """F5-TTS's classifier-free guidance as one velocity: ``v_c + cfg (v_c - v_u)``.

    With ``cfg_strength = 0`` it is ``cond`` itself (one network call).
    """
    if cfg_strength == 0:
        return cond

    def velocity(t, x):
        v = cond(t, x)
        return v + cfg_strength * (v - uncond(t, x))

    return velocity


def euler_map(velocity: Velocity) -> StepMap:
    """The step map of one Euler step of ``velocity``: ``x + (t1 - t0) v(t0, x)`` (per-sample times allowed)."""

    def step(x, t0, t1):
        return x + (time_like(t1, x) - time_like(t0, x)) * velocity(t0, x)

    return step


def solver_map(velocity: Velocity, *, substeps: int = 1, method: str = "euler", grad: str = "none") -> StepMap:
    """The step map of ``substeps`` uniform solver steps of ``velocity`` between ``t0`` and ``t1``.

    A teacher that takes several of its own steps per student step. Runs :func:`flowtts.sampling.integrate`
    (one time per call).

    Args:
        velocity: ``v(t, x)``.
        substeps: Solver steps between ``t0`` and ``t1``.
        method: ``"euler"`` or ``"midpoint"``.
        grad: The solver's grad mode (``"none"`` for a frozen teacher).
    """
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")

    def step(x, t0, t1):
        t0, t1 = _scalar_time(t0), _scalar_time(t1)
        grid = torch.linspace(t0, t1, substeps + 1, dtype=x.dtype, device=x.device)
        return integrate(velocity, x, grid, method=method, grad=grad).x

    return step


def jump_to_data(step: StepMap) -> DataPrediction:
    """The data prediction of a step map: one step to ``t = 1``, and the identity at ``t = 1``.

    For a model's Euler step this is ``x + (1 - t) v(t, x)``, the consistency parametrisation of
    :mod:`~flowtts.train.fewstep.consistency`; the identity at ``t = 1`` is exact whatever the model says.
    """

    def predict(x, t):
        t_ = time_like(t, x)
        if t_.ndim == 0:
            return x if float(t_) >= 1 else step(x, t, 1.0)
        out = step(x, t, torch.ones_like(torch.as_tensor(t, dtype=x.dtype, device=x.device)))
        return torch.where(t_ >= 1, x, out)

    return predict


def multistep_sample(
    predict: DataPrediction,
    noise: torch.Tensor,
    grid: torch.Tensor,
    *,
    upto: int | None = None,
    fresh_noise: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The re-noising sampler of consistency models and DMD2: predict the data, re-noise, predict again.

    With ``grid = (t_0 = 0, t_1, ..., t_K = 1)``: ``x <- noise``; for ``k < K``: ``x1_hat = predict(x, t_k)``,
    then ``x <- (1 - t_{k+1}) z_k + t_{k+1} x1_hat`` (no re-noising after the last step). ``z_k`` is fresh
    Gaussian noise (Song et al.'s multistep consistency sampling) or, with ``fresh_noise=False``, the noise
    the prediction implies, ``z = (x - t_k x1_hat) / (1 - t_k)``; for ``predict = x + (1 - t) v`` the latter
    is exactly the Euler step of ``v`` on ``grid``, so an Euler-sampled student is the special case.

    Args:
        predict: The data prediction (a consistency function, a student's one-jump prediction).
        noise: The initial state ``x_{t_0}``.
        grid: ``K + 1`` increasing times, ``grid[-1] = 1``; the model is called at ``grid[:-1]``.
        upto: Run only ``upto`` steps and return the state at ``grid[upto]`` that step ``upto`` starts from
            (DMD2's backward simulation: a student's input as its own sampler produces it).
        fresh_noise: Re-noise with fresh noise (drawn from ``generator``) or with the implied noise.
        generator: Random source of the fresh noises.

    Returns:
        The sample (``x1_hat`` of the last step), or the state at ``grid[upto]``.
    """
    grid = torch.as_tensor(grid, dtype=noise.dtype, device=noise.device)
    steps = grid.numel() - 1
    if grid.ndim != 1 or steps < 1 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError(f"grid must be 1-D, at least 2 times, strictly increasing, got {grid.tolist()}")
    if upto is not None and not 0 <= upto < steps:
        raise ValueError(f"upto must be in 0..{steps - 1}, got {upto}")
    x = noise
    last = steps if upto is None else upto
    for k in range(last):
        t, t_next = grid[k], grid[k + 1]
        x1_hat = predict(x, t)
        if upto is None and k == steps - 1:
            return x1_hat
        if fresh_noise:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        else:
            z = (x - t * x1_hat) / (1 - t)
        x = renoise(x1_hat, z, t_next)
    return x


def flow_matching_loss(
    velocity: Velocity, x1: torch.Tensor, noise: torch.Tensor, t: Time, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The flow-matching loss ``mean |v(t, x_t) - (x1 - noise)|^2`` at ``x_t = renoise(x1, noise, t)``."""
    pred = velocity(t, renoise(x1, noise, t))
    return masked_mean((pred - flow_target(x1, noise)).pow(2), mask)


def model_step_map(
    model, cond, text, duration, *, cfg_strength: float, cache: bool, substeps: int = 1, **sample_kwargs
) -> StepMap:
    """A ``CFM``-like model's solver step(s) between two times, as a step map.

    ``step(x, t0, t1)`` is the last state of ``model.sample(cond, text, duration, noise=x, t_grid=...,
    cfg_strength=cfg_strength, cache=cache, ...)`` on ``substeps`` uniform steps from ``t0`` to ``t1``: the
    raw ODE state (prompt frames not copied in), so a loss on it should be masked to the generated frames.

    Args:
        model: A :class:`flowtts.CFM` (anything with its ``sample`` signature).
        cond: Prompt mel ``b n_prompt d`` or wave, as ``sample`` takes it.
        text: Texts or ids, as ``sample`` takes them.
        duration: Total frames; ``x`` must be ``(b, max duration, d)``.
        cfg_strength: Guidance folded into the step (the teacher's weight; 0 for a student: one call).
        cache: ``True`` for a frozen teacher (fast, no graph); ``False`` for a student (differentiable).
        substeps: Solver steps from ``t0`` to ``t1`` (a teacher's several steps per student step).
        **sample_kwargs: More ``sample`` arguments (``lens``, ``isolate_batch``, ``grad_checkpoint``, ``dtype``).

    Returns:
        ``step(x, t0, t1)``; the times are floats or 0-dim tensors (one per call).
    """

    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")

    def step(x, t0, t1):
        grid = torch.linspace(_scalar_time(t0), _scalar_time(t1), substeps + 1, dtype=torch.float64).tolist()
        _, trajectory = model.sample(
            cond,
            text,
            duration,
            noise=x,
            steps=substeps,
            t_grid=grid,
            sway_sampling_coef=None,
            cfg_strength=cfg_strength,
            cache=cache,
            **sample_kwargs,
        )
        return trajectory[-1]

    return step


def _scalar_time(t: Time) -> float:
    t = torch.as_tensor(t)
    if t.numel() != 1:
        raise ValueError(f"this step map takes one time per call, got shape {tuple(t.shape)}")
    return float(t)
