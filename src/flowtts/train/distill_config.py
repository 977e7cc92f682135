"""What a distillation run is: its config, the student's time grid (fixed or learned), the teacher-student
compatibility check, and network-call counting. Imported by inference-side code that reads a student's
recorded recipe, so it imports nothing of the training loop."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass

import torch

from flowtts.train.prompts import check_prompt_kind
from flowtts.utils.dtypes import DTYPE_NAMES

GRIDS = ("uniform", "epss", "sway", "custom")
SEGMENT_STARTS = ("teacher", "student", "both")


@dataclass
class DistillConfig:
    """What to distil and how."""

    student_steps: int = 4
    teacher_steps: int = 32
    teacher_cfg: float = 2.0
    teacher_sway: float | None = -1.0
    student_cfg: float = 0.0  # 0 distils guidance away: one network call per student step
    student_grid: str = "uniform"
    student_sway: float = -1.0  # used by the "sway" grid
    student_times: tuple[float, ...] | None = None  # the "custom" grid: student_steps + 1 times in [0, 1]
    velocity_steps: int = 0  # warm-up steps matching the teacher's guided velocity (see module docstring)
    segment_steps: int = 0  # then steps matching each student step to the teacher's trajectory (see distill())
    segment_start: str = "teacher"  # segment steps start from the teacher's states, the student's own, or "both"
    teacher_pool: int = 0  # > 0: draw every step from this many teacher trajectories sampled once
    student_dropout: bool = True  # the student's dropout stays active while it learns
    learn_times: bool = False  # learn the student's interior solver times with its weights (sampler-through steps)
    times_lr: float = 1e-3  # learning rate of the learned times' parameters (log gaps)
    grad_checkpoint: bool = False
    backprop_steps: int | None = None
    dtype: str | None = None  # the networks' autocast precision while distilling (None: float32)
    steps: int = 1000
    batch_size: int = 4
    lr: float = 5e-5
    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    save_every: int = 100
    log_every: int = 10
    prompt_fraction: tuple[float, float] = (0.2, 0.5)
    prompts: str = "prefix"  # "prefix": a leading part of an utterance and its own text (as the teacher was
    # trained); "pair": one utterance as the reference and another's text after it (as inference uses a model);
    # "unprompted": an utterance said with no audio prompt (as the built-in files ask inference to)
    ctc_weight: float = 0.0  # weight of a recogniser's CTC loss of the text on the student's samples (DMOSpeech)
    recognizer: str = "builtin"  # the recogniser file of ctc_weight
    seed: int = 0

    def __post_init__(self):
        check_prompt_kind(self.prompts)
        if not self.ctc_weight >= 0:
            raise ValueError(f"ctc_weight must be >= 0, got {self.ctc_weight}")
        if self.ctc_weight > 0 and (self.velocity_steps or self.segment_steps):
            raise ValueError("ctc_weight scores the student's whole samples: it goes with sampler-through steps only")
        if self.student_steps < 1:
            raise ValueError(f"student_steps must be >= 1, got {self.student_steps}")
        if self.student_steps >= self.teacher_steps:
            raise ValueError(
                f"student_steps ({self.student_steps}) must be smaller than teacher_steps ({self.teacher_steps})"
            )
        if self.student_grid not in GRIDS:
            raise ValueError(f"student_grid must be one of {GRIDS}, got {self.student_grid!r}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch_size and steps must be >= 1")
        if not 0 <= self.velocity_steps <= self.steps:
            raise ValueError(f"velocity_steps must be in [0, steps={self.steps}], got {self.velocity_steps}")
        if self.segment_steps < 0 or self.velocity_steps + self.segment_steps > self.steps:
            raise ValueError(
                f"segment_steps must be >= 0 and velocity_steps + segment_steps <= steps={self.steps}, "
                f"got {self.velocity_steps} + {self.segment_steps}"
            )
        if self.segment_start not in SEGMENT_STARTS:
            raise ValueError(f"segment_start must be one of {SEGMENT_STARTS}, got {self.segment_start!r}")
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
        if (self.student_grid == "custom") != (self.student_times is not None):
            raise ValueError("student_times goes with student_grid='custom' (and that grid needs it)")
        if self.student_times is not None:
            times = tuple(float(t) for t in self.student_times)
            if len(times) != self.student_steps + 1:
                raise ValueError(
                    f"student_times must hold student_steps + 1 = {self.student_steps + 1} times, got {len(times)}"
                )
            if times[0] != 0.0 or times[-1] != 1.0 or any(b <= a for a, b in zip(times, times[1:])):
                raise ValueError(f"student_times must rise strictly from 0 to 1, got {list(times)}")
            self.student_times = times
        if self.learn_times:  # refused here, before a run directory exists, rather than inside distill()
            gaps = torch.diff(self.student_grid_times().double())
            if not bool((gaps > LearnedTimes.MIN_GAP).all()):
                raise ValueError(f"learn_times needs grid gaps larger than {LearnedTimes.MIN_GAP}, got {gaps.tolist()}")

    @classmethod
    def from_json(cls, raw: str) -> DistillConfig:
        """The config a student recorded in its metadata (unknown keys from other versions are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in json.loads(raw).items() if k in known}
        for key in ("student_times", "prompt_fraction"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def student_grid_times(self) -> torch.Tensor:
        """The student's ``student_steps + 1`` solver times."""
        from flowtts.sampling.grids import make_grid

        if self.student_times is not None:
            return torch.tensor(self.student_times, dtype=torch.float32)
        return make_grid(
            self.student_steps,
            use_epss=self.student_grid == "epss",
            sway_coef=self.student_sway if self.student_grid == "sway" else None,
        )

    def student_recipe(self):
        """The student's :class:`flowtts.sampling.recipe.SamplingRecipe` (what it records and samples with)."""
        from flowtts.sampling.recipe import SamplingRecipe

        return SamplingRecipe.from_distill_config(asdict(self))

    def student_sampling(self) -> dict:
        """``sample()`` keyword arguments of the student."""
        return self.student_recipe().sample_kwargs()

    def precision(self) -> dict:
        """``sample()`` keyword arguments for the networks' precision while distilling (teacher and student).

        Only the distillation's own solves use it; the student's recorded sampling settings and the
        evaluations stay in float32.
        """
        return {} if self.dtype in (None, "float32") else {"dtype": self.dtype}

    def phase(self, step: int) -> str:
        """``"velocity"``, ``"segment"`` or ``"sampler"``: what step ``step`` (0-based) trains on."""
        if step < self.velocity_steps:
            return "velocity"
        if step < self.velocity_steps + self.segment_steps:
            return "segment"
        return "sampler"

    def teacher_sampling(self) -> dict:
        return dict(steps=self.teacher_steps, cfg_strength=self.teacher_cfg, sway_sampling_coef=self.teacher_sway)


def recorded_sampling(model) -> dict | None:
    """The ``sample()`` settings a distilled student records in its metadata (``None`` for other models)."""
    from flowtts.sampling.recipe import SamplingRecipe

    recipe = SamplingRecipe.from_metadata(getattr(model, "metadata", None))
    return recipe.sample_kwargs() if recipe is not None else None


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

    def recorded(self, config: DistillConfig) -> DistillConfig:
        """``config`` with today's times as its custom grid: what the student records and samples with."""
        return dataclasses.replace(config, student_grid="custom", student_times=tuple(self().detach().tolist()))


def nfe(steps: int, cfg_strength: float, method: str = "euler") -> int:
    """Network calls per utterance: guidance doubles the batch (counted as two calls), midpoint doubles steps."""
    per_step = 2 if method == "midpoint" else 1
    return steps * per_step * (2 if cfg_strength >= 1e-5 else 1)
