"""Distillation quality: the held-out distance kept during a run (:class:`HeldOutEval`), and the
side-by-side table of a student against the teacher's samplers (:func:`evaluate`, :func:`report`)."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import os
import time

from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train.distill_config import DistillConfig
from flowtts.train.loop import append_log, start_log
from flowtts.train.prompts import Prompts, generated_distance, sample_with
from flowtts.utils.plotting import pyplot, save_figure

EVAL_COLUMNS = ["step", "distance", "best_distance", "best_step"]


class HeldOutEval:
    """The EMA student's distance to the teacher (sampled as ``config.teacher``) on fixed held-out prompts,
    during a run.

    The teacher's reference is sampled once; each call samples the student (``cache=True``), appends
    ``(step, distance, best so far)`` to ``distill_eval.csv`` and writes the student to ``best.safetensors``
    when it is the closest yet (kept across resumes: the best distance is read back from that file's
    metadata).
    """

    def __init__(self, teacher, prompts: Prompts, config: DistillConfig, out_dir: str):
        from flowtts.checkpoints.loader import read_metadata
        from flowtts.checkpoints.recorded import carried_metadata

        self.prompts = prompts
        self.config = config
        self.csv = os.path.join(out_dir, "distill_eval.csv")
        self.best_path = os.path.join(out_dir, "best.safetensors")
        self.reference = sample_with(teacher, prompts, cache=True, **config.teacher.sample_kwargs())
        self.carried = carried_metadata(teacher)
        self.best, self.best_step = float("inf"), -1
        meta = read_metadata(self.best_path) if os.path.exists(self.best_path) else None
        if meta is not None and "eval_distance" in meta:
            self.best, self.best_step = float(meta["eval_distance"]), int(meta["step"])
        self.history: list[tuple[int, float]] = []  # (step, distance), a resumed run's earlier ones first
        if os.path.exists(self.csv):
            with open(self.csv, encoding="utf-8") as f:
                self.history = [(int(r["step"]), float(r["distance"])) for r in csv.DictReader(f)]
        start_log(self.csv, EVAL_COLUMNS, 0)

    def distance(self, student, recipe: SamplingRecipe | None = None) -> float:
        """The mean squared distance of ``student``'s samples (as ``recipe`` says, default the run's student
        recipe) to the teacher's, on the generated frames."""
        recipe = recipe or self.config.student
        out = sample_with(student, self.prompts, cache=True, **recipe.sample_kwargs())
        return generated_distance(out, self.reference, self.prompts)

    def __call__(self, student, step: int, recipe: SamplingRecipe | None = None) -> float:
        """Score ``student`` sampling as ``recipe`` says (default: the run's; a learned grid passes its own)."""
        from flowtts.checkpoints.loader import save as save_model

        recipe = recipe or self.config.student
        distance = self.distance(student, recipe)
        if distance < self.best:
            self.best, self.best_step = distance, step
            extra = {**self.carried, "step": step, "eval_distance": repr(distance), **recipe.to_metadata()}
            save_model(student, self.best_path, extra=extra)
        append_log(self.csv, [step, f"{distance:.8g}", f"{self.best:.8g}", self.best_step])
        self.history.append((step, distance))
        return distance


def _nfe(sample_kwargs: dict, method: str, sample) -> int:
    """Network calls of one solve with ``sample_kwargs`` (``sample``'s defaults for what they leave out)."""
    defaults = inspect.signature(sample).parameters
    steps = sample_kwargs.get("steps", defaults["steps"].default)
    cfg_strength = sample_kwargs.get("cfg_strength", defaults["cfg_strength"].default)
    return SamplingRecipe(steps=steps, cfg_strength=cfg_strength, sway_sampling_coef=None, method=method).nfe()


def _standard_systems(teacher, student, config: DistillConfig) -> list[tuple[str, object, SamplingRecipe]]:
    """``(row name, model, recipe)`` of the student and the teacher's two few-step baselines: the teacher
    on a uniform grid of the student's steps, and on F5-TTS's 7-step EPSS grid (each with its guidance)."""
    mine, theirs = config.student, config.teacher
    cfg = theirs.cfg_strength
    naive = SamplingRecipe(steps=mine.steps, cfg_strength=cfg, sway_sampling_coef=None, use_epss=False)
    epss7 = SamplingRecipe(steps=7, cfg_strength=cfg, sway_sampling_coef=theirs.sway_sampling_coef, use_epss=True)
    return [
        (f"student@{mine.steps} ({mine.grid}, cfg {mine.cfg_strength:g})", student, mine),
        (f"teacher@{mine.steps} (uniform, cfg {cfg:g})", teacher, naive),
        (f"teacher@7 (EPSS, cfg {cfg:g})", teacher, epss7),
    ]


def evaluate(
    teacher, student, prompts: Prompts, config: DistillConfig, extra: dict | None = None
) -> tuple[list[dict], dict]:
    """Mean squared distance to the teacher (sampled as ``config.teacher``) of the student and two teacher
    baselines (:func:`_standard_systems`).

    Args:
        teacher: The reference model.
        student: The distilled model, sampled as ``config.student``.
        prompts: Held-out prompts with fixed noises.
        config: The teacher's and the student's recipes.
        extra: More systems to compare, ``name -> (model, sample() keyword arguments)``; their rows
            follow the three standard ones.

    Returns:
        ``(rows, mels)``: one row per system (name, steps, NFE, distance, seconds per utterance) and the
        generated mel of the first prompt for each system.
    """
    method = teacher.odeint_kwargs.get("method", "euler")
    b = len(prompts.texts)

    def run(model, sample_kwargs):
        start = time.perf_counter()
        out = sample_with(model, prompts, cache=True, **sample_kwargs)
        return out, (time.perf_counter() - start) / b

    reference, ref_seconds = run(teacher, config.teacher.sample_kwargs())
    systems = [
        (name, model, recipe.sample_kwargs()) for name, model, recipe in _standard_systems(teacher, student, config)
    ]
    systems += [(name, model, sample_kwargs) for name, (model, sample_kwargs) in (extra or {}).items()]
    reference_nfe = dataclasses.replace(config.teacher, method=method).nfe()
    name = f"teacher@{config.teacher.steps} (reference)"
    rows = [{"system": name, "NFE": reference_nfe, "distance": 0.0, "s/utt": ref_seconds}]
    first = int(prompts.lens[0]), int(prompts.durations[0])
    mels = {rows[0]["system"]: reference[0, first[0] : first[1]].t()}
    for name, model, sample_kwargs in systems:
        out, seconds = run(model, sample_kwargs)
        distance = generated_distance(out, reference, prompts)
        nfe = _nfe(sample_kwargs, method, type(teacher).sample)
        rows.append({"system": name, "NFE": nfe, "distance": distance, "s/utt": seconds})
        mels[name] = out[0, first[0] : first[1]].t()
    return rows, mels


def report(rows: list[dict], mels: dict, out_dir: str, source: str | None = None) -> str:
    """Print-ready table plus ``report.txt`` and ``report.png`` (mels of one prompt) in ``out_dir``.

    Args:
        rows, mels: What :func:`evaluate` returned.
        out_dir: Where the files go.
        source: Which prompts were scored and which split they are (the first line when given).
    """
    from flowtts.utils.files import atomic_output

    header = f"{'system':<42} {'NFE':>4} {'distance':>10} {'s/utt':>7}"
    lines = ([f"prompts: {source}"] if source else []) + [header, "-" * len(header)]
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
