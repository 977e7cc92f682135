"""Few-step distillation: a student learns to reproduce a many-step teacher in a few solver steps.

Each step draws prompts from a prepared dataset (the first 20-50 % of an utterance as the reference
mel, the full transcript as text, the utterance length as duration) and one initial noise per prompt.
The frozen teacher samples ``teacher_steps`` with guidance on the default path (``cache=True``); the
student samples ``student_steps`` from the same noise with ``cache=False`` and the loss is the mean
squared distance between the two outputs on the generated frames. Gradients flow through every
student solver step (optionally checkpointed or truncated).

Optionally the run starts with ``velocity_steps`` cheap warm-up steps that teach the student the
teacher's *guided* velocity where the student will evaluate it: the data is noised to a time ``t`` of
the student's grid, and the student's one-step jump from ``t`` to 1 (one network call, no guidance) is
matched to the teacher's guided one (two calls). This distils guidance away at the cost of a training
step instead of a ``teacher_steps`` sample, so the expensive sampler-through steps start close.

Then ``segment_steps`` steps can match the student one solver step at a time: the teacher's states at
the student's grid times are the targets, and each student step starts from the teacher's state
(``student_steps`` network calls with a graph one step deep each). With ``segment_start="student"``
each step starts instead from the student's *own* state at that time (its solve from the same noise,
rolled out without gradients): the targets stay the teacher's, so the student learns to steer its own
errors back to the teacher's trajectory, the error that a solve otherwise accumulates and its long last
step amplifies; ``"both"`` sums the two. The remaining steps are the sampler-through steps above.

With ``teacher_pool=P`` the teacher samples ``P`` trajectories once (:mod:`flowtts.train.teacher_pool`,
saved as ``teacher_pool.pt`` in the run directory and reused on resume) and every step draws its
prompts, noises and targets from them instead of sampling the teacher: far cheaper steps, a finite set
of targets.

Every objective eventually overfits its prompts or pool; ``distill(..., eval_prompts=, eval_every=)``
(:class:`HeldOutEval`) measures the EMA student on fixed held-out prompts during the run and keeps the
closest as ``best.safetensors``. ``DistillConfig.dtype`` runs the networks under autocast.

With ``learn_times=True`` the student's interior solver times are learned with its weights
(:class:`LearnedTimes`): the sampler-through loss is differentiated with respect to the times too
(the differentiable sampler takes a time grid that requires grad), so the grid moves to where the
student's few steps do best. The learned grid is what the student records (as a ``custom`` grid) and
samples with afterwards; with ``lr=0`` only the schedule is learned, for a fixed model (e.g. the
teacher's own few-step grid).

Randomness is derived from ``(seed, step)`` and drawn for the global batch, as in
:mod:`flowtts.train.trainer`, so runs resume exactly and ranks stay identical under torchrun.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from flowtts.train import distributed as dist_utils
from flowtts.train.data import MelDataset
from flowtts.train.loop import LoopSettings, TrainingLoop, append_log, start_log
from flowtts.train.prompts import Prompts, draw_prompts, generated_distance, sample_with, solve
from flowtts.train.teacher_pool import load_or_build, teacher_states
from flowtts.utils.dtypes import DTYPE_NAMES
from flowtts.utils.plotting import plot_loss_curve, pyplot, save_figure

GRIDS = ("uniform", "epss", "sway", "custom")
SEGMENT_STARTS = ("teacher", "student", "both")
LOG_COLUMNS = ["step", "loss", "lr", "grad_norm", "seconds_per_step", "elapsed_s"]
EVAL_COLUMNS = ["step", "distance", "best_distance", "best_step"]


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
    ctc_weight: float = 0.0  # weight of a recogniser's CTC loss of the text on the student's samples (DMOSpeech)
    recognizer: str = "builtin"  # the recogniser file of ctc_weight
    seed: int = 0

    def __post_init__(self):
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


class _StudentLoss(torch.nn.Module):
    """Wraps the student (and its learned times) so DistributedDataParallel sees one forward per step."""

    def __init__(self, student, config: DistillConfig, times: LearnedTimes | None = None, recognizer=None):
        super().__init__()
        self.student = student
        self.config = config
        self.times = times
        self.recognizer = recognizer  # frozen; not a submodule, so DDP and the optimiser never see it

    def forward(
        self, prompts: Prompts, target: torch.Tensor, sampling: dict | None = None, segments: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(summed squared distance to the target, element count, summed CTC loss per character)``."""
        c = self.config
        mask = prompts.generated_mask()[..., None]
        if segments is not None:  # target: teacher states at the times in segments; one student step each
            steps = list(zip(segments, segments[1:]))

            def step(state, i, raw=False):  # raw: the ODE state itself (prompt frames not copied in)
                jump = dict(steps=1, cfg_strength=c.student_cfg, sway_sampling_coef=None, t_grid=steps[i])
                jump.update(c.precision())
                out, trajectory = solve(self.student, dataclasses.replace(prompts, noise=state), cache=False, **jump)
                return trajectory[-1] if raw else out

            starts = [[target[i]] if c.segment_start != "student" else [] for i in range(len(steps))]
            if c.segment_start != "teacher":  # the student's own states along its solve (no graph)
                own = target[0]
                with torch.no_grad():
                    for i in range(len(steps)):
                        if i > 0 or c.segment_start == "student":  # both start from the same noise at i = 0
                            starts[i].append(own)
                        if i + 1 < len(steps):
                            own = step(own, i, raw=True)
            squared, terms = 0.0, 0
            for i, begins in enumerate(starts):
                for begin in begins:
                    out = step(begin, i)
                    squared = squared + ((out - target[i + 1].to(out)).pow(2) * mask.to(out.device)).sum()
                    terms += 1
            return squared / terms, mask.sum() * target.shape[-1], target.new_zeros(())
        if sampling is None:  # the student's own solve
            sampling = dict(grad_checkpoint=c.grad_checkpoint, backprop_steps=c.backprop_steps, **c.student_sampling())
            sampling.update(c.precision())
            if self.times is not None:
                sampling.update(use_epss=False, sway_sampling_coef=None, t_grid=self.times())
        out = sample_with(self.student, prompts, cache=False, **sampling)
        mask = mask.to(out.device)
        squared = (out - target.to(out.dtype)).pow(2) * mask
        ctc = out.new_zeros(())
        if self.recognizer is not None:
            ctc = self.ctc(out, prompts)
        return squared.sum(), mask.sum() * out.shape[-1], ctc

    def ctc(self, out: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        """Summed CTC loss per character of each prompt's whole text on its whole mel (the prompt's frames
        are the recording's, so the gradient reaches only what the student generated)."""
        if not all(isinstance(t, str) for t in prompts.texts):
            raise ValueError("ctc_weight needs plain-text transcripts (this dataset stores pinyin units)")
        loss, scored = self.recognizer.ctc_loss(out.float(), prompts.durations, prompts.texts)
        return loss[scored].sum()


class HeldOutEval:
    """The EMA student's distance to teacher@``teacher_steps`` on fixed held-out prompts, during a run.

    The teacher's reference is sampled once; each call samples the student (its own grid, ``cache=True``),
    appends ``(step, distance, best so far)`` to ``distill_eval.csv`` and writes the student to
    ``best.safetensors`` when it is the closest yet (kept across resumes: the best distance is read back
    from that file's metadata).
    """

    def __init__(self, teacher, prompts: Prompts, config: DistillConfig, out_dir: str):
        from flowtts.checkpoints.loader import read_metadata

        self.prompts = prompts
        self.config = config
        self.csv = os.path.join(out_dir, "distill_eval.csv")
        self.best_path = os.path.join(out_dir, "best.safetensors")
        self.reference = sample_with(teacher, prompts, cache=True, **config.teacher_sampling())
        self.best, self.best_step = float("inf"), -1
        meta = read_metadata(self.best_path) if os.path.exists(self.best_path) else None
        if meta is not None and "eval_distance" in meta:
            self.best, self.best_step = float(meta["eval_distance"]), int(meta["step"])
        self.history: list[tuple[int, float]] = []  # (step, distance), a resumed run's earlier ones first
        if os.path.exists(self.csv):
            with open(self.csv, encoding="utf-8") as f:
                self.history = [(int(r["step"]), float(r["distance"])) for r in csv.DictReader(f)]
        start_log(self.csv, EVAL_COLUMNS, 0)

    def distance(self, student, config: DistillConfig | None = None) -> float:
        out = sample_with(student, self.prompts, cache=True, **(config or self.config).student_sampling())
        return generated_distance(out, self.reference, self.prompts)

    def __call__(self, student, step: int, config: DistillConfig | None = None) -> float:
        """Score ``student`` sampling as ``config`` says (default: the run's; a learned grid passes its own)."""
        from flowtts.checkpoints.loader import save as save_model

        config = config or self.config
        distance = self.distance(student, config)
        if distance < self.best:
            self.best, self.best_step = distance, step
            extra = {
                "step": step,
                "distill_config": json.dumps(asdict(config)),
                "eval_distance": repr(distance),
                **config.student_recipe().to_metadata(),
            }
            save_model(student, self.best_path, extra=extra)
        append_log(self.csv, [step, f"{distance:.8g}", f"{self.best:.8g}", self.best_step])
        self.history.append((step, distance))
        return distance


def distill(
    teacher,
    student,
    dataset: MelDataset,
    out_dir: str,
    config: DistillConfig,
    *,
    progress: bool = True,
    on_step=None,
    max_seconds: float | None = None,
    eval_prompts: Prompts | None = None,
    eval_every: int = 0,
) -> dict:
    """Distil ``teacher`` into ``student`` (start it as ``copy.deepcopy(teacher)`` for the usual recipe).

    Writes ``last.pt`` (resume state), ``student.safetensors`` (EMA weights), ``distill_log.csv`` and
    ``loss.png`` to ``out_dir`` (rank 0 only), and resumes from ``last.pt`` when present.

    Args:
        teacher: The frozen many-step model.
        student: The model being trained (its weights are the starting point unless ``last.pt`` resumes).
        dataset: Prepared data the prompts are drawn from.
        out_dir: Run directory.
        config: :class:`DistillConfig`.
        progress: Progress bar (rank 0).
        on_step: Called with ``(step, loss)`` after every optimiser step.
        max_seconds: Stop after the first step that ends past this wall time (with a checkpoint); the
            learning-rate schedule still spans ``config.steps``. ``None``: run all steps.
        eval_prompts: Held-out prompts with fixed noises (:func:`draw_prompts`) for :class:`HeldOutEval`:
            every ``eval_every`` steps (and at the last) the EMA student's distance to the teacher is
            logged to ``distill_eval.csv`` and the closest student kept as ``best.safetensors`` (the
            starting student is evaluated first, as step 0).
        eval_every: Steps between evaluations (0: none).

    Returns:
        ``step``, last ``loss``, ``seconds``, and ``finished`` (all ``config.steps`` done).
    """
    from flowtts.checkpoints.loader import save as save_model

    check_compatible(teacher, student)
    if eval_every < 0 or (eval_every > 0 and eval_prompts is None):
        raise ValueError(f"eval_every must be >= 0 and needs eval_prompts when > 0, got {eval_every}")
    env = dist_utils.setup()
    device, rank, world = env.device, env.rank, env.world_size
    if config.dtype == "float16" and device.type != "cuda":
        raise ValueError("dtype float16 needs a GPU; use bfloat16 on CPU")
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train(config.student_dropout)
    times = LearnedTimes(config.student_grid_times()).to(device) if config.learn_times else None
    groups = [{"params": list(student.parameters())}]
    if times is not None:
        groups.append({"params": list(times.parameters()), "lr": config.times_lr, "weight_decay": 0.0})

    def recorded() -> DistillConfig:  # the settings the student samples with (a learned grid: today's)
        return times.recorded(config) if times is not None else config

    csv_path = os.path.join(out_dir, "distill_log.csv")
    evaluator = None

    def write_files():
        save_model(
            loop.ema,
            os.path.join(out_dir, "student.safetensors"),
            extra={
                "step": loop.step,
                "distill_config": json.dumps(asdict(recorded())),
                **recorded().student_recipe().to_metadata(),
            },
        )
        plot_loss_curve(
            csv_path,
            os.path.join(out_dir, "loss.png"),
            {"held-out distance to teacher": evaluator.history if evaluator is not None else None},
            ylabel="squared log-mel distance to the teacher",
        )

    loop = TrainingLoop(
        student,
        out_dir,
        LoopSettings.of(config),
        log_file="distill_log.csv",
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        name="student",
        param_groups=groups,
        parts={"times": times} if times is not None else {},
        state=lambda: {"distill_config": json.dumps(asdict(config))},
        desc="distilling",
        progress=progress,
        max_seconds=max_seconds,
        on_step=on_step,
        env=env,
    )
    recognizer = None
    if config.ctc_weight > 0:
        from flowtts.eval.recognizer import load_recognizer
        from flowtts.train.reward import mel_config_of

        recognizer = load_recognizer(config.recognizer, device).requires_grad_(False)
        recognizer.check_fits(mel_config_of(student), "the student")
    loss_module = dist_utils.wrap(_StudentLoss(student, config, times, recognizer), env)
    grid = config.student_grid_times().tolist()
    pool = None
    if config.teacher_pool:
        pool_path = os.path.join(out_dir, "teacher_pool.pt")
        pool = load_or_build(pool_path, teacher, dataset, config, config.teacher_pool, env, progress=progress)
    if eval_every and rank == 0:
        evaluator = HeldOutEval(teacher, eval_prompts, config, out_dir)
        if loop.step == 0:  # where the student starts
            evaluator(loop.ema, 0, recorded())
    last = float("nan")
    with loop:
        while loop.running():
            step = loop.step
            g = torch.Generator().manual_seed(config.seed * 7_919 + step)
            if pool is not None:
                picks = torch.randint(len(pool), (config.batch_size,), generator=g).tolist()
                prompts, states = pool.batch(dataset, picks)
            else:
                indices = torch.randint(len(dataset), (config.batch_size,), generator=g).tolist()
                prompts, states = draw_prompts(dataset, indices, teacher.num_channels, config, g), None
            rows = list(range(rank, config.batch_size, world)) or [0]
            weight = 1.0 if rank < config.batch_size else 0.0
            local = prompts.rows(rows)
            if states is not None:
                states = states[:, rows, : local.noise.shape[1]]
            total = float(prompts.generated_mask().sum()) * teacher.num_channels
            phase = config.phase(step)
            torch.manual_seed(config.seed * 104_729 + step * world + rank)  # student dropout
            if phase == "velocity":  # warm-up: one guided teacher jump from a student grid time
                t = float(grid[int(torch.randint(config.student_steps, (), generator=g))])
                local = local.noised(t)
                jump = dict(steps=1, sway_sampling_coef=None, t_grid=(t, 1.0), **config.precision())
                target = sample_with(teacher, local, cache=True, cfg_strength=config.teacher_cfg, **jump)
                squared, _, ctc = loss_module(local, target, dict(cfg_strength=config.student_cfg, **jump))
            elif phase == "segment":  # each student step from the teacher's state to its next one
                target = states if states is not None else teacher_states(teacher, local, config)
                squared, _, ctc = loss_module(local, target, None, grid)
            else:
                if states is not None:
                    target = states[-1]
                else:
                    target = sample_with(teacher, local, cache=True, **config.teacher_sampling(), **config.precision())
                squared, _, ctc = loss_module(local, target)
            loss = squared * weight * world / total + config.ctc_weight * ctc * weight * world / config.batch_size
            grad_norm = loop.update(loss)
            last = dist_utils.mean_over_ranks(loss.detach(), env)
            if loop.due_log():
                timing = [f"{time.perf_counter() - loop.step_start:.2f}", f"{loop.seconds:.1f}"]
                loop.log([loop.step, f"{last:.6f}", f"{loop.lr:.3e}", f"{grad_norm:.4f}", *timing])
            loop.end_step(last, loss=f"{last:.4f}")
            if evaluator is not None and loop.due(eval_every):
                evaluator(loop.ema, loop.step, recorded())
            loop.checkpoint_if_due()
    return {"step": loop.step, "loss": last, "seconds": loop.seconds, "finished": loop.finished}


def nfe(steps: int, cfg_strength: float, method: str = "euler") -> int:
    """Network calls per utterance: guidance doubles the batch (counted as two calls), midpoint doubles steps."""
    per_step = 2 if method == "midpoint" else 1
    return steps * per_step * (2 if cfg_strength >= 1e-5 else 1)


def evaluate(
    teacher, student, prompts: Prompts, config: DistillConfig, extra: dict | None = None
) -> tuple[list[dict], dict]:
    """Mean squared distance to teacher@``teacher_steps`` of the student and two teacher baselines.

    Args:
        teacher: The reference model.
        student: The distilled model, sampled with ``config.student_sampling()``.
        prompts: Held-out prompts with fixed noises.
        config: Step counts, guidance and grids.
        extra: More systems to compare, ``name -> (model, sample() keyword arguments)``; their rows
            follow the three standard ones.

    Returns:
        ``(rows, mels)``: one row per system (name, steps, NFE, distance, seconds per utterance) and the
        generated mel of the first prompt for each system.
    """
    method = teacher.odeint_kwargs.get("method", "euler")
    b = len(prompts.texts)

    def run(model, **kwargs):
        start = time.perf_counter()
        out = sample_with(model, prompts, cache=True, **kwargs)
        return out, (time.perf_counter() - start) / b

    reference, ref_seconds = run(teacher, **config.teacher_sampling())
    systems = [
        (
            f"student@{config.student_steps} ({config.student_grid}, cfg {config.student_cfg:g})",
            student,
            config.student_sampling(),
        ),
        (
            f"teacher@{config.student_steps} (uniform, cfg {config.teacher_cfg:g})",
            teacher,
            dict(steps=config.student_steps, cfg_strength=config.teacher_cfg, use_epss=False, sway_sampling_coef=None),
        ),
        (
            f"teacher@7 (EPSS, cfg {config.teacher_cfg:g})",
            teacher,
            dict(steps=7, cfg_strength=config.teacher_cfg, use_epss=True, sway_sampling_coef=config.teacher_sway),
        ),
    ]
    systems += [(name, model, kwargs) for name, (model, kwargs) in (extra or {}).items()]
    rows = [
        {
            "system": f"teacher@{config.teacher_steps} (reference)",
            "NFE": nfe(config.teacher_steps, config.teacher_cfg, method),
            "distance": 0.0,
            "s/utt": ref_seconds,
        }
    ]
    first = int(prompts.lens[0]), int(prompts.durations[0])
    mels = {rows[0]["system"]: reference[0, first[0] : first[1]].t()}
    signature = inspect.signature(type(teacher).sample).parameters
    defaults = {"steps": signature["steps"].default, "cfg": signature["cfg_strength"].default}
    for name, model, kwargs in systems:
        out, seconds = run(model, **kwargs)
        distance = generated_distance(out, reference, prompts)
        rows.append(
            {
                "system": name,
                "NFE": nfe(kwargs.get("steps", defaults["steps"]), kwargs.get("cfg_strength", defaults["cfg"]), method),
                "distance": distance,
                "s/utt": seconds,
            }
        )
        mels[name] = out[0, first[0] : first[1]].t()
    return rows, mels


def report(rows: list[dict], mels: dict, out_dir: str) -> str:
    """Print-ready table plus ``report.txt`` and ``report.png`` (mels of one prompt) in ``out_dir``."""
    from flowtts.utils.files import atomic_output

    header = f"{'system':<42} {'NFE':>4} {'distance':>10} {'s/utt':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['system']:<42} {r['NFE']:>4} {r['distance']:>10.5f} {r['s/utt']:>7.3f}")
    student, naive, epss7 = rows[1], rows[2], rows[3]
    lines.append(
        f"student/naive={student['distance'] / max(naive['distance'], 1e-12):.3f} "
        f"student/epss7={student['distance'] / max(epss7['distance'], 1e-12):.3f} student_nfe={student['NFE']}"
    )
    text = "\n".join(lines)
    os.makedirs(out_dir, exist_ok=True)
    with atomic_output(os.path.join(out_dir, "report.txt")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    plt = pyplot()
    if plt is None:
        return text
    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), sharex=True)
    for ax, (name, mel) in zip(axes, mels.items()):
        ax.imshow(mel.float().numpy(), origin="lower", aspect="auto", interpolation="none")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1].set_xlabel("frame")
    fig.tight_layout()
    save_figure(fig, os.path.join(out_dir, "report.png"))
    return text
