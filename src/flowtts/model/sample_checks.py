"""Checks of :meth:`flowtts.CFM.sample`'s arguments: each raises ``TypeError``/``ValueError`` naming the argument.

Nothing here touches a model's state; :meth:`CFM.sample` runs :func:`check_settings` before anything
else, and the tensor checks as it prepares its inputs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from flowtts.sampling.grids import check_sway
from flowtts.sampling.solvers import STEP_RULES, check_grad_options

ODEINT_KEYS_IGNORED = ("atol", "rtol")  # accepted as in F5-TTS; meaningless on a fixed grid
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
ID_DTYPES = (torch.int64, torch.int32, torch.int16)  # hold -1 padding and every id of a vocabulary
# Longest call, in seconds of frames (prompt included): F5-TTS trains on utterances of at most 30 s, so more
# is no speech it learned, and attention grows with the square of the length (10**7 frames would run for
# days). Synthesis chunks longer texts; a call asking for more is refused (MAX_SECONDS of README).
MAX_SECONDS = 60.0
# Largest guidance strength. F5-TTS samples with 2; on the built-in teacher (8 steps) the mel leaves the
# range of speech as the strength grows: peak sample 0.47 at 2, 1.37 (clipping) at 10, 6.2 at 20, 3e3 at 50,
# NaN at 1e3. Up to 10 stays for experiments; beyond it the output is noise.
MAX_CFG_STRENGTH = 10.0
DEFAULT_FRAME_RATE = (24_000, 256)  # F5-TTS's sample rate and hop, for a custom front end that does not say


def is_int(value) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_t_grid(t_grid, sway_sampling_coef) -> torch.Tensor:
    """``t_grid`` as a float64 tensor, or a ``ValueError`` saying what is wrong with it.

    A tensor that requires grad keeps its graph, so the differentiable path gives gradients with
    respect to the solver times (learned step schedules).
    """
    if sway_sampling_coef is not None:
        raise ValueError("t_grid is an explicit grid: pass sway_sampling_coef=None with it")
    try:
        grid = torch.as_tensor(t_grid).to(torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"t_grid must be a sequence of numbers, got {t_grid!r}") from error
    values = grid.detach().cpu()
    if values.dim() != 1 or values.numel() < 2:
        raise ValueError(f"t_grid must be 1-D with at least 2 times, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()) or float(values[0]) < 0 or float(values[-1]) > 1:
        raise ValueError(f"t_grid must lie in [0, 1], got {values.tolist()}")
    if not bool((values[1:] > values[:-1]).all()):
        raise ValueError(f"t_grid must be strictly increasing, got {values.tolist()}")
    return grid


def check_settings(
    *,
    cache,
    grad_checkpoint,
    backprop_steps,
    t_grid,
    steps,
    odeint_kwargs: dict,
    cfg_strength,
    sway_sampling_coef,
    max_duration,
    vocoder,
) -> tuple[torch.Tensor | None, int, str]:
    """The settings of one call that need no tensors: ``(explicit grid or None, step count, step rule)``."""
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False, got {cache!r}")
    if cache and (grad_checkpoint or backprop_steps is not None):
        raise ValueError("grad_checkpoint and backprop_steps apply to the differentiable path: pass cache=False")
    grid = None
    if t_grid is not None:
        grid = check_t_grid(t_grid, sway_sampling_coef)
        steps = grid.numel() - 1
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    check_grad_options("checkpoint" if grad_checkpoint else "full", backprop_steps, int(steps))
    method = odeint_kwargs.get("method", "euler")
    unknown = set(odeint_kwargs) - {"method", *ODEINT_KEYS_IGNORED}
    if method not in STEP_RULES or unknown:
        raise ValueError(
            f"odeint_kwargs must name a method in {tuple(STEP_RULES)} (got {method!r}"
            + (f"; unsupported keys {sorted(unknown)}" if unknown else "")
            + ")"
        )
    check_cfg_strength(cfg_strength)
    if sway_sampling_coef is not None:
        check_sway(sway_sampling_coef)
    check_max_duration(max_duration)
    if vocoder is not None and not callable(vocoder):
        raise TypeError("vocoder must be callable (mel b d n -> wave)")
    return grid, int(steps), method


def check_cfg_strength(value, name: str = "cfg_strength") -> None:
    """``value`` is a guidance strength from 0 to :data:`MAX_CFG_STRENGTH` (``name`` says what it is called)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_CFG_STRENGTH
    ):
        raise ValueError(
            f"{name} must be a finite number from 0 to {MAX_CFG_STRENGTH:g} (F5-TTS uses 2; more gives noise), "
            f"got {value!r}"
        )


def check_max_duration(value) -> None:
    """``max_duration`` is an integer of at least 2 frames."""
    if not is_int(value) or value < 2:
        raise ValueError(f"max_duration must be an integer >= 2, got {value!r}")


def frame_limit(mel_spec) -> int:
    """Frames of :data:`MAX_SECONDS` at the sample rate and hop of ``mel_spec`` (F5-TTS's when it does not say)."""
    rate = getattr(mel_spec, "target_sample_rate", None) or DEFAULT_FRAME_RATE[0]
    hop = getattr(mel_spec, "hop_length", None) or DEFAULT_FRAME_RATE[1]
    return int(MAX_SECONDS * rate / hop)


def check_frames(total: int, limit: int, requested) -> None:
    """A call's ``total`` frames (the longest sample, prompt included) are at most ``limit``
    (:func:`frame_limit`); ``requested`` is the ``duration`` argument, for the message."""
    if total > limit:
        asked = requested.tolist() if torch.is_tensor(requested) else requested
        raise ValueError(
            f"duration asks for {total} frames (duration={asked!r}, after max_duration and the text/prompt "
            f"minimum); one sample() call takes at most {MAX_SECONDS:g} s, {limit} frames: split the text "
            "(flowtts.synthesize does)"
        )


def check_cond(cond, num_channels: int, min_samples: int | None) -> None:
    """``cond`` is a finite mel ``(b, n, num_channels)`` or a wave ``(b, nw)`` of at least ``min_samples``."""
    if not torch.is_tensor(cond) or not cond.is_floating_point():
        raise TypeError("cond must be a floating tensor: a mel (b, n, d) or a wave (b, nw)")
    if cond.ndim not in (2, 3):
        raise ValueError(f"cond must be a mel (b, n, d) or a wave (b, nw), got shape {tuple(cond.shape)}")
    if cond.shape[0] == 0:
        raise ValueError("cond has a batch of 0 items")
    if cond.ndim == 3 and cond.shape[-1] != num_channels:
        raise ValueError(
            f"cond mel has {cond.shape[-1]} channels, expected num_channels={num_channels} "
            "(mels are (batch, frames, channels))"
        )
    if cond.shape[1] == 0:
        raise ValueError("cond has no frames")
    if cond.ndim == 2 and min_samples is not None and cond.shape[1] < min_samples:
        raise ValueError(
            f"cond is a wave of {cond.shape[1]} samples; the mel front end needs at least {min_samples} "
            "(more than half an FFT window)"
        )
    if not torch.isfinite(cond).all():
        raise ValueError("cond contains NaN or Inf values")


def check_text_items(text) -> None:
    """``text`` is a non-empty list of strings or unit lists (not one string)."""
    if isinstance(text, str):
        raise TypeError("text must be a list of strings (one per batch item) or an int tensor, got a str")
    if not isinstance(text, Sequence):
        raise TypeError(f"text must be a list of strings or an int tensor, got {type(text).__name__}")
    if len(text) == 0:
        raise ValueError("text is an empty list: give one string per batch item")
    for i, item in enumerate(text):
        if isinstance(item, str):
            continue
        if isinstance(item, Sequence) and all(isinstance(unit, str) for unit in item):
            continue
        raise TypeError(f"text[{i}] must be a string (or a list of unit strings), got {type(item).__name__}")


def check_text_tensor(text: torch.Tensor) -> None:
    """Ids ``(b, nt)`` of an integer type that holds ``-1`` padding."""
    if text.ndim != 2 or text.dtype.is_floating_point or text.dtype == torch.bool:
        raise TypeError(f"text tensor must be integer ids of shape (batch, nt), got {text.dtype} {tuple(text.shape)}")
    if text.dtype not in ID_DTYPES:
        raise TypeError(
            f"text ids must be int64, int32 or int16 (they hold -1 padding and every vocabulary id), got {text.dtype}"
        )


def check_text_ids(ids: torch.Tensor, batch: int, vocab_size: int | None) -> None:
    """Tokenised ``ids`` fit the batch, are not empty, and lie in the vocabulary."""
    if ids.shape[0] != batch:
        raise ValueError(f"text has batch size {ids.shape[0]} but cond has {batch}")
    empty = ((ids != -1).sum(dim=-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"text is empty for batch item(s) {empty}")
    if vocab_size is not None and ((ids < -1) | (ids >= vocab_size)).any():
        raise ValueError(
            f"text ids must lie in 0..{vocab_size - 1} (text_num_embeds={vocab_size}) or be -1 padding, "
            f"got range {int(ids.min())}..{int(ids.max())}"
        )


def check_lens(lens, batch: int, cond_len: int, device) -> torch.Tensor:
    """Prompt lengths ``(b,)`` within ``1..cond_len`` (default: all of ``cond``)."""
    if lens is None:
        return torch.full((batch,), cond_len, device=device, dtype=torch.long)
    if not torch.is_tensor(lens) or lens.dtype.is_floating_point or lens.shape != (batch,):
        raise ValueError(f"lens must be an integer tensor of shape ({batch},)")
    lens = lens.to(device=device, dtype=torch.long)
    if (lens < 1).any() or (lens > cond_len).any():
        raise ValueError(f"lens must lie in 1..{cond_len} (the prompt's frame count), got {lens.tolist()}")
    return lens


def check_duration(duration, batch: int, device) -> torch.Tensor:
    """Total frames per sample as a ``(b,)`` long tensor."""
    if torch.is_tensor(duration):
        if duration.dtype.is_floating_point or duration.dtype == torch.bool:
            raise TypeError(f"duration tensor must hold integers, got {duration.dtype}")
        if duration.ndim == 0:
            duration = duration.expand(batch)
        if duration.shape != (batch,):
            raise ValueError(f"duration must be an int or a tensor of shape ({batch},), got {tuple(duration.shape)}")
        if (duration < 1).any():
            raise ValueError(f"duration must be positive, got {duration.tolist()}")
        return duration.to(device=device, dtype=torch.long)
    if not is_int(duration):
        raise TypeError(f"duration must be a positive int or an integer tensor, got {duration!r}")
    if duration < 1:
        raise ValueError(f"duration must be positive, got {duration}")
    return torch.full((batch,), int(duration), device=device, dtype=torch.long)


def check_seed(seed, batch: int) -> list[int] | None:
    """One seed per sample (``None``: draw from the global RNG)."""
    if seed is None:
        return None
    seeds = [seed] * batch if is_int(seed) else seed
    if not (isinstance(seeds, Sequence) and len(seeds) == batch and all(is_int(s) for s in seeds)):
        raise ValueError(f"seed must be None, an int, or a sequence of {batch} ints, got {seed!r}")
    lo, hi = SEED_RANGE
    if any(not lo <= s <= hi for s in seeds):
        raise ValueError(f"seed must lie in {lo}..{hi}, got {seed!r}")
    return [int(s) for s in seeds]


def check_edit_mask(edit_mask, batch: int, cond_len: int) -> None:
    well_formed = torch.is_tensor(edit_mask) and edit_mask.dtype == torch.bool
    if not well_formed or edit_mask.shape != (batch, cond_len):
        raise ValueError(f"edit_mask must be a bool tensor of shape {(batch, cond_len)}")


def check_noise(noise, expected: tuple[int, int, int]) -> None:
    """A finite floating tensor of the shape the call samples."""
    if not torch.is_tensor(noise) or not noise.is_floating_point():
        raise TypeError("noise must be a floating tensor")
    if tuple(noise.shape) != expected:
        raise ValueError(
            f"noise must have shape {expected} (batch, clamped max duration, channels), got {tuple(noise.shape)}"
        )
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or Inf values")
