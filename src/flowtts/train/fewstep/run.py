"""``flowtts distill --method M``: the few-step methods on the one training loop.

:func:`distill_fewstep` trains a student (started from the teacher's weights, or any compatible model) with
one of :data:`METHODS` on prompts drawn from a prepared dataset, on :class:`~flowtts.train.loop.TrainingLoop`
(resume from ``last.pt``, ``STOP`` file, time limit, EMA, progress, torchrun). What each optimiser step
computes is in :mod:`flowtts.train.fewstep.tts`; what differs per method here is what the run keeps:

* ``progressive``: the rounds (``settings.rounds()``, ``steps_per_round`` optimiser steps each); at the end of
  each round the EMA student is written as ``student_<N>.safetensors`` (``N`` its steps) and becomes the
  next round's frozen teacher.
* ``consistency``: the EMA target network (``target_decay``), kept in ``last.pt``.
* ``dmd``: the fake model (a copy of the teacher) and its optimiser, kept in ``last.pt``.
* ``adversarial``: the discriminator heads and their optimiser, kept in ``last.pt``.

Every run writes ``student.safetensors`` (the EMA weights) with the student's sampling recipe (cfg 0, its
steps and grid), the teacher's recorded metadata, and the run's config as ``fewstep_config``.
Randomness derives from ``(seed, step)`` and is drawn for the global batch, so runs resume exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import torch

from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train import distributed as dist_utils
from flowtts.train.distill_config import check_compatible
from flowtts.train.fewstep import tts
from flowtts.train.fewstep.adversarial import AdversarialSettings, FeatureDiscriminator
from flowtts.train.fewstep.consistency import ConsistencySettings
from flowtts.train.fewstep.dmd import DMDSettings
from flowtts.train.fewstep.progressive import ProgressiveSettings
from flowtts.train.loop import LoopSettings, TrainingLoop, ema_update
from flowtts.train.prompts import check_prompt_kind, draw_kind
from flowtts.utils.dtypes import DTYPE_NAMES

METHODS = {
    "progressive": ProgressiveSettings,
    "consistency": ConsistencySettings,
    "adversarial": AdversarialSettings,
    "dmd": DMDSettings,
}
FEWSTEP_LOOP = LoopSettings(
    steps=300, lr=5e-5, warmup=10, weight_decay=0.0, grad_clip=1.0, ema_decay=0.99, save_every=25, log_every=5
)
LOG_CSV = "fewstep_log.csv"
LOG_COLUMNS = ["step", "loss", "lr", "grad_norm", "seconds_per_step", "elapsed_s"]


@dataclass(frozen=True)
class FewStepConfig:
    """A few-step distillation run.

    Attributes:
        method: One of :data:`METHODS`.
        settings: The method's settings (its class in :data:`METHODS`; default: that class's defaults,
            with ``sampler="ode"`` for dmd).
        loop: Optimisation and bookkeeping; a progressive run's ``steps`` is set to its rounds times
            ``steps_per_round``.
        batch_size: Prompts per step (the global batch under torchrun).
        prompts: Kind of prompts (``"unprompted"``: as the built-in models speak; ``"prefix"``, ``"pair"``).
        prompt_fraction: The range of a prefix prompt's share of its utterance.
        aux_lr: Learning rate of the DMD fake model and of the discriminator heads.
        dtype: The networks' autocast precision (``None``: float32).
        seed: Seed every random draw derives from.
        recognizer: The recogniser file of DMD's CTC term (``settings.ctc_weight > 0``).

    Raises:
        ValueError: An unknown method or prompt kind, settings of another method, a batch below 1.
    """

    method: str
    settings: object = None
    loop: LoopSettings = FEWSTEP_LOOP
    batch_size: int = 8
    prompts: str = "unprompted"
    prompt_fraction: tuple[float, float] = (0.2, 0.5)
    aux_lr: float = 1e-4
    dtype: str | None = None
    seed: int = 0
    recognizer: str = "builtin"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {self.method!r}")
        kind = METHODS[self.method]
        if self.settings is None:  # dmd's own default sampler ("renoise") is not what a TTS model samples with
            object.__setattr__(self, "settings", kind(sampler="ode") if self.method == "dmd" else kind())
        if not isinstance(self.settings, kind):
            raise ValueError(
                f"settings of method {self.method!r} must be {kind.__name__}, got {type(self.settings).__name__}"
            )
        check_prompt_kind(self.prompts)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.aux_lr > 0:
            raise ValueError(f"aux_lr must be > 0, got {self.aux_lr}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES} (or None for float32), got {self.dtype!r}")
        if self.method == "dmd" and (self.settings.sampler != "ode" or not self.settings.backward_simulation):
            raise ValueError("dmd on a TTS model trains by backward simulation with sampler='ode' (what sample() runs)")
        if self.method == "dmd" and self.settings.adversarial_weight:
            raise ValueError("dmd's adversarial term is not wired into the TTS runner; set adversarial_weight to 0")
        if self.method == "progressive":
            steps = len(self.settings.rounds()) * self.settings.steps_per_round
            object.__setattr__(self, "loop", dataclasses.replace(self.loop, steps=steps))

    def precision(self) -> dict:
        """``velocity_field`` keyword arguments for the networks' precision."""
        return {} if self.dtype in (None, "float32") else {"dtype": self.dtype}

    def to_json(self) -> str:
        """The config as JSON (recorded in ``last.pt`` and the student's file)."""
        return json.dumps({**dataclasses.asdict(self), "settings": dataclasses.asdict(self.settings)})

    def recipe(self, step: int | None = None) -> SamplingRecipe:
        """The student's sampling recipe (for progressive, the round's student at ``step``; default: the last)."""
        s = self.settings
        if self.method == "progressive":
            rounds = s.rounds()
            index = len(rounds) - 1 if step is None else min(step // s.steps_per_round, len(rounds) - 1)
            return dataclasses.replace(s.student_recipe(), steps=rounds[index][1])
        if self.method == "consistency":
            return SamplingRecipe(
                steps=s.sample_steps, cfg_strength=0.0, sway_sampling_coef=s.sway_coef, use_epss=False
            )
        if self.method == "adversarial":
            return s.student_recipe()
        return SamplingRecipe(steps=s.student_steps, cfg_strength=0.0, sway_sampling_coef=s.sway_coef, use_epss=False)


class AuxOptimizer:
    """AdamW for a second trained network (fake model, discriminator); ``self(loss)`` is one update."""

    def __init__(self, module: torch.nn.Module, lr: float, grad_clip: float, env):
        self.module, self.grad_clip, self.env = module, grad_clip, env
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0, betas=(0.0, 0.99))
        self.last = float("nan")

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist_utils.average_gradients(self.module.parameters(), self.env)
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.last = float(loss.detach())

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def _recognizer(config: FewStepConfig, student, env):
    """The frozen recogniser of DMD's CTC term, checked against the student's mel front end."""
    from flowtts.eval.recognizer import load_recognizer
    from flowtts.model.mel import mel_config_of

    recognizer = load_recognizer(config.recognizer, env.device).requires_grad_(False)
    recognizer.check_fits(mel_config_of(student), "the student")
    return recognizer


class _Method:
    """What one method's run holds besides the student: frozen and trained companions, per-step loss."""

    def __init__(self, teacher, student, config: FewStepConfig, out_dir: str, env):
        self.teacher, self.student, self.config, self.out_dir, self.env = teacher, student, config, out_dir, env
        s = config.settings
        self.parts: dict = {}
        self.aux: AuxOptimizer | None = None
        self.rounds: dict[int, torch.nn.Module] = {}
        if config.method == "consistency":
            self.target = copy.deepcopy(student).eval().requires_grad_(False)
            self.parts = {"target": self.target}
        elif config.method == "dmd":
            self.fake = copy.deepcopy(teacher).train(False).requires_grad_(True)
            self.aux = AuxOptimizer(self.fake, config.aux_lr, config.loop.grad_clip, env)
            self.parts = {"fake": self.fake, "fake_optimizer": self.aux}
            self.recognizer = _recognizer(config, student, env) if s.ctc_weight > 0 else None
        elif config.method == "adversarial":
            dims = tts.feature_dims(teacher, s)
            self.discriminator = FeatureDiscriminator(dims, hidden=128, kernel_size=3).to(env.device)
            self.aux = AuxOptimizer(self.discriminator, config.aux_lr, config.loop.grad_clip, env)
            self.parts = {"discriminator": self.discriminator, "discriminator_optimizer": self.aux}

    def loss(self, step: int, batch: tts.Batch, g: torch.Generator) -> torch.Tensor:
        """The student's loss of optimiser step ``step`` (companions updated inside, for DMD/adversarial)."""
        c, s = self.config, self.config.settings
        if c.method == "progressive":
            r = step // s.steps_per_round
            return tts.progressive_step(self.student, self.round_teacher(r), batch, s, r, g)
        if c.method == "consistency":
            return tts.consistency_step(self.student, self.target, self.teacher, batch, s, g)
        if c.method == "dmd":
            return tts.dmd_step(self.student, self.fake, self.teacher, batch, s, g, self.aux, self.recognizer)
        return tts.adversarial_step(self.student, self.teacher, self.discriminator, batch, s, step, g, self.aux)

    def round_teacher(self, r: int):
        """Round ``r``'s frozen teacher: the guided teacher, then each round's student as written."""
        if r == 0:
            return self.teacher
        if r not in self.rounds:
            from flowtts.checkpoints.loader import load

            steps = self.config.settings.rounds()[r - 1][1]
            model = load(os.path.join(self.out_dir, f"student_{steps}.safetensors"))
            self.rounds = {r: model.to(self.env.device).eval().requires_grad_(False)}
        return self.rounds[r]

    def after_update(self, step: int, ema, write) -> None:
        """After optimiser step ``step`` (1-based count): the target's EMA; a finished round's file."""
        s = self.config.settings
        if self.config.method == "consistency":
            ema_update(self.target, self.student, s.target_decay)
        if self.config.method == "progressive" and step % s.steps_per_round == 0:
            steps = self.config.recipe(step - 1).steps
            if self.env.rank == 0:
                write(ema, os.path.join(self.out_dir, f"student_{steps}.safetensors"), step)
            dist_utils.barrier(self.env)


def distill_fewstep(
    teacher,
    student,
    dataset,
    config: FewStepConfig,
    out_dir: str,
    *,
    progress: bool = True,
    max_seconds: float | None = None,
    on_step=None,
) -> dict:
    """Train ``student`` from ``teacher`` with ``config.method`` (see the module docstring).

    Args:
        teacher: The guided many-step model (frozen).
        student: The model trained (usually a copy of the teacher's weights); changed in place.
        dataset: A prepared :class:`~flowtts.train.data.MelDataset` (its texts, lengths and mels).
        config: :class:`FewStepConfig`.
        out_dir: Run directory (``last.pt``, ``fewstep_log.csv``, ``student.safetensors``).
        progress: Progress bar (rank 0).
        max_seconds: Stop after the first step past this wall time (with a checkpoint); resume later.
        on_step: Called with ``(step, loss)`` after every step.

    Returns:
        ``step``, last ``loss``, ``seconds``, ``finished``.
    """
    from flowtts.checkpoints.loader import save as save_model
    from flowtts.checkpoints.recorded import carried_metadata

    check_compatible(teacher, student)
    env = dist_utils.setup()
    teacher.to(env.device).eval().requires_grad_(False)
    student.to(env.device).train(False).requires_grad_(True)
    method = _Method(teacher, student, config, out_dir, env)
    carried = {**carried_metadata(teacher), **layout_metadata(teacher, config.prompts)}

    def write(model, path, step):
        extra = {**carried, **config.recipe(step - 1).to_metadata(), "fewstep_config": config.to_json()}
        save_model(
            model, path, extra={**extra, "step": str(step), "trained_with": f"flowtts distill --method {config.method}"}
        )

    loop = TrainingLoop(
        student,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=lambda: _write_files(loop, out_dir, write, config.method),
        name="student",
        parts=method.parts,
        identity={"fewstep_config": (config.to_json(), "few-step config")},
        desc=f"distilling ({config.method})",
        progress=progress,
        max_seconds=max_seconds,
        on_step=on_step,
        env=env,
    )
    last = float("nan")
    with loop:
        while loop.running():
            loss = _step_loss(method, loop.step, dataset, teacher.num_channels, env)
            loop.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            dist_utils.average_gradients(student.parameters(), env)
            grad_norm = loop.update(None)
            method.after_update(loop.step, loop.ema, write)
            last = dist_utils.mean_over_ranks(loss.detach(), env)
            if loop.due_log():
                loop.log([loop.step, f"{last:.6f}", f"{loop.lr:.3e}", f"{grad_norm:.4f}",
                          f"{time.perf_counter() - loop.step_start:.2f}", f"{loop.seconds:.1f}"])  # fmt: skip
            loop.end_step(last, loss=f"{last:.4f}")
            loop.checkpoint_if_due()
    return {"step": loop.step, "loss": last, "seconds": loop.seconds, "finished": loop.finished}


def _write_files(loop: TrainingLoop, out_dir: str, write, method: str) -> None:
    """``student.safetensors`` (the EMA weights) and ``loss.png`` (the logged losses)."""
    from flowtts.utils.plotting import plot_loss_curve

    write(loop.ema, os.path.join(out_dir, "student.safetensors"), max(loop.step, 1))
    plot_loss_curve(os.path.join(out_dir, LOG_CSV), os.path.join(out_dir, "loss.png"), ylabel=f"{method} loss")


def layout_metadata(teacher, prompts: str) -> dict[str, str]:
    """What a student's file says about the layout it was trained in, so it is sampled in that layout:
    ``continue_reference`` false for unprompted prompts (it learnt to speak without an audio prompt), true
    for pairs (it learnt to continue a clip); nothing for prefixes. The teacher's voice count (its data's)
    is kept as well."""
    from flowtts.checkpoints.recorded import CONTINUE_KEY, VOICES_KEY

    recorded = {VOICES_KEY: str(teacher.metadata[VOICES_KEY])} if VOICES_KEY in (teacher.metadata or {}) else {}
    layout = {"unprompted": "false", "pair": "true"}.get(prompts)
    return {**recorded, CONTINUE_KEY: layout} if layout is not None else recorded


def _step_loss(method: _Method, step: int, dataset, num_channels: int, env) -> torch.Tensor:
    """Step ``step``'s loss on this rank's rows of the global batch drawn from ``(seed, step)``."""
    c = method.config
    g = torch.Generator().manual_seed(c.seed * 7_919 + step)
    indices = torch.randint(len(dataset), (c.batch_size,), generator=g).tolist()
    prompts = draw_kind(dataset, indices, c.prompts, num_channels, c, g)
    rows = list(range(env.rank, c.batch_size, env.world_size)) or [0]
    batch = tts.Batch.of(prompts.rows(rows), env.device, c.precision())
    return method.loss(step, batch, g)
