"""What a distillation run is: its config (the teacher's and the student's sampling recipes, the
objective, the loop), the student's named grids, learned solver times, and the teacher-student check."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch

from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train.loop import LoopSettings
from flowtts.train.prompts import check_prompt_kind
from flowtts.utils.dtypes import DTYPE_NAMES

STUDENT_GRIDS = ("uniform", "epss", "sway", "custom")
SEGMENT_STARTS = ("teacher", "student", "both")
DISTILL_LOOP = LoopSettings(
    steps=500, lr=5e-5, warmup=20, weight_decay=0.0, grad_clip=1.0, ema_decay=0.99, save_every=50, log_every=5
)
DEFAULT_STUDENT = SamplingRecipe(steps=4, cfg_strength=0.0, sway_sampling_coef=None, use_epss=False)


def student_recipe(
    steps: int = 4, grid: str = "uniform", cfg_strength: float = 0.0, *, times=None, sway: float = -1.0
) -> SamplingRecipe:
    """A student's recipe on a named grid, as ``flowtts distill`` names it (``--student-grid``).

    Args:
        steps: The student's solver steps.
        grid: One of :data:`STUDENT_GRIDS`.
        cfg_strength: The student's guidance (0: distilled away, one network call per step).
        times: The ``"custom"`` grid's ``steps + 1`` times, rising strictly from 0 to 1 (that grid only).
        sway: The ``"sway"`` grid's coefficient.

    Raises:
        ValueError: An unknown grid, times without the custom grid (or it without them), or times that do
            not fit ``steps``.
    """
    if grid not in STUDENT_GRIDS:
        raise ValueError(f"student_grid must be one of {STUDENT_GRIDS}, got {grid!r}")
    if (grid == "custom") != (times is not None):
        raise ValueError("student_times goes with student_grid='custom' (and that grid needs it)")
    if times is not None:
        times = tuple(float(t) for t in times)
        if len(times) != steps + 1:
            raise ValueError(f"student_times must hold student_steps + 1 = {steps + 1} times, got {len(times)}")
        if times[0] != 0.0 or times[-1] != 1.0 or any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"student_times must rise strictly from 0 to 1, got {list(times)}")
    return SamplingRecipe.on_grid(grid, steps, cfg_strength, sway=sway, times=times)


@dataclass
class DistillConfig:
    """What to distil and how.

    Attributes:
        teacher: How the teacher is sampled for the targets (default: F5-TTS's 32 guided steps).
        student: How the student samples, the recipe it learns and records (default: 4 uniform steps,
            guidance distilled away).
        velocity_steps: Warm-up steps matching the teacher's guided velocity (see :mod:`flowtts.train.distill`).
        segment_steps: Then steps matching each student step to the teacher's trajectory.
        segment_start: Segment steps start from the ``"teacher"``'s states, the ``"student"``'s own, or ``"both"``.
        teacher_pool: > 0: draw every step from this many teacher trajectories sampled once.
        student_dropout: The student's dropout stays active while it learns.
        learn_times: Learn the student's interior solver times with its weights (sampler-through steps).
        times_lr: Learning rate of the learned times' parameters (log gaps).
        grad_checkpoint: Recompute each student solver step in backward.
        backprop_steps: Gradients through the last this many student steps (``None``: all).
        dtype: The networks' autocast precision while distilling (``None``: float32).
        batch_size: Prompts per step (the global batch under torchrun).
        loop: Optimisation and bookkeeping.
        prompt_fraction: The range of a prefix prompt's share of its utterance.
        prompts: ``"prefix"``: a leading part of an utterance and its own text (as the teacher was trained);
            ``"pair"``: one utterance as the reference and another's text after it (as inference uses a
            model); ``"unprompted"``: an utterance said with no audio prompt (as the built-in files ask).
        ctc_weight: Weight of a recogniser's CTC loss of the text on the student's samples (DMOSpeech).
        recognizer: The recogniser file of ``ctc_weight``.
        seed: Seed every random draw derives from.

    Raises:
        ValueError: Settings that do not fit together (see the messages).
    """

    teacher: SamplingRecipe = SamplingRecipe()
    student: SamplingRecipe = DEFAULT_STUDENT
    velocity_steps: int = 0
    segment_steps: int = 0
    segment_start: str = "teacher"
    teacher_pool: int = 0
    student_dropout: bool = True
    learn_times: bool = False
    times_lr: float = 1e-3
    grad_checkpoint: bool = False
    backprop_steps: int | None = None
    dtype: str | None = None
    batch_size: int = 4
    loop: LoopSettings = DISTILL_LOOP
    prompt_fraction: tuple[float, float] = (0.2, 0.5)
    prompts: str = "prefix"
    ctc_weight: float = 0.0
    recognizer: str = "builtin"
    seed: int = 0

    def __post_init__(self):
        check_prompt_kind(self.prompts)
        self._check_recipes()
        self._check_phases()
        self._check_objective()

    def _check_recipes(self) -> None:
        if self.student.steps >= self.teacher.steps:
            raise ValueError(
                f"student_steps ({self.student.steps}) must be smaller than teacher_steps ({self.teacher.steps})"
            )
        times = self.student.t_grid
        if times is not None and (times[0] != 0.0 or times[-1] != 1.0):
            raise ValueError(f"student_times must rise strictly from 0 to 1, got {list(times)}")

    def _check_phases(self) -> None:
        steps = self.loop.steps
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.velocity_steps <= steps:
            raise ValueError(f"velocity_steps must be in [0, steps={steps}], got {self.velocity_steps}")
        if self.segment_steps < 0 or self.velocity_steps + self.segment_steps > steps:
            raise ValueError(
                f"segment_steps must be >= 0 and velocity_steps + segment_steps <= steps={steps}, "
                f"got {self.velocity_steps} + {self.segment_steps}"
            )
        if self.segment_start not in SEGMENT_STARTS:
            raise ValueError(f"segment_start must be one of {SEGMENT_STARTS}, got {self.segment_start!r}")

    def _check_objective(self) -> None:
        if not self.ctc_weight >= 0:
            raise ValueError(f"ctc_weight must be >= 0, got {self.ctc_weight}")
        if self.ctc_weight > 0 and (self.velocity_steps or self.segment_steps):
            raise ValueError("ctc_weight scores the student's whole samples: it goes with sampler-through steps only")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES} (or None for float32), got {self.dtype!r}")
        if self.teacher_pool < 0:
            raise ValueError(f"teacher_pool must be >= 0 (0: no pool), got {self.teacher_pool}")
        if self.teacher_pool and self.prompts == "unprompted":
            raise ValueError("teacher_pool holds prefix or pair prompts; unprompted ones sample the teacher every step")
        if self.learn_times and (self.velocity_steps or self.segment_steps):
            raise ValueError(
                "learn_times trains the grid through the student's whole solve: it needs velocity_steps=0 and "
                f"segment_steps=0 (their targets sit at fixed grid times), got {self.velocity_steps} and "
                f"{self.segment_steps}"
            )
        if not self.times_lr >= 0:
            raise ValueError(f"times_lr must be >= 0, got {self.times_lr}")
        if self.learn_times:  # refused here, before a run directory exists, rather than inside distill()
            gaps = torch.diff(self.student.times().double())
            if not bool((gaps > LearnedTimes.MIN_GAP).all()):
                raise ValueError(f"learn_times needs grid gaps larger than {LearnedTimes.MIN_GAP}, got {gaps.tolist()}")

    def to_json(self) -> str:
        """The config as JSON (what a run's ``last.pt`` records)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> DistillConfig:
        """The config :meth:`to_json` wrote (unknown keys from other versions are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in json.loads(raw).items() if k in known}
        for key in ("teacher", "student"):
            if key in values:
                values[key] = SamplingRecipe.from_json(json.dumps(values[key]))
        if "loop" in values:
            values["loop"] = LoopSettings(**values["loop"])
        if values.get("prompt_fraction") is not None:
            values["prompt_fraction"] = tuple(values["prompt_fraction"])
        return cls(**values)

    def precision(self) -> dict:
        """``sample()`` keyword arguments for the networks' precision while distilling (teacher and student).

        Only the distillation's own solves use it; the student's recorded recipe and the evaluations stay
        in float32.
        """
        return {} if self.dtype in (None, "float32") else {"dtype": self.dtype}

    def phase(self, step: int) -> str:
        """``"velocity"``, ``"segment"`` or ``"sampler"``: what step ``step`` (0-based) trains on."""
        if step < self.velocity_steps:
            return "velocity"
        if step < self.velocity_steps + self.segment_steps:
            return "segment"
        return "sampler"


def check_compatible(teacher, student) -> None:
    """Raise ``ValueError`` unless the student can learn from the teacher (same mel, same vocabulary)."""
    if teacher.num_channels != student.num_channels:
        raise ValueError(f"teacher has {teacher.num_channels} mel channels, student {student.num_channels}")
    if teacher.vocab_char_map != student.vocab_char_map:
        raise ValueError("teacher and student use different vocabularies")
    t_mel, s_mel = teacher.mel_spec, student.mel_spec
    for attr in ("target_sample_rate", "hop_length", "n_fft", "win_length", "mel_spec_type"):
        if getattr(t_mel, attr, None) != getattr(s_mel, attr, None):
            raise ValueError(f"teacher and student mel front ends differ in {attr}")


class LearnedTimes(torch.nn.Module):
    """A student's solver times as free parameters: ``0 = t_0 < t_1 < ... < t_n = 1`` by construction.

    The parameters are unnormalised log-gaps; each gap is ``MIN_GAP`` plus its softmax share of the rest,
    so the times stay strictly increasing (by at least ``MIN_GAP``, also after rounding to float32) with
    fixed ends whatever the optimiser does.

    Args:
        times: The starting grid, ``n + 1`` times from 0 to 1 with gaps larger than ``MIN_GAP``.
    """

    MIN_GAP = 1e-4

    def __init__(self, times):
        super().__init__()
        gaps = torch.diff(torch.as_tensor(times, dtype=torch.float64))
        if not bool((gaps > self.MIN_GAP).all()):
            raise ValueError(f"learned times need gaps larger than {self.MIN_GAP}, got {gaps.tolist()}")
        self.log_gaps = torch.nn.Parameter(torch.log((gaps - self.MIN_GAP) / (1 - len(gaps) * self.MIN_GAP)))

    def forward(self) -> torch.Tensor:
        n = self.log_gaps.numel()
        gaps = self.MIN_GAP + (1 - n * self.MIN_GAP) * torch.softmax(self.log_gaps, dim=0)
        inner = torch.cumsum(gaps[:-1], dim=0)
        return torch.cat((inner.new_zeros(1), inner, inner.new_ones(1)))

    def recorded(self, recipe: SamplingRecipe) -> SamplingRecipe:
        """``recipe`` with today's times as its grid: what the student records and samples with."""
        return dataclasses.replace(recipe, t_grid=tuple(self().detach().tolist()))
