"""The few-step objectives on a TTS model: each method's loss for one batch of prompts.

The method modules (:mod:`~flowtts.train.fewstep.progressive`, :mod:`~flowtts.train.fewstep.consistency`,
:mod:`~flowtts.train.fewstep.dmd`, :mod:`~flowtts.train.fewstep.adversarial`) are plain functions over
velocities and step maps; this module gives them a :class:`flowtts.CFM` on a batch of
:class:`~flowtts.train.prompts.Prompts`: its velocity field with the text and prompt conditioning built once
(:func:`field`), data and noise from the prompts, the loss masked to the generated frames. One
:class:`Batch` per optimiser step; a time is one scalar per batch (drawn by the caller).

Models: the student is sampled with ``cfg_strength = 0`` (one network call per step) and keeps its graph;
frozen models (the guided teacher, a progressive round's previous student, the consistency target, the
DMD fake model on the generator's turn) run under ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flowtts.sampling.solvers import integrate
from flowtts.train.fewstep import adversarial, consistency, dmd, progressive
from flowtts.train.fewstep.velocity import Velocity, euler_map, predict_data, renoise
from flowtts.train.prompts import Prompts, velocity_field_of


@dataclass
class Batch:
    """One step's prompts with their data, noise and generated-frame mask.

    Attributes:
        prompts: The prompts (texts, durations, the prompt frames).
        data: ``(b, n, d)`` the recorded mels, zero-padded.
        noise: ``(b, n, d)`` the initial noise of each sample.
        mask: ``(b, n)`` the frames the model generates (the loss is taken there).
        precision: ``velocity_field`` keyword arguments for the networks' autocast.
    """

    prompts: Prompts
    data: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor
    precision: dict

    @classmethod
    def of(cls, prompts: Prompts, device, precision: dict | None = None) -> Batch:
        """The batch of ``prompts`` on ``device`` (they must carry their data mels)."""
        if prompts.data is None:
            raise ValueError("few-step methods need prompts that carry their data mels")
        return cls(
            prompts,
            prompts.data.to(device),
            prompts.noise.to(device),
            prompts.generated_mask().to(device),
            precision or {},
        )

    def randn(self, generator: torch.Generator) -> torch.Tensor:
        """Fresh noise like the data (drawn on the CPU from ``generator``, so runs resume exactly)."""
        return torch.randn(self.noise.shape, generator=generator).to(self.noise)


def field(model, batch: Batch, cfg_strength: float = 0.0) -> Velocity:
    """``v(t, x)`` of ``model`` conditioned on ``batch``'s prompts (guidance folded in), times as floats or
    0-dim tensors. Runs in the caller's grad mode."""
    velocity = velocity_field_of(model, batch.prompts, cfg_strength=cfg_strength, **batch.precision)

    def v(t, x):
        return velocity(torch.as_tensor(t, dtype=x.dtype, device=x.device), x)

    return v


def frozen_field(model, batch: Batch, cfg_strength: float = 0.0) -> Velocity:
    """:func:`field` of a frozen model: every evaluation without gradient."""
    with torch.no_grad():
        inner = field(model, batch, cfg_strength)

    def v(t, x):
        with torch.no_grad():
            return inner(t, x)

    return v


def solve(velocity: Velocity, x: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
    """Euler steps of ``velocity`` from ``x`` at ``times[0]`` through ``times`` (:func:`flowtts.sampling.integrate`,
    in the caller's grad mode); ``x`` itself for a single time."""
    if len(times) < 2:
        return x
    grid = torch.as_tensor([float(t) for t in times], dtype=x.dtype, device=x.device)
    return integrate(velocity, x, grid, method="euler", grad="full" if torch.is_grad_enabled() else "none").x


# --- progressive -------------------------------------------------------------------------------------


def progressive_step(
    student, teacher, batch: Batch, settings: progressive.ProgressiveSettings, round_index: int, g: torch.Generator
) -> torch.Tensor:
    """One step of round ``round_index``: the student's one step against the teacher's two, at data re-noised
    to a student grid time drawn from ``g``. Round 0's teacher is guided (``settings.teacher_cfg``), later
    ones (the previous round's student) are not."""
    teacher_steps, student_steps = settings.rounds()[round_index]
    triples = progressive.grid_triples(progressive.round_grid(teacher_steps, settings.sway_coef))
    t0, t1, t2 = (float(t) for t in triples[int(torch.randint(student_steps, (), generator=g))])
    cfg = settings.teacher_cfg if round_index == 0 else 0.0
    teacher_map = euler_map(frozen_field(teacher, batch, cfg))
    x = renoise(batch.data, batch.noise, t0)
    student_map = euler_map(field(student, batch))
    return progressive.progressive_loss(
        student_map, teacher_map, x, t0, t1, t2, mask=batch.mask, weighting=settings.weighting
    )


# --- consistency -------------------------------------------------------------------------------------


def lattice(settings: consistency.ConsistencySettings) -> torch.Tensor:
    """The consistency run's training times: ``intervals + 1`` times from 0 to 1 (swayed when asked)."""
    from flowtts.sampling.grids import make_grid

    return make_grid(settings.intervals, use_epss=False, sway_coef=settings.sway_coef)


def consistency_step(
    student, target, teacher, batch: Batch, settings: consistency.ConsistencySettings, g: torch.Generator
) -> torch.Tensor:
    """One consistency-distillation step at a lattice point drawn from ``g`` (see
    :func:`~flowtts.train.fewstep.consistency.consistency_loss`); the teacher solves the skip in
    ``teacher_substeps`` guided Euler steps."""
    times = lattice(settings)
    n = int(torch.randint(settings.intervals, (), generator=g))
    t, t_next = float(times[n]), float(times[min(n + settings.skip, settings.intervals)])
    guided = frozen_field(teacher, batch, settings.teacher_cfg)
    inner = torch.linspace(t, t_next, settings.teacher_substeps + 1).tolist()

    def teacher_map(x, _t0, _t1):
        return solve(guided, x, inner)

    target_field = frozen_field(target, batch)
    student_field = field(student, batch)
    return consistency.consistency_loss(
        lambda x, s: consistency.consistency_fn(student_field, x, s),
        lambda x, s: consistency.consistency_fn(target_field, x, s),
        teacher_map,
        batch.data,
        batch.noise,
        t,
        t_next,
        mask=batch.mask,
    )


# --- distribution matching ---------------------------------------------------------------------------


def student_sample(student, batch: Batch, times: Sequence[float], k: int) -> torch.Tensor:
    """The student's one-jump data prediction from its own state at ``times[k]`` (backward simulation: the
    state made by its own Euler solve from the batch's noise, without gradient; the jump with gradient)."""
    velocity = field(student, batch)
    with torch.no_grad():
        x = solve(velocity, batch.noise, list(times[: k + 1]))
    return predict_data(velocity, x, float(times[k]))


def dmd_step(
    student,
    fake,
    teacher,
    batch: Batch,
    settings: dmd.DMDSettings,
    g: torch.Generator,
    fake_update: Callable,
    recognizer=None,
) -> torch.Tensor:
    """One DMD step: ``fake_updates_per_generator`` updates of the fake model (``fake_update(loss)`` runs its
    optimiser) on the student's sample, then the generator's DMD loss (returned, with its graph), plus
    ``settings.ctc_weight`` times :func:`ctc_term` of ``recognizer`` on the sample (DMOSpeech)."""
    if not settings.backward_simulation or settings.sampler != "ode":
        raise ValueError("on a TTS model DMD trains by backward simulation with the ODE sampler (what sample() runs)")
    times = settings.student_grid().tolist()
    k = int(torch.randint(settings.student_steps, (), generator=g))
    x = student_sample(student, batch, times, k)
    lo, hi = settings.time_range
    for _ in range(settings.fake_updates_per_generator):
        t = float(dmd.draw_times(1, settings.time_range, generator=g))
        fake_update(dmd.fake_score_loss(field(fake, batch), x, batch.randn(g), t, mask=batch.mask))
    real_field, fake_field = frozen_field(teacher, batch, settings.teacher_cfg), frozen_field(fake, batch)
    t = float(lo + (hi - lo) * torch.rand((), generator=g))
    loss = dmd.dmd_generator_loss(
        x,
        lambda y, s: predict_data(real_field, y, s),
        lambda y, s: predict_data(fake_field, y, s),
        batch.randn(g),
        t,
        mask=batch.mask,
    )
    if settings.ctc_weight > 0:
        if recognizer is None:
            raise ValueError("settings.ctc_weight > 0 needs a recognizer")
        loss = loss + settings.ctc_weight * ctc_term(recognizer, x, batch)
    return loss


def ctc_term(recognizer, x: torch.Tensor, batch: Batch) -> torch.Tensor:
    """A recogniser's CTC loss per character of each prompt's whole text on the sample ``x`` (its prompt frames
    replaced by the recorded ones, an unprompted sample's first frame left out), averaged over the batch;
    utterances the recogniser cannot score count 0.

    Raises:
        ValueError: Transcripts that are not plain text (pinyin units).
    """
    prompts = batch.prompts
    if not all(isinstance(t, str) for t in prompts.texts):
        raise ValueError("the CTC term needs plain-text transcripts (this dataset stores pinyin units)")
    frames = torch.arange(x.shape[1], device=x.device)[None, :, None]
    lens = prompts.lens.to(x.device)[:, None, None]
    whole = torch.where(frames < lens, batch.data.to(x.dtype), x)
    start = 1 if prompts.kind == "unprompted" else 0
    durations = prompts.durations.to(x.device) - start
    loss, scored = recognizer.ctc_loss(whole[:, start:].float(), durations, prompts.texts)
    return (loss * scored).sum() / x.shape[0]


# --- adversarial -------------------------------------------------------------------------------------


def teacher_features(teacher, batch: Batch, x: torch.Tensor, t: float, layers: Sequence[int]) -> list[torch.Tensor]:
    """Hidden states ``(b, n, dim)`` of the frozen teacher's blocks ``layers`` at ``(t, x)``, conditioned on the
    batch's text (no guidance), differentiable in ``x``."""
    blocks = teacher.transformer.transformer_blocks
    depth = len(blocks)
    if not layers or any(not -depth <= i < depth for i in layers):
        raise ValueError(f"feature_layers must be block indices in [-{depth}, {depth}), got {list(layers)}")
    kept: dict[int, torch.Tensor] = {}
    hooks = [
        blocks[i % depth].register_forward_hook(lambda _m, _args, out, i=i % depth: kept.__setitem__(i, out))
        for i in layers
    ]
    try:
        field(teacher, batch)(t, x)
    finally:
        for hook in hooks:
            hook.remove()
    return [kept[i % depth].float() for i in layers]


def discriminator_inputs(teacher, batch: Batch, x: torch.Tensor, t: float, settings) -> list[torch.Tensor]:
    """What the discriminator reads of a (re-noised) mel ``x`` at ``t``: the teacher's features, and the mel."""
    features = teacher_features(teacher, batch, x, t, settings.feature_layers)
    return features + [x.float()] if settings.read_mel else features


def r1_on_features(real_logits: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
    """R1 on the heads' inputs: :func:`~flowtts.train.fewstep.adversarial.r1_penalty` summed over the features
    (the frozen teacher's features are the inputs the heads see; CPU attention has no double backward)."""
    return sum(adversarial.r1_penalty(real_logits, f) for f in features)


def feature_dims(teacher, settings: adversarial.AdversarialSettings) -> list[int]:
    """Channels of each input :func:`discriminator_inputs` gives."""
    dims = [teacher.transformer.dim] * len(settings.feature_layers)
    return dims + [teacher.num_channels] if settings.read_mel else dims


def adversarial_step(
    student,
    teacher,
    discriminator,
    batch: Batch,
    settings: adversarial.AdversarialSettings,
    step: int,
    g: torch.Generator,
    d_update: Callable,
) -> torch.Tensor:
    """One adversarial-distillation step: the student's sample through its whole differentiable solve
    (checkpointed when asked), ``d_updates_per_g`` discriminator updates (``d_update(loss)``) on re-noised real
    and generated mels (with R1 on the real ones), then the generator's loss: the distillation term to the
    guided teacher's prediction plus, after the warm-up, the adversarial term (returned, with its graph)."""
    times = settings.student_recipe().times().tolist()
    velocity = field(student, batch)
    grad = "checkpoint" if settings.grad_checkpoint else "full"
    x = integrate(velocity, batch.noise, torch.tensor(times, dtype=batch.noise.dtype), grad=grad).x
    lo, hi = settings.time_range
    d_loss, g_loss = adversarial.D_LOSSES[settings.loss], adversarial.G_LOSSES[settings.loss]
    mask = batch.mask
    for _ in range(settings.d_updates_per_g):
        t = float(lo + (hi - lo) * torch.rand((), generator=g))
        noise = batch.randn(g)
        with torch.no_grad():  # the heads train on the teacher's features; R1 is taken on those features
            real = discriminator_inputs(teacher, batch, renoise(batch.data, noise, t), t, settings)
            fake = discriminator_inputs(teacher, batch, renoise(x.detach(), noise, t), t, settings)
        real = [f.requires_grad_(settings.r1_weight > 0) for f in real]
        real_logits, fake_logits = discriminator(real), discriminator(fake)
        loss = d_loss(real_logits[mask], fake_logits[mask])
        if settings.r1_weight > 0:
            loss = loss + settings.r1_weight * r1_on_features(real_logits * mask, real)
        d_update(loss)
    guided = frozen_field(teacher, batch, settings.teacher_cfg)
    t = float(lo + (hi - lo) * torch.rand((), generator=g))
    loss = settings.distill_weight * adversarial.distillation_loss(
        x, lambda y, s: predict_data(guided, y, s), batch.randn(g), t, mask=mask
    )
    if step >= settings.warmup_steps:
        t = float(lo + (hi - lo) * torch.rand((), generator=g))
        logits = discriminator(discriminator_inputs(teacher, batch, renoise(x, batch.randn(g), t), t, settings))
        loss = loss + g_loss(logits[mask])
    return loss
