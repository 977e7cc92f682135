"""The frame every training loop shares: optimiser, schedule, EMA, resume, log, progress, checkpoints.

Flow-matching training (:mod:`flowtts.train.trainer`), distillation (:mod:`flowtts.train.distill`),
reward fine-tuning (:mod:`flowtts.train.reward`) and recogniser training (:mod:`flowtts.train.asr`)
differ only in what a step computes. Each builds a :class:`TrainingLoop` and writes its step::

    loop = TrainingLoop(model, out_dir, settings, log_file="log.csv", log_columns=[...], write_files=...)
    with loop:
        while loop.running():
            loss = ...                       # the step's own work
            grad_norm = loop.update(loss)    # backward, clip, AdamW, schedule, EMA; step += 1
            if loop.due_log():
                loop.log([...])
            stop = loop.end_step(float(loss), loss=f"{float(loss):.4f}")
            loop.checkpoint_if_due()

The loop owns: AdamW with linear warm-up and decay, an EMA copy of the weights, resume from
``out_dir/last.pt`` (refusing a state written for another run's identity), the CSV log, the progress
bar (rank 0), atomic checkpoints at ``save_every`` / the last step / a stop, the stops themselves (the
time limit, or a ``STOP`` file created in the run directory -- how the web app stops a run; rank 0
decides under torchrun), and the barrier at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from flowtts.train import distributed as dist_utils
from flowtts.utils.files import atomic_output

CHECKPOINT = "last.pt"
STOP_FILE = "STOP"  # created in a run directory, it stops the run after its current step, with a checkpoint


@dataclass(frozen=True)
class LoopSettings:
    """Optimisation and bookkeeping every loop has; each run config holds one (its ``loop``).

    Each kind of run declares its defaults once, as its config's default ``loop`` (``TRAIN_LOOP``,
    ``DISTILL_LOOP``, ``REWARD_LOOP``, ``ASR_LOOP``); the command line starts from the same ones.

    Attributes:
        steps: Optimiser steps of the whole schedule.
        lr: Peak learning rate (AdamW).
        warmup: Steps of linear warm-up, then linear decay to 0 at ``steps``.
        weight_decay: AdamW's weight decay.
        grad_clip: Largest gradient norm (clipped above it).
        ema_decay: Decay of the EMA copy of the weights, in [0, 1).
        save_every: Steps between checkpoints (the last step and a stop always write one).
        log_every: Steps between log rows (the last step is always logged).

    Raises:
        ValueError: A count below its minimum, a negative learning rate, or an EMA decay outside [0, 1).
    """

    steps: int
    lr: float
    warmup: int
    weight_decay: float
    grad_clip: float
    ema_decay: float
    save_every: int
    log_every: int

    def __post_init__(self):
        for name, least in (("steps", 1), ("save_every", 1), ("log_every", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not self.lr >= 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def with_overrides(self, **overrides) -> LoopSettings:
        """These settings with the non-``None`` ``overrides`` (a command line's given options)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1 - decay)


def save_checkpoint(path: str, state: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str) -> dict:
    """A run's resume state; a damaged one is named with what to do (it is never modified).

    Raises:
        ValueError: The file cannot be read as a resume state.
    """
    from flowtts.checkpoints.official import why_unreadable

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = why_unreadable(error)
    else:
        if isinstance(state, dict) and "step" in state:
            return state
        reason = "not a flowtts resume state"
    raise ValueError(
        f"cannot resume from {path}: {reason}. It was left as it is: delete it to start this run afresh, or "
        "point --out at a new directory and start from an earlier snapshot of the run (--init model_STEP.safetensors)"
    )


def start_log(path: str, columns: list[str], rank: int, step: int | None = None) -> None:
    """Write the CSV header unless the log exists: a resumed run appends to it, after dropping the rows of
    the steps past ``step`` (logged after the checkpoint it resumes from, they run again)."""
    if rank != 0:
        return
    if not os.path.exists(path):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(columns)
    elif step is not None:
        drop_rows_after(path, step)


def drop_rows_after(path: str, step: int) -> None:
    """Remove the rows of a CSV log whose ``step`` column is past ``step`` (a log without one is left alone)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        return
    at = rows[0].index("step")

    def past(row) -> bool:
        try:
            return int(row[at]) > step
        except (IndexError, ValueError):
            return False

    kept = [rows[0]] + [row for row in rows[1:] if not past(row)]
    if len(kept) < len(rows):
        with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(kept)


def progress_bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step")


def append_log(path: str, row: list) -> None:
    """Append one row to a CSV log."""
    with open(path, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(row)


class TrainingLoop:
    """One training run's shared frame (see the module docstring).

    Args:
        model: The module being trained (its weights are the start unless ``last.pt`` resumes).
        out_dir: Run directory (created on rank 0); ``last.pt`` and the log live there.
        settings: :class:`LoopSettings`.
        log_file: CSV log name in ``out_dir`` (a resumed run appends).
        log_columns: Its header.
        write_files: Called on rank 0 after every checkpoint, to write the run's own files (EMA weights,
            plots).
        name: Key of ``model`` in ``last.pt``.
        param_groups: AdamW parameter groups (default: all of ``model``'s parameters).
        parts: More objects with ``state_dict``/``load_state_dict`` kept in ``last.pt`` (learned times, an
            anchor model).
        identity: ``key -> (value, what)``: strings stored in ``last.pt`` that a resumed run must match
            (an architecture's JSON...); a mismatch is refused as "written for another ``what``".
        state: Called at every checkpoint for more values to store (epoch, position in the epoch...); the
            resumed values are in :attr:`resumed`.
        desc: Progress bar label.
        progress: Show a progress bar (rank 0).
        stop_at: Stop after this step without finishing the schedule (as if killed after a checkpoint).
        max_seconds: Stop (with a checkpoint) after the first step that ends past this wall time.
        on_step: Called with ``(step, value)`` after every step.
        env: A :func:`flowtts.train.distributed.setup` result (default: set up here).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        out_dir: str,
        settings: LoopSettings,
        *,
        log_file: str,
        log_columns: list[str],
        write_files: Callable[[], None] | None = None,
        name: str = "model",
        param_groups: list[dict] | None = None,
        parts: Mapping[str, object] | None = None,
        identity: Mapping[str, tuple[str, str]] | None = None,
        state: Callable[[], dict] | None = None,
        desc: str = "training",
        progress: bool = True,
        stop_at: int | None = None,
        max_seconds: float | None = None,
        on_step: Callable[[int, float], None] | None = None,
        env=None,
    ):
        import copy

        self.env = env if env is not None else dist_utils.setup()
        self.rank = self.env.rank
        self.model, self.settings, self.out_dir = model, settings, out_dir
        if self.rank == 0:
            os.makedirs(out_dir, exist_ok=True)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        groups = param_groups if param_groups is not None else [{"params": list(model.parameters())}]
        self.optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, settings.warmup, settings.steps)
        )
        self.parts = {name: model, "ema": self.ema, "optimizer": self.optimizer, "scheduler": self.scheduler}
        self.parts.update(parts or {})
        self.identity = dict(identity or {})
        self._state, self._write_files, self._on_step = state, write_files, on_step
        self.path = os.path.join(out_dir, CHECKPOINT)
        self.step, self.resumed = 0, {}
        if os.path.exists(self.path):
            saved = load_checkpoint(self.path)
            for key, (value, what) in self.identity.items():
                if saved.get(key) != value:
                    raise ValueError(f"{self.path} was written for another {what}; use a new --out directory")
            for key, part in self.parts.items():
                part.load_state_dict(saved[key])
            self.step, self.resumed = saved["step"], saved
        self.log_path = os.path.join(out_dir, log_file)
        self.log_columns = log_columns
        start_log(self.log_path, log_columns, self.rank, step=self.step)
        self.bar = progress_bar(progress and self.rank == 0, settings.steps, self.step, desc)
        self.stop = min(settings.steps, stop_at) if stop_at is not None else settings.steps
        self.max_seconds = max_seconds
        self.start = time.perf_counter()
        self.step_start = self.start
        self.over = self.stop_requested = False

    # ----------------------------------------------------------------- the run
    def __enter__(self) -> TrainingLoop:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        dist_utils.barrier(self.env)

    def running(self) -> bool:
        """Whether another step is to run (not past ``stop`` and not out of time); starts its clock."""
        self.step_start = time.perf_counter()
        return self.step < self.stop and not self.over

    @property
    def finished(self) -> bool:
        """Whether the whole schedule (``settings.steps``) ran."""
        return self.step >= self.settings.steps

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def update(self, loss: torch.Tensor | None = None) -> float:
        """One optimiser step: backward of ``loss`` (unless the caller already ran it), clip, AdamW, the
        schedule and the EMA; returns the gradient norm before clipping.

        Raises:
            ValueError: The gradient is not finite (the run diverged); nothing is updated.
        """
        if loss is not None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip))
        if not math.isfinite(grad_norm):
            raise ValueError(
                f"the run diverged at step {self.step + 1}: its gradient is {grad_norm} (a learning rate too high?); "
                f"the weights were not updated, and {self.path} keeps the last checkpoint"
            )
        self.optimizer.step()
        self.scheduler.step()
        ema_update(self.ema, self.model, self.settings.ema_decay)
        self.step += 1
        return grad_norm

    def due_log(self) -> bool:
        """Whether this step is logged (every ``log_every`` and the last)."""
        return self.step % self.settings.log_every == 0 or self.step == self.stop

    def log(self, row: Mapping | list) -> None:
        """Append a row (a list in column order, or a dict by column) to the CSV log (rank 0)."""
        if self.rank != 0:
            return
        values = [row.get(c, "") for c in self.log_columns] if isinstance(row, Mapping) else list(row)
        append_log(self.log_path, values)

    def end_step(self, value: float, **postfix) -> bool:
        """After a step: ``on_step``, the progress bar, the time limit and ``STOP`` file; returns whether to stop."""
        if self._on_step is not None:
            self._on_step(self.step, value)
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(**postfix)
            self.bar.update(1)
        self.stop_requested = self.rank == 0 and os.path.exists(os.path.join(self.out_dir, STOP_FILE))
        over = self.stop_requested or (self.max_seconds is not None and self.seconds > self.max_seconds)
        if self.env.world_size > 1:  # rank 0 decides for every rank, so all stop at the same step
            flag = torch.tensor([float(over)], device=self.env.device)
            torch.distributed.broadcast(flag, 0)
            over = bool(flag.item())
        self.over = over
        return self.over

    def due(self, every: int) -> bool:
        """Whether something done every ``every`` steps (0: never) is due, or the run ends after this step."""
        return bool(every and self.step % every == 0) or self.step == self.stop or self.over

    def checkpoint_if_due(self) -> None:
        """Checkpoint every ``save_every`` steps, at the end, and when stopped (time limit or ``STOP`` file);
        a ``STOP`` file is removed once obeyed, so the run resumes normally afterwards."""
        if self.due(self.settings.save_every):
            self.checkpoint()
        if self.stop_requested:
            os.remove(os.path.join(self.out_dir, STOP_FILE))

    def checkpoint(self) -> None:
        """Write ``last.pt`` atomically, then the run's own files (rank 0)."""
        if self.rank != 0:
            return
        state = {key: part.state_dict() for key, part in self.parts.items()}
        state.update({key: value for key, (value, _) in self.identity.items()})
        state.update(self._state() if self._state is not None else {})
        state["step"] = self.step
        save_checkpoint(self.path, state)
        if self._write_files is not None:
            self._write_files()
