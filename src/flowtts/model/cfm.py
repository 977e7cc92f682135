"""Conditional flow matching wrapper of F5-TTS: training loss and ``sample()``.

Shapes: ``b`` batch, ``n`` frames, ``nw`` wave samples, ``nt`` text tokens, ``d`` mel channels.

``sample(cache=True)`` is fast inference (no autograd, eval mode, text conditioning computed once).
``sample(cache=False)`` is differentiable: gradients flow from the output through every solver step
into the parameters, ``cond`` and the initial noise; the caller's train/eval mode is left alone.
Grad modes themselves live in :mod:`flowtts.sampling.solvers`.

``velocity_field()`` builds the ODE that one ``sample()`` call solves (a :class:`VelocityField`), for callers
that step it themselves, such as distillation's one-step segments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from flowtts.model import sample_checks as checks
from flowtts.model.mel import MelSpec
from flowtts.sampling.grids import make_grid
from flowtts.sampling.solvers import ODESolution, SplitVelocity, Velocity, integrate
from flowtts.text.tokenizers import tokens_to_tensor

if TYPE_CHECKING:
    from flowtts.config import ModelConfig


def lens_to_mask(lens: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """``b`` lengths -> ``b n`` boolean mask of valid positions."""
    length = int(lens.amax()) if length is None else length
    return torch.arange(length, device=lens.device)[None, :] < lens[:, None]


def mask_from_frac_lengths(
    seq_len: torch.Tensor, frac_lengths: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random span per sample covering ``frac_lengths`` of its length (the infill target)."""
    lengths = (frac_lengths * seq_len).long()
    max_start = seq_len - lengths
    rand = torch.rand(frac_lengths.shape, generator=generator, device=frac_lengths.device)
    start = (max_start * rand).long().clamp(min=0)
    end = start + lengths
    positions = torch.arange(int(seq_len.max()), device=seq_len.device)[None, :]
    return (positions >= start[:, None]) & (positions < end[:, None])


@dataclass
class FlowDraws:
    """Random choices of one flow-matching training step (see :meth:`CFM.draw`)."""

    span: torch.Tensor  # (b, n) frames to infill (the loss is taken there)
    noise: torch.Tensor  # (b, n, d)
    time: torch.Tensor  # (b,)
    drop_audio_cond: bool
    drop_text: bool

    def select(self, rows, frames: int) -> FlowDraws:
        """The draws of some batch rows, cut to ``frames`` frames (a rank's share of a global batch)."""
        return FlowDraws(
            self.span[rows, :frames], self.noise[rows, :frames], self.time[rows], self.drop_audio_cond, self.drop_text
        )


def _state_dtype(net_dtype: torch.dtype) -> torch.dtype:
    """The ODE state's dtype: float64 for a float64 network, float32 otherwise (autocast or not)."""
    return torch.float64 if net_dtype == torch.float64 else torch.float32


class _SamplingInputs(NamedTuple):
    """The checked tensors of one sampling call, before padding (see :meth:`CFM.velocity_field`)."""

    cond: torch.Tensor  # (b, n_cond, d) prompt mel in the parameters' dtype
    cond_mask: torch.Tensor  # (b, n_cond) prompt frames kept (lens and edit_mask)
    text_ids: torch.Tensor  # (b, nt) padded with -1
    duration: torch.Tensor  # (b,) total frames, raised to the text/prompt minimum and clamped


@dataclass(frozen=True)
class VelocityField:
    """The ODE of one sampling call (:meth:`CFM.velocity_field`): ``field(t, x)`` is the guided velocity.

    Built once per call; holds what every evaluation reuses. The state ``x`` is ``b n d`` in
    :attr:`state_dtype` (``n = duration.max()``), ``t`` a 0-dim tensor.

    Attributes:
        velocity: The network's velocity under the call's autocast, guidance folded in; for a guided DiT a
            :class:`~flowtts.sampling.solvers.SplitVelocity` whose two branches the checkpoint grad mode
            recomputes one at a time.
        cond: The prompt mel ``b n d`` zero-padded to ``n`` frames (all zeros with ``no_ref_audio``), in
            the parameters' dtype.
        cond_mask: ``b n 1`` prompt frames kept in the output (:meth:`with_prompt`).
        duration: ``b`` total frames of each sample.
        method: The model's step rule (``odeint_kwargs["method"]``), used by :meth:`solve`.
    """

    velocity: Velocity | SplitVelocity
    cond: torch.Tensor
    cond_mask: torch.Tensor
    duration: torch.Tensor
    method: str = "euler"

    @property
    def state_dtype(self) -> torch.dtype:
        return _state_dtype(self.cond.dtype)

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.velocity(t, x)

    def solve(
        self,
        x0: torch.Tensor,
        t_grid: Sequence[float] | torch.Tensor,
        *,
        grad: str | None = None,
        backprop_steps: int | None = None,
        return_trajectory: bool = False,
        progress: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> ODESolution:
        """Integrate from ``x0`` at ``t_grid[0]`` over ``t_grid`` with :attr:`method` (the raw ODE state:
        no prompt frames copied in; see :meth:`with_prompt`).

        Args:
            x0: Initial state ``b n d`` (noise, or a state at ``t_grid[0]``); moved to the state's dtype.
            t_grid: Solver times (a sequence or tensor, increasing in [0, 1]; not checked here).
            grad: A grad mode of :func:`~flowtts.sampling.solvers.integrate`; ``None``: ``"full"`` when
                grad is enabled, else ``"none"``.
            backprop_steps, return_trajectory, progress, on_step: As in :func:`~flowtts.sampling.integrate`.
        """
        if grad is None:
            grad = "full" if torch.is_grad_enabled() else "none"
        device, dtype = self.cond.device, self.state_dtype
        return integrate(
            self.velocity,
            x0.to(device=device, dtype=dtype),
            torch.as_tensor(t_grid).to(device=device, dtype=dtype),
            method=self.method,
            grad=grad,
            backprop_steps=backprop_steps,
            return_trajectory=return_trajectory,
            progress=progress,
            on_step=on_step,
        )

    def with_prompt(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the kept prompt frames copied in (what :meth:`CFM.sample` returns)."""
        return torch.where(self.cond_mask, self.cond.to(self.state_dtype), x)


def _under_autocast(autocast, velocity: Velocity | SplitVelocity) -> Velocity | SplitVelocity:
    """``velocity`` with every evaluation under ``autocast`` (each part of a split velocity too)."""

    def wrap(fn):
        def wrapped(t, x):
            with autocast:
                return fn(t, x)

        return wrapped

    if not isinstance(velocity, SplitVelocity):
        return wrap(velocity)
    joint = wrap(velocity.joint) if velocity.joint is not None else None
    return SplitVelocity(parts=tuple(wrap(part) for part in velocity.parts), combine=velocity.combine, joint=joint)


class CFM(nn.Module):
    """Flow-matching text-to-speech model around a velocity backbone (normally :class:`flowtts.DiT`).

    Constructor arguments are F5-TTS's.

    Args:
        transformer: Backbone ``transformer(x, cond, text, time, mask, ...)``.
        sigma: Minimum noise level of the flow (kept for compatibility; F5-TTS uses 0).
        odeint_kwargs: ``{"method": "euler" | "midpoint"}`` (``atol``/``rtol`` are accepted and unused).
        audio_drop_prob: Probability of dropping the prompt audio in training.
        cond_drop_prob: Probability of dropping audio and text together in training.
        num_channels: Mel channels (default: the mel front end's).
        mel_spec_module: Custom waveform -> mel module.
        mel_spec_kwargs: Arguments of :class:`flowtts.model.mel.MelSpec`.
        frac_lengths_mask: Range of the fraction of frames to infill in training.
        vocab_char_map: Character -> id map; ``None`` tokenizes UTF-8 bytes.

    Attributes set from outside (``None`` on a model built from its constructor):
        config: The :class:`~flowtts.ModelConfig` it was built from (:func:`flowtts.model.build.build_model`).
        metadata: What a flowtts model file records besides the config and vocabulary (its sampling
            recipe among it); ``None`` for an F5-TTS checkpoint or a model built in memory.
        preset: The preset name an F5-TTS checkpoint was loaded as (``None`` when given as a config).
        quantized: ``"int8"`` after :func:`flowtts.model.quantize.quantize` (inference only).
        checkpoint_format: ``"f5tts"`` or ``"flowtts"``: the kind of file :func:`flowtts.load` read it from.
    """

    config: ModelConfig | None
    metadata: dict[str, Any] | None
    preset: str | None
    quantized: str | None
    checkpoint_format: str | None

    def __init__(
        self,
        transformer: nn.Module,
        sigma: float = 0.0,
        odeint_kwargs: dict | None = None,
        audio_drop_prob: float = 0.3,
        cond_drop_prob: float = 0.2,
        num_channels: int | None = None,
        mel_spec_module: nn.Module | None = None,
        mel_spec_kwargs: dict | None = None,
        frac_lengths_mask: tuple[float, float] = (0.7, 1.0),
        vocab_char_map: dict[str, int] | None = None,
    ):
        super().__init__()
        self.frac_lengths_mask = frac_lengths_mask
        self.mel_spec = mel_spec_module if mel_spec_module is not None else MelSpec(**(mel_spec_kwargs or {}))
        self.num_channels = num_channels if num_channels is not None else self.mel_spec.n_mel_channels
        self.audio_drop_prob = audio_drop_prob
        self.cond_drop_prob = cond_drop_prob
        self.transformer = transformer
        self.dim = getattr(transformer, "dim", None)
        self.sigma = sigma
        self.odeint_kwargs = dict(odeint_kwargs) if odeint_kwargs is not None else {"method": "euler"}
        self.vocab_char_map = vocab_char_map
        self.config = None
        self.metadata = None
        self.preset = None
        self.quantized = None
        self.checkpoint_format = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ inputs

    def tokenize(self, text: Sequence) -> torch.Tensor:
        """Texts (strings or unit lists) -> ``b nt`` ids padded with ``-1``, on the model's device."""
        return tokens_to_tensor(text, self.vocab_char_map).to(self.device)

    def _text_ids(self, text, batch: int) -> torch.Tensor:
        if torch.is_tensor(text):
            checks.check_text_tensor(text)
            ids = text.to(device=self.device, dtype=torch.long)
        else:
            checks.check_text_items(text)
            ids = self.tokenize(text)
        checks.check_text_ids(ids, batch, self.text_vocab_size)
        return ids

    @property
    def text_vocab_size(self) -> int | None:
        """Number of token ids the backbone embeds (``text_num_embeds``), when it says."""
        embed = getattr(getattr(self.transformer, "text_embed", None), "text_embed", None)
        return embed.num_embeddings - 1 if isinstance(embed, nn.Embedding) else None

    def _cond_mel(self, cond: torch.Tensor) -> torch.Tensor:
        n_fft = getattr(self.mel_spec, "n_fft", None)
        checks.check_cond(cond, self.num_channels, None if n_fft is None else n_fft // 2 + 1)
        if cond.ndim == 2:
            if getattr(self.mel_spec, "n_mel_channels", self.num_channels) != self.num_channels:
                raise ValueError("mel_spec produces a different channel count than num_channels")
            cond = self.mel_spec(cond.to(self.device)).transpose(1, 2)
        return cond

    # ----------------------------------------------------------------- sampling

    def sample(
        self,
        cond: torch.Tensor,
        text: torch.Tensor | list,
        duration: int | torch.Tensor,
        *,
        lens: torch.Tensor | None = None,
        steps: int = 32,
        cfg_strength: float = 1.0,
        sway_sampling_coef: float | None = None,
        seed: int | Sequence[int] | None = None,
        max_duration: int = 65536,
        vocoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        use_epss: bool = True,
        no_ref_audio: bool = False,
        edit_mask: torch.Tensor | None = None,
        cache: bool = True,
        noise: torch.Tensor | None = None,
        grad_checkpoint: bool = False,
        backprop_steps: int | None = None,
        isolate_batch: bool = False,
        dtype: torch.dtype | str | None = None,
        t_grid: Sequence[float] | torch.Tensor | None = None,
        progress: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate mels (or waves with ``vocoder``) that continue the prompt ``cond`` with ``text``.

        Args:
            cond: Prompt mel ``b n d`` or raw wave ``b nw``.
            text: List of ``b`` strings (or unit lists), or ids ``b nt`` padded with ``-1``.
                The text covers prompt and continuation, as in F5-TTS.
            duration: Total frames (prompt included), an int or a ``b`` tensor; raised to at least
                ``max(text length, prompt length) + 1``.
            lens: Prompt lengths ``b`` (default: all of ``cond``).
            steps: Solver steps.
            cfg_strength: Classifier-free guidance weight (below 1e-5: no guidance, one network call).
            sway_sampling_coef: Sway sampling coefficient (``None``: off).
            seed: Seed, or one seed per sample, of the initial noise; each sample's noise equals
                F5-TTS's for that seed and does not depend on the rest of the batch. Drawn from a
                local generator: the global RNG is untouched. ``None`` draws from the global RNG.
            max_duration: Upper bound on ``duration``. A call longer than
                :data:`~flowtts.model.sample_checks.MAX_SECONDS` (60 s of frames at the mel front end's
                rate, prompt included) is refused with a ``ValueError``.
            vocoder: Maps the mel ``b d n`` to a wave; applied to the output when given.
            use_epss: Use the EPSS grid for 5/6/7/10/12/16 steps.
            no_ref_audio: Condition on silence instead of the prompt.
            edit_mask: ``b n_cond`` boolean mask of prompt frames to keep (speech editing).
            cache: ``True``: fast inference (no autograd, ``eval()`` is called, output has no
                ``grad_fn``). ``False``: differentiable; train/eval mode left as the caller set it.
            noise: Initial noise ``b n d`` with ``n`` the final (clamped) maximum duration; honoured
                in both modes, and differentiable with ``cache=False``.
            grad_checkpoint: With ``cache=False``, recompute each step in backward instead of
                keeping its activations; with guidance the conditional and unconditional branches
                are recomputed one at a time, so backward holds half a step's activations. In train
                mode with active dropout every ``cache=False`` call runs the branches one at a time
                (same dropout draws in every grad mode, so gradients equal plain backprop).
            backprop_steps: With ``cache=False``, build a graph for the last this many steps only.
            isolate_batch: Compute each sample of a batch exactly as it would be computed alone
                (padded frames masked in attention and text statistics). Off by default, matching
                F5-TTS, whose batched outputs depend slightly on the other samples' lengths.
            dtype: Run the network under autocast in ``"bfloat16"`` (CPU or GPU) or ``"float16"`` (GPU);
                the ODE state, its update, time embeddings, normalisation statistics and softmax stay
                in float32. ``None``/``"float32"``: the parameters' dtype, no autocast.
            t_grid: Explicit solver times, strictly increasing in [0, 1] (e.g. a distilled student's
                grid); the solver runs ``len(t_grid) - 1`` steps from ``t_grid[0]`` and ``steps`` and
                ``use_epss`` are not used. Cannot be combined with ``sway_sampling_coef``. With
                ``cache=False`` a tensor that requires grad gets gradients too (learned schedules).
            progress: Show a progress bar over solver steps.
            on_step: Called as ``on_step(i, steps)`` before solver step ``i`` (0-based); an exception it
                raises stops sampling and propagates (a caller's time limit or cancel). Not in F5-TTS.

        Returns:
            ``(out, trajectory)``: the generated mel ``b n d`` with the prompt frames copied in (or
            the vocoder's output), and the solver states ``(steps + 1, b, n, d)``.
        """
        grid, steps, _ = checks.check_settings(  # all that needs no computation, before any state changes
            cache=cache,
            grad_checkpoint=grad_checkpoint,
            backprop_steps=backprop_steps,
            t_grid=t_grid,
            steps=steps,
            odeint_kwargs=self.odeint_kwargs,
            cfg_strength=cfg_strength,
            sway_sampling_coef=sway_sampling_coef,
            max_duration=max_duration,
            vocoder=vocoder,
        )
        self._check_quantized(dtype, None if cache else "sample(cache=False), the differentiable path")
        autocast = self._autocast(dtype)
        with torch.set_grad_enabled(not cache):
            inputs = self._sampling_inputs(cond, text, duration, lens, max_duration, edit_mask)
            noise = self._initial_noise(noise, seed, inputs.duration)
            if cache:
                self.eval()
            field = self._field(inputs, float(cfg_strength), no_ref_audio, isolate_batch, autocast)
            if t_grid is None:
                grid = make_grid(steps, use_epss=use_epss, sway_coef=sway_sampling_coef, device=self.device)
            solution = field.solve(
                noise,
                grid,
                grad="none" if cache else ("checkpoint" if grad_checkpoint else "full"),
                backprop_steps=backprop_steps,
                return_trajectory=True,
                progress=progress,
                on_step=on_step,
            )
            out = field.with_prompt(solution.x)
            return (out if vocoder is None else vocoder(out.transpose(1, 2))), solution.trajectory

    def velocity_field(
        self,
        cond: torch.Tensor,
        text: torch.Tensor | list,
        duration: int | torch.Tensor,
        *,
        lens: torch.Tensor | None = None,
        cfg_strength: float = 1.0,
        max_duration: int = 65536,
        no_ref_audio: bool = False,
        edit_mask: torch.Tensor | None = None,
        isolate_batch: bool = False,
        dtype: torch.dtype | str | None = None,
    ) -> VelocityField:
        """The ODE that :meth:`sample` solves for these inputs, built once: ``field(t, x) -> dx/dt``.

        What does not depend on ``(t, x)`` (padding, prompt mask, text conditioning, guidance split,
        autocast) is computed here; each call of the field is one guided network evaluation. A caller
        that steps the ODE itself (distillation's one-step segments, few-step methods) uses it instead
        of a full :meth:`sample` per step; ``field.solve(noise, t_grid)`` then equals the trajectory's
        last state of ``sample(noise=noise, t_grid=t_grid, ...)`` bit for bit.

        Unlike :meth:`sample`, it runs in the caller's grad mode and train/eval mode: under autograd the
        conditioning is part of the graph (gradients reach its parameters and ``cond``); for a frozen
        teacher call it under ``torch.no_grad()`` on a model in ``eval()`` mode (what ``cache=True`` does).

        Args:
            cond, text, duration, lens, cfg_strength, max_duration, no_ref_audio, edit_mask, isolate_batch,
                dtype: As in :meth:`sample`.

        Returns:
            A :class:`VelocityField` over states ``b n d`` with ``n`` the final (clamped) maximum duration.
        """
        checks.check_cfg_strength(cfg_strength)
        checks.check_max_duration(max_duration)
        autograd = "velocity_field() under autograd (call it under torch.no_grad())"
        self._check_quantized(dtype, autograd if torch.is_grad_enabled() else None)
        autocast = self._autocast(dtype)
        inputs = self._sampling_inputs(cond, text, duration, lens, max_duration, edit_mask)
        return self._field(inputs, float(cfg_strength), no_ref_audio, isolate_batch, autocast)

    def _check_quantized(self, dtype, differentiable: str | None) -> None:
        """A quantised model samples without autograd (``differentiable`` names what asked for it) in float32."""
        if self.quantized is None:
            return
        from flowtts.model.quantize import refuse_quantized

        if differentiable is not None:
            refuse_quantized(self, differentiable)
        if dtype not in (None, "float32", torch.float32):
            raise ValueError(f"dtype={dtype!r}: a quantised model samples with float32 activations (dtype=None)")

    def _sampling_inputs(self, cond, text, duration, lens, max_duration: int, edit_mask) -> _SamplingInputs:
        """The checked tensors of one call on the model's device (``duration`` raised and clamped as upstream)."""
        cond = self._cond_mel(cond)
        batch, cond_len = cond.shape[:2]
        device = self.device
        cond = cond.to(device=device, dtype=self.dtype)
        text_ids = self._text_ids(text, batch)
        lens = checks.check_lens(lens, batch, cond_len, device)
        requested, duration = duration, checks.check_duration(duration, batch, device)
        min_duration = torch.maximum((text_ids != -1).sum(dim=-1), lens) + 1
        if int(min_duration.max()) > max_duration:
            raise ValueError(
                f"max_duration={max_duration} is shorter than the text/prompt length plus one frame "
                f"({int(min_duration.max())})"
            )
        duration = torch.maximum(min_duration, duration).clamp(max=max_duration)
        checks.check_frames(int(duration.max()), checks.frame_limit(self.mel_spec), requested)
        cond_mask = lens_to_mask(lens, length=cond_len)
        if edit_mask is not None:
            checks.check_edit_mask(edit_mask, batch, cond_len)
            cond_mask = cond_mask & edit_mask.to(device)
        return _SamplingInputs(cond=cond, cond_mask=cond_mask, text_ids=text_ids, duration=duration)

    def _field(self, inputs: _SamplingInputs, cfg_strength: float, no_ref_audio, isolate_batch, autocast):
        """The :class:`VelocityField` of checked inputs: prompt padded to the longest duration, network built."""
        cond, duration = inputs.cond, inputs.duration
        batch, cond_len = cond.shape[:2]
        total = int(duration.max())
        cond = F.pad(cond, (0, 0, 0, total - cond_len))
        if no_ref_audio:
            cond = torch.zeros_like(cond)
        cond_mask = F.pad(inputs.cond_mask, (0, total - cond_len), value=False)[..., None]
        step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
        mask = lens_to_mask(duration) if batch > 1 else None
        with autocast:
            velocity = self._velocity(step_cond, inputs.text_ids, mask, cfg_strength, isolate_batch)
        method = self.odeint_kwargs.get("method", "euler")
        return VelocityField(_under_autocast(autocast, velocity), cond, cond_mask, duration, method)

    def _autocast(self, dtype):
        """Autocast context for ``dtype`` on this model's device (a no-op for float32/None)."""
        import contextlib

        from flowtts.utils.dtypes import resolve_dtype

        dtype = resolve_dtype(dtype)
        if dtype is None or dtype == torch.float32:
            return contextlib.nullcontext()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        device_type = self.device.type
        if dtype == torch.float16 and device_type == "cpu":
            raise ValueError("dtype float16 needs a GPU; use bfloat16 on CPU")
        return torch.autocast(device_type, dtype=dtype)

    def _velocity(self, step_cond, text_ids, mask, cfg_strength, isolate_batch):
        """The ODE's right-hand side for one call; what does not depend on ``(t, x)`` is computed here, once."""
        transformer = self.transformer
        net_dtype = step_cond.dtype
        guided = cfg_strength >= 1e-5
        if hasattr(transformer, "condition") and hasattr(transformer, "velocity"):
            shared = transformer.condition(step_cond, text_ids, mask, cfg_infer=guided, isolate_batch=isolate_batch)

            def network(t, x):
                return transformer.velocity(x, t, shared)

        else:  # any other backbone with F5-TTS's forward signature: conditioning is recomputed per step

            def network(t, x):
                return transformer(x=x, cond=step_cond, text=text_ids, time=t, mask=mask, cfg_infer=guided)

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            pred = network(t.to(net_dtype), x.to(net_dtype))
            if not guided:
                return pred
            pred, null_pred = pred.chunk(2, dim=0)
            return combine([pred, null_pred])

        def combine(preds: list[torch.Tensor]) -> torch.Tensor:
            pred, null_pred = preds
            return pred + (pred - null_pred) * cfg_strength

        if not guided or not hasattr(transformer, "condition"):
            return velocity
        # Guided DiT: the two branches can also run one at a time (the checkpoint mode's memory saver).
        branches = (shared.branch(0), shared.branch(1))

        def part(index: int):
            def branch_velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                return transformer.velocity(x.to(net_dtype), t.to(net_dtype), branches[index])

            return branch_velocity

        stochastic = any(m.training and isinstance(m, nn.Dropout) and m.p > 0 for m in transformer.modules())
        # With active dropout the fused batch would draw other masks than the branches: use the branches
        # everywhere so that every grad mode computes the same function.
        return SplitVelocity(parts=(part(0), part(1)), combine=combine, joint=None if stochastic else velocity)

    def _initial_noise(self, noise, seed, duration: torch.Tensor) -> torch.Tensor:
        """The checked ``noise``, or one drawn per sample from ``seed`` (F5-TTS's noise for that seed).

        Drawn before the network is built: in train mode a dropout draw there must not come first.
        """
        batch, total = duration.shape[0], int(duration.max())
        seeds = checks.check_seed(seed, batch)
        if noise is not None:
            checks.check_noise(noise, (batch, total, self.num_channels))
            return noise
        return self._draw_noise(duration, seeds, self.device, _state_dtype(self.dtype))

    def _draw_noise(self, duration, seeds, device, dtype) -> torch.Tensor:
        noises = []
        for i, frames in enumerate(duration.tolist()):
            generator = None
            if seeds is not None:
                generator = torch.Generator(device=device).manual_seed(seeds[i])
            noises.append(torch.randn(frames, self.num_channels, generator=generator, device=device, dtype=dtype))
        return nn.utils.rnn.pad_sequence(noises, batch_first=True, padding_value=0.0)

    # ----------------------------------------------------------------- training

    def draw(
        self, lens: torch.Tensor, seq_len: int, generator: torch.Generator | None = None, dtype=torch.float32
    ) -> FlowDraws:
        """The random choices of one training step (span, noise, time, CFG drops), drawn in upstream's order."""
        batch, device = lens.shape[0], lens.device
        lo, hi = self.frac_lengths_mask
        frac = lo + (hi - lo) * torch.rand((batch,), generator=generator, device=device)
        span = mask_from_frac_lengths(lens, frac, generator)
        span = F.pad(span, (0, seq_len - span.shape[1]), value=False) & lens_to_mask(lens, length=seq_len)
        noise = torch.randn((batch, seq_len, self.num_channels), generator=generator, device=device, dtype=dtype)
        time = torch.rand((batch,), generator=generator, device=device, dtype=dtype)
        drops = torch.rand((2,), generator=generator, device=device).tolist()
        drop_text = drops[1] < self.cond_drop_prob
        drop_audio_cond = drops[0] < self.audio_drop_prob or drop_text
        return FlowDraws(span=span, noise=noise, time=time, drop_audio_cond=drop_audio_cond, drop_text=drop_text)

    def forward(
        self,
        inp: torch.Tensor,
        text: torch.Tensor | list,
        *,
        lens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        draws: FlowDraws | None = None,
        reduction: str = "mean",
        isolate_batch: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flow-matching loss on a random infill span, with CFG dropout.

        Args:
            inp: Mels ``b n d`` or raw waves ``b nw``.
            text: Texts or ids ``b nt`` padded with ``-1``.
            lens: Valid frames per sample (default: all).
            generator: Optional RNG for span, noise, time and dropout draws (default: global RNG).
            draws: The random choices, drawn beforehand with :meth:`draw` (``generator`` is then unused).
                Lets a distributed trainer draw for the global batch and give each rank its share.
            reduction: ``"mean"`` over span elements, or ``"sum"``.
            isolate_batch: Compute each sample as if alone (see :meth:`sample`).

        Returns:
            ``(loss, cond, pred)``: the squared error on the span, the masked prompt, the prediction.
        """
        if self.quantized is not None:
            from flowtts.model.quantize import refuse_quantized

            refuse_quantized(self, "training (the flow-matching loss)")
        if not torch.is_tensor(inp) or not inp.is_floating_point() or inp.ndim not in (2, 3):
            raise ValueError("inp must be a floating mel (b, n, d) or wave (b, nw) tensor")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if inp.ndim == 2:
            inp = self.mel_spec(inp).transpose(1, 2)
        if inp.shape[-1] != self.num_channels:
            raise ValueError(f"inp mel has {inp.shape[-1]} channels, expected num_channels={self.num_channels}")
        batch, seq_len = inp.shape[:2]
        text_ids = self._text_ids(text, batch)
        lens = checks.check_lens(lens, batch, seq_len, inp.device)
        mask = lens_to_mask(lens, length=seq_len)
        if draws is None:
            draws = self.draw(lens, seq_len, generator, dtype=inp.dtype)
        elif draws.noise.shape != inp.shape:
            raise ValueError(f"draws were made for shape {tuple(draws.noise.shape)}, inp is {tuple(inp.shape)}")

        x1, x0 = inp, draws.noise.to(inp.dtype)
        t = draws.time.to(inp.dtype)[:, None, None]
        xt = (1 - t) * x0 + t * x1
        flow = x1 - x0
        cond = torch.where(draws.span[..., None], torch.zeros_like(x1), x1)
        pred = self.transformer(
            x=xt,
            cond=cond,
            text=text_ids,
            time=draws.time.to(inp.dtype),
            mask=mask,
            drop_audio_cond=draws.drop_audio_cond,
            drop_text=draws.drop_text,
            **({"isolate_batch": True} if isolate_batch else {}),
        )
        loss = F.mse_loss(pred.float(), flow.float(), reduction="none")[draws.span]
        return (loss.mean() if reduction == "mean" else loss.sum()), cond, pred
