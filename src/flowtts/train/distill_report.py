"""Distillation quality: the held-out distance kept during a run (:class:`HeldOutEval`), and the
side-by-side table of a student against the teacher's samplers (:func:`evaluate`, :func:`report`)."""

from __future__ import annotations

import csv
import inspect
import json
import os
import time
from dataclasses import asdict

from flowtts.train.distill_config import DistillConfig, nfe
from flowtts.train.loop import append_log, start_log
from flowtts.train.prompts import Prompts, generated_distance, sample_with
from flowtts.utils.plotting import pyplot, save_figure

EVAL_COLUMNS = ["step", "distance", "best_distance", "best_step"]


class HeldOutEval:
    """The EMA student's distance to teacher@``teacher_steps`` on fixed held-out prompts, during a run.

    The teacher's reference is sampled once; each call samples the student (its own grid, ``cache=True``),
    appends ``(step, distance, best so far)`` to ``distill_eval.csv`` and writes the student to
    ``best.safetensors`` when it is the closest yet (kept across resumes: the best distance is read back
    from that file's metadata).
    """

    def __init__(self, teacher, prompts: Prompts, config: DistillConfig, out_dir: str):
        from flowtts.checkpoints.loader import read_metadata
        from flowtts.checkpoints.recorded import carried_metadata

        self.prompts = prompts
        self.config = config
        self.csv = os.path.join(out_dir, "distill_eval.csv")
        self.best_path = os.path.join(out_dir, "best.safetensors")
        self.reference = sample_with(teacher, prompts, cache=True, **config.teacher_sampling())
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
                **self.carried,
                "step": step,
                "distill_config": json.dumps(asdict(config)),
                "eval_distance": repr(distance),
                **config.student_recipe().to_metadata(),
            }
            save_model(student, self.best_path, extra=extra)
        append_log(self.csv, [step, f"{distance:.8g}", f"{self.best:.8g}", self.best_step])
        self.history.append((step, distance))
        return distance


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
