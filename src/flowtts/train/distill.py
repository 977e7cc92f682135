"""Few-step distillation: a student learns to reproduce a many-step teacher in a few solver steps.

Each step draws prompts from a prepared dataset (the first 20-50 % of an utterance as the reference
mel, the full transcript as text, the utterance length as duration; or, with ``prompts="pair"``, one
whole utterance as the reference and another's text after it in that one's length, the layout inference
uses) and one initial noise per prompt.
The frozen teacher samples its recipe (``DistillConfig.teacher``, many guided steps) on the default path
(``cache=True``); the student samples its own (``DistillConfig.student``, a few steps) from the same noise
with ``cache=False`` and the loss is the mean squared distance between the two outputs on the generated
frames. Gradients flow through every student solver step (optionally checkpointed or truncated).

Optionally the run starts with ``velocity_steps`` cheap warm-up steps that teach the student the
teacher's *guided* velocity where the student will evaluate it: the data is noised to a time ``t`` of
the student's grid, and the student's one-step jump from ``t`` to 1 (one network call, no guidance) is
matched to the teacher's guided one (two calls). This distils guidance away at the cost of a training
step instead of a many-step teacher sample, so the expensive sampler-through steps start close.

Then ``segment_steps`` steps can match the student one solver step at a time: the teacher's states at
the student's grid times are the targets, and each student step starts from the teacher's state
(one network call per student step, with a graph one step deep each). With ``segment_start="student"``
each step starts instead from the student's *own* state at that time (its solve from the same noise,
rolled out without gradients): the targets stay the teacher's, so the student learns to steer its own
errors back to the teacher's trajectory, the error that a solve otherwise accumulates and its long last
step amplifies; ``"both"`` sums the two. The remaining steps are the sampler-through steps above.

With ``teacher_pool=P`` the teacher samples ``P`` trajectories once (:mod:`flowtts.train.teacher_pool`,
saved as ``teacher_pool.pt`` in the run directory and reused on resume) and every step draws its
prompts, noises and targets from them instead of sampling the teacher: far cheaper steps, a finite set
of targets.

Every objective eventually overfits its prompts or pool; ``distill(..., eval_prompts=, eval_every=)``
(:class:`flowtts.train.distill_report.HeldOutEval`) measures the EMA student on fixed held-out prompts during
the run and keeps the closest as ``best.safetensors``. ``DistillConfig.dtype`` runs the networks under
autocast.

With ``learn_times=True`` the student's interior solver times are learned with its weights
(:class:`flowtts.train.distill_config.LearnedTimes`): the sampler-through loss is differentiated with
respect to the times too (the differentiable sampler takes a time grid that requires grad), so the grid
moves to where the student's few steps do best. The learned grid is what the student records (its
recipe's ``t_grid``) and samples with afterwards; with ``loop.lr=0`` only the schedule is learned, for a
fixed model (e.g. the teacher's own few-step grid).

Randomness is derived from ``(seed, step)`` and drawn for the global batch, as in
:mod:`flowtts.train.trainer`, so runs resume exactly and ranks stay identical under torchrun.
"""

from __future__ import annotations

import os
import time

import torch

from flowtts.model.mel import mel_config_of
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train import distributed as dist_utils
from flowtts.train.data import MelDataset
from flowtts.train.distill_config import DistillConfig, LearnedTimes, check_compatible
from flowtts.train.distill_report import HeldOutEval
from flowtts.train.loop import TrainingLoop
from flowtts.train.prompts import Prompts, draw_kind, sample_with, velocity_field_of
from flowtts.train.teacher_pool import TeacherPool, load_or_build, teacher_states
from flowtts.utils.plotting import plot_loss_curve

LOG_CSV = "distill_log.csv"
LOG_COLUMNS = ["step", "loss", "lr", "grad_norm", "seconds_per_step", "elapsed_s"]


class _StudentLoss(torch.nn.Module):
    """Wraps the student (and its learned times) so DistributedDataParallel sees one forward per step."""

    def __init__(self, student, config: DistillConfig, times: LearnedTimes | None = None, recognizer=None):
        super().__init__()
        self.student = student
        self.config = config
        self.times = times
        self.recognizer = recognizer  # frozen; not a submodule, so DDP and the optimiser never see it

    def forward(
        self,
        prompts: Prompts,
        target: torch.Tensor,
        sample_kwargs: dict | None = None,
        segments: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(summed squared distance to the target, element count, summed CTC loss per character)``.

        Args:
            prompts: This rank's prompts.
            target: The teacher's output; with ``segments``, its states at those times.
            sample_kwargs: How the student samples (default: its recipe, learned times and precision).
            segments: Grid times: match one student step from each teacher state to the next instead.
        """
        if segments is not None:
            return self.segment_loss(prompts, target, segments)
        if sample_kwargs is None:
            sample_kwargs = self.own_sample_kwargs()
        out = sample_with(self.student, prompts, cache=False, **sample_kwargs)
        mask = prompts.generated_mask()[..., None].to(out.device)
        squared = (out - target.to(out.dtype)).pow(2) * mask
        ctc = out.new_zeros(())
        if self.recognizer is not None:
            ctc = self.ctc(out, prompts)
        return squared.sum(), mask.sum() * out.shape[-1], ctc

    def own_sample_kwargs(self) -> dict:
        """The student's solve with gradients: its recipe (its learned times, when learned) and precision."""
        c = self.config
        sample_kwargs = dict(
            grad_checkpoint=c.grad_checkpoint, backprop_steps=c.backprop_steps, **c.student.sample_kwargs()
        )
        sample_kwargs.update(c.precision())
        if self.times is not None:
            sample_kwargs.update(use_epss=False, sway_sampling_coef=None, t_grid=self.times())
        return sample_kwargs

    def segment_loss(self, prompts: Prompts, target: torch.Tensor, segments: list):
        """Each student step from a state at ``segments[i]`` against the teacher's state at ``segments[i + 1]``:
        from the teacher's states, the student's own (rolled out without gradients), or both."""
        c = self.config
        mask = prompts.generated_mask()[..., None]
        steps = list(zip(segments, segments[1:]))

        def step(state, i, raw=False):  # one student step; raw: the ODE state (prompt frames not copied in)
            field = velocity_field_of(self.student, prompts, cfg_strength=c.student.cfg_strength, **c.precision())
            x = field.solve(state, steps[i]).x
            return x if raw else field.with_prompt(x)

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

    def ctc(self, out: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        """Summed CTC loss per character of each prompt's whole text on its whole mel (the prompt's frames
        are the recording's, so the gradient reaches only what the student generated)."""
        if not all(isinstance(t, str) for t in prompts.texts):
            raise ValueError("ctc_weight needs plain-text transcripts (this dataset stores pinyin units)")
        start = 1 if prompts.kind == "unprompted" else 0  # its first frame is no audio, not speech
        loss, scored = self.recognizer.ctc_loss(out[:, start:].float(), prompts.durations - start, prompts.texts)
        return loss[scored].sum()


class _Objective:
    """One step's loss on this rank: the step's global batch drawn from ``(seed, step)``, this rank's rows of
    it, and the loss of the step's phase (velocity warm-up, segments, or sampler-through)."""

    def __init__(self, teacher, dataset: MelDataset, config: DistillConfig, env, loss, pool: TeacherPool | None):
        self.teacher, self.dataset, self.config, self.env = teacher, dataset, config, env
        self.loss, self.pool = loss, pool
        self.grid = config.student.times().tolist()

    def __call__(self, step: int) -> torch.Tensor:
        c, rank, world = self.config, self.env.rank, self.env.world_size
        g = torch.Generator().manual_seed(c.seed * 7_919 + step)
        prompts, states = self.draw(g)
        rows = list(range(rank, c.batch_size, world)) or [0]
        weight = 1.0 if rank < c.batch_size else 0.0
        local = prompts.rows(rows)
        if states is not None:
            states = states[:, rows, : local.noise.shape[1]]
        total = float(prompts.generated_mask().sum()) * self.teacher.num_channels
        torch.manual_seed(c.seed * 104_729 + step * world + rank)  # student dropout
        squared, ctc = self.phase_loss(c.phase(step), local, states, g)
        return squared * weight * world / total + c.ctc_weight * ctc * weight * world / c.batch_size

    def draw(self, g: torch.Generator) -> tuple[Prompts, torch.Tensor | None]:
        """The step's global batch: prompts, and the teacher's states when a pool holds them."""
        c = self.config
        if self.pool is not None:
            picks = torch.randint(len(self.pool), (c.batch_size,), generator=g).tolist()
            return self.pool.batch(self.dataset, picks)
        indices = torch.randint(len(self.dataset), (c.batch_size,), generator=g).tolist()
        return draw_kind(self.dataset, indices, c.prompts, self.teacher.num_channels, c, g), None

    def phase_loss(self, phase: str, local: Prompts, states, g: torch.Generator):
        """``(summed squared distance, summed CTC loss)`` of this rank's prompts in ``phase``."""
        c, teacher = self.config, self.teacher
        if phase == "velocity":  # warm-up: one guided teacher jump from a student grid time
            t = float(self.grid[int(torch.randint(c.student.steps, (), generator=g))])
            local = local.noised(t)
            jump = dict(steps=1, sway_sampling_coef=None, t_grid=(t, 1.0), **c.precision())
            target = sample_with(teacher, local, cache=True, cfg_strength=c.teacher.cfg_strength, **jump)
            squared, _, ctc = self.loss(local, target, dict(cfg_strength=c.student.cfg_strength, **jump))
        elif phase == "segment":  # each student step from the teacher's state to its next one
            target = states if states is not None else teacher_states(teacher, local, c)
            squared, _, ctc = self.loss(local, target, None, self.grid)
        else:
            if states is not None:
                target = states[-1]
            else:
                target = sample_with(teacher, local, cache=True, **c.teacher.sample_kwargs(), **c.precision())
            squared, _, ctc = self.loss(local, target)
        return squared, ctc


def _check_run(config: DistillConfig, env, eval_prompts, eval_every: int) -> None:
    """Refuse what cannot run here, before the run directory exists."""
    if eval_every < 0 or (eval_every > 0 and eval_prompts is None):
        raise ValueError(f"eval_every must be >= 0 and needs eval_prompts when > 0, got {eval_every}")
    if config.dtype == "float16" and env.device.type != "cuda":
        raise ValueError("dtype float16 needs a GPU; use bfloat16 on CPU")


def _training_loop(student, out_dir: str, config: DistillConfig, times, write_files, env, **options) -> TrainingLoop:
    """The loop of the student's weights (and its learned times, at their own learning rate)."""
    groups = [{"params": list(student.parameters())}]
    if times is not None:
        groups.append({"params": list(times.parameters()), "lr": config.times_lr, "weight_decay": 0.0})
    return TrainingLoop(
        student,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        name="student",
        param_groups=groups,
        parts={"times": times} if times is not None else {},
        state=lambda: {"distill_config": config.to_json()},
        desc="distilling",
        env=env,
        **options,
    )


def _loss_module(student, config: DistillConfig, times, env) -> torch.nn.Module:
    """:class:`_StudentLoss` (with its frozen recogniser when ``ctc_weight`` asks for one), DDP-wrapped."""
    recognizer = None
    if config.ctc_weight > 0:
        from flowtts.eval.recognizer import load_recognizer

        recognizer = load_recognizer(config.recognizer, env.device).requires_grad_(False)
        recognizer.check_fits(mel_config_of(student), "the student")
    return dist_utils.wrap(_StudentLoss(student, config, times, recognizer), env)


def _teacher_pool(out_dir: str, teacher, dataset: MelDataset, config: DistillConfig, env, progress: bool):
    """The run's teacher pool (``teacher_pool.pt``, reused when it fits), ``None`` without one."""
    if not config.teacher_pool:
        return None
    path = os.path.join(out_dir, "teacher_pool.pt")
    return load_or_build(path, teacher, dataset, config, config.teacher_pool, env, progress=progress)


def _write_student(ema, step: int, out_dir: str, extra: dict, evaluator: HeldOutEval | None) -> None:
    """``student.safetensors`` (the EMA weights and ``extra`` metadata) and ``loss.png``."""
    from flowtts.checkpoints.loader import save as save_model

    save_model(ema, os.path.join(out_dir, "student.safetensors"), extra={**extra, "step": step})
    plot_loss_curve(
        os.path.join(out_dir, LOG_CSV),
        os.path.join(out_dir, "loss.png"),
        {"held-out distance to teacher": evaluator.history if evaluator is not None else None},
        ylabel="squared log-mel distance to the teacher",
    )


def _log_step(loop: TrainingLoop, loss: float, grad_norm: float) -> None:
    timing = [f"{time.perf_counter() - loop.step_start:.2f}", f"{loop.seconds:.1f}"]
    loop.log([loop.step, f"{loss:.6f}", f"{loop.lr:.3e}", f"{grad_norm:.4f}", *timing])


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

    Writes ``last.pt`` (resume state), ``student.safetensors`` (EMA weights and the recipe they sample with),
    ``distill_log.csv`` and ``loss.png`` to ``out_dir`` (rank 0 only), and resumes from ``last.pt`` when
    present.

    Args:
        teacher: The frozen many-step model.
        student: The model being trained (its weights are the starting point unless ``last.pt`` resumes).
        dataset: Prepared data the prompts are drawn from.
        out_dir: Run directory.
        config: :class:`flowtts.train.distill_config.DistillConfig`.
        progress: Progress bar (rank 0).
        on_step: Called with ``(step, loss)`` after every optimiser step.
        max_seconds: Stop after the first step that ends past this wall time (with a checkpoint); the
            learning-rate schedule still spans ``config.loop.steps``. ``None``: run all steps.
        eval_prompts: Held-out prompts with fixed noises (:func:`flowtts.train.prompts.draw_prompts`) for
            :class:`flowtts.train.distill_report.HeldOutEval`: every ``eval_every`` steps (and at the last)
            the EMA student's distance to the teacher is logged to ``distill_eval.csv`` and the closest
            student kept as ``best.safetensors`` (the starting student is evaluated first, as step 0).
        eval_every: Steps between evaluations (0: none).

    Returns:
        ``step``, last ``loss``, ``seconds``, and ``finished`` (all ``config.loop.steps`` done).
    """
    from flowtts.checkpoints.recorded import carried_metadata

    check_compatible(teacher, student)
    env = dist_utils.setup()
    _check_run(config, env, eval_prompts, eval_every)
    if env.rank == 0:
        os.makedirs(out_dir, exist_ok=True)
    teacher.to(env.device).eval().requires_grad_(False)
    student.to(env.device).train(config.student_dropout)
    times = LearnedTimes(config.student.times()).to(env.device) if config.learn_times else None

    def recipe() -> SamplingRecipe:  # what the student samples with (a learned grid: today's)
        return times.recorded(config.student) if times is not None else config.student

    evaluator = None
    carried = carried_metadata(teacher)  # the student speaks like the teacher's data: sample it alike

    def write_files():
        _write_student(loop.ema, loop.step, out_dir, {**carried, **recipe().to_metadata()}, evaluator)

    options = dict(progress=progress, max_seconds=max_seconds, on_step=on_step)
    loop = _training_loop(student, out_dir, config, times, write_files, env, **options)
    loss_module = _loss_module(student, config, times, env)
    pool = _teacher_pool(out_dir, teacher, dataset, config, env, progress)
    objective = _Objective(teacher, dataset, config, env, loss_module, pool)
    if eval_every and env.rank == 0:
        evaluator = HeldOutEval(teacher, eval_prompts, config, out_dir)
        if loop.step == 0:  # where the student starts
            evaluator(loop.ema, 0, recipe())
    last = float("nan")
    with loop:
        while loop.running():
            loss = objective(loop.step)
            grad_norm = loop.update(loss)
            last = dist_utils.mean_over_ranks(loss.detach(), env)
            if loop.due_log():
                _log_step(loop, last, grad_norm)
            loop.end_step(last, loss=f"{last:.4f}")
            if evaluator is not None and loop.due(eval_every):
                evaluator(loop.ema, loop.step, recipe())
            loop.checkpoint_if_due()
    return {"step": loop.step, "loss": last, "seconds": loop.seconds, "finished": loop.finished}
