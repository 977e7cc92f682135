"""Flow-matching training on one process or many (torchrun + DistributedDataParallel).

Design for exact resume and rank-count independence: every random choice of step ``s`` (data order
of an epoch, span, noise, time, CFG drops, dropout) is derived from ``(seed, epoch)`` or
``(seed, s)``, and drawn for the *global* batch; each rank takes its share of the rows. A run killed
at any moment resumes from its last checkpoint to the same parameters an uninterrupted run reaches,
and N processes match one process with the same global batch up to float rounding.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from flowtts.train import distributed as dist_utils
from flowtts.train.data import (
    BatchCursor,
    MelDataset,
    PairLayout,
    collate,
    epoch_batches,
    item_frames,
    item_text,
    join_item,
    silence_frame,
)
from flowtts.train.loop import LoopSettings, TrainingLoop, load_checkpoint  # noqa: F401 -- load_checkpoint: its old home
from flowtts.utils.dtypes import DTYPE_NAMES, resolve_dtype
from flowtts.utils.plotting import plot_loss_curve, pyplot, save_figure  # noqa: F401 -- their home before

log = logging.getLogger("flowtts")

LOG_CSV = "train_log.csv"
LOG_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "frames_per_s",
    "elapsed_s",
    "val_loss",
    "wrong_text_loss",
    "ctc_loss",
]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of :func:`train`."""

    steps: int = 10_000
    lr: float = 7.5e-5
    warmup: int = 1_000
    weight_decay: float = 0.01
    batch_frames: int = 8_000
    max_samples: int = 32
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    save_every: int = 500
    log_every: int = 10
    eval_every: int = 250
    seed: int = 0
    dtype: str | None = None  # autocast dtype of the network (DTYPE_NAMES); None: bfloat16 on CUDA, float32 on CPU
    isolate_batch: bool = False  # True: no padding leaks between samples (exact DDP == 1 process), slower
    grad_accum: int = 1  # frame batches per optimiser step (F5-TTS's grad_accumulation_steps)
    snapshot_every: int = 0  # keep the EMA weights as model_{step}.safetensors every N steps (0: never)
    keep_snapshots: int = -1  # how many snapshots to keep, newest first (-1: all)
    log_samples: bool = False  # at every save, synthesise one fixed utterance into samples/
    ctc_weight: float = 0.0  # weight of the recogniser's CTC loss on the one-step estimate of the clean mel
    ctc_min_time: float = 0.5  # the CTC term is taken on rows whose flow time is at least this
    recognizer: str = "builtin"  # recogniser file of the CTC term
    pair_fraction: float = 0.0  # share of utterances trained two in a row, as inference continues a reference
    # the first of a pair: None, as recorded; (lo, hi) seconds, cut to its speech and followed by digital
    # silence of lo..hi s, as inference prepares a reference (PairLayout); pair_rms: its target_rms (0: off)
    pair_gap: tuple[float, float] | None = None
    pair_rms: float = 0.0

    def __post_init__(self):
        for name in ("steps", "batch_frames", "max_samples", "save_every", "log_every", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0 (0: no snapshots), got {self.snapshot_every}")
        if self.keep_snapshots == 0 or self.keep_snapshots < -1:
            raise ValueError(f"keep_snapshots must be -1 (all) or >= 1, got {self.keep_snapshots}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.ctc_weight >= 0:
            raise ValueError(f"ctc_weight must be >= 0, got {self.ctc_weight}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES} or None, got {self.dtype!r}")
        if not 0 <= self.pair_fraction <= 1:
            raise ValueError(f"pair_fraction must be in [0, 1], got {self.pair_fraction}")
        if not 0 <= self.ctc_min_time < 1:
            raise ValueError(f"ctc_min_time must be in [0, 1), got {self.ctc_min_time}")
        self.pair_layout()  # its checks

    def pair_layout(self) -> PairLayout:
        """The :class:`PairLayout` of this run's pairs."""
        return PairLayout.of(self.pair_gap, self.pair_rms, self.seed)


def _step_generator(seed: int, step: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed((seed * 7_919 + step) % (2**63))


def _text_gap(model, batch, seed, device, isolate) -> tuple[float, float]:
    """Loss with the right texts and with the texts rolled by one (same draws): the alignment signal."""
    mels, lens, texts = batch
    mels, lens = mels.to(device), lens.to(device)
    g = _step_generator(seed, -1, device)
    draws = model.draw(lens, mels.shape[1], g)
    draws.drop_audio_cond = draws.drop_text = False
    with torch.no_grad():
        right = model(mels, texts, lens=lens, draws=draws, isolate_batch=isolate)[0].item()
        wrong = model(mels, texts[1:] + texts[:1], lens=lens, draws=draws, isolate_batch=isolate)[0].item()
    return right, wrong


def ctc_term(recognizer, mels, lens, texts, draws, pred, min_time: float) -> tuple[torch.Tensor, int]:
    """Summed CTC loss per character of the texts on the one-step clean estimates, and how many rows count.

    The estimate of the clean mel from the noisy one at time ``t`` is ``x_t + (1 - t) v``; the frames outside
    the infill span are the recording's own. Rows with ``t < min_time`` (whose estimates are still a blur)
    and steps that drop the text do not count.
    """
    time = draws.time.to(pred.dtype)
    rows = (time >= min_time).nonzero().flatten().tolist()
    if draws.drop_text or not rows:
        return pred.new_zeros(()), 0
    n = pred.shape[1]
    x1, x0, t = mels[:, :n].to(pred.dtype), draws.noise[:, :n].to(pred.dtype), time[:, None, None]
    estimate = (1 - t) * x0 + t * x1 + (1 - t) * pred
    estimate = torch.where(draws.span[:, :n, None], estimate, x1)
    loss, scored = recognizer.ctc_loss(estimate[rows].float(), lens[rows], [texts[r] for r in rows])
    return loss[scored].sum(), int(scored.sum())


def train(
    model,
    dataset: MelDataset,
    out_dir: str,
    config: TrainConfig,
    *,
    held_out: MelDataset | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Train ``model`` (a :class:`flowtts.CFM` with a ``config``) and write checkpoints to ``out_dir``.

    Resumes automatically from ``out_dir/last.pt``. Under ``torchrun`` (``WORLD_SIZE`` > 1) it runs
    DistributedDataParallel (gloo on CPU, NCCL on GPU); only rank 0 writes files.

    Args:
        model: The model to train (its weights are the starting point unless a checkpoint resumes).
        dataset: Prepared training data.
        out_dir: Where ``last.pt`` (resume state), ``model.safetensors`` (EMA weights, flowtts format),
            ``train_log.csv`` and ``loss.png`` go; with ``config.snapshot_every`` also
            ``model_{step}.safetensors``, with ``config.log_samples`` also ``samples/`` (one fixed
            utterance -- the first held-out one, else the first training one -- synthesised at every
            save by upstream's recipe, see :mod:`flowtts.train.snapshots`).
        config: :class:`TrainConfig`.
        held_out: Optional data for the right-vs-wrong-text loss gap, logged every ``eval_every``.
        progress: Progress bar with loss and throughput (rank 0).
        stop_at: Stop after this step without finishing the schedule (as if killed after a checkpoint).
        on_step: Called with ``(step, loss)`` after every optimiser step.

    Returns:
        Summary: final step, last loss, frames per second, elapsed seconds.
    """
    from flowtts.checkpoints.loader import save as save_model
    from flowtts.train.snapshots import keep_snapshot, log_sample

    if len(dataset) == 0:
        raise ValueError(f"the training data {dataset.directory} has no usable rows")
    frames = dataset.frames
    if max(frames) > config.batch_frames:
        raise ValueError(
            f"the longest utterance has {max(frames)} frames, over batch_frames={config.batch_frames}: "
            "raise --batch-frames or prepare the data with a lower max_frames"
        )
    env = dist_utils.setup()
    device, rank, world = env.device, env.rank, env.world_size
    dtype = resolve_dtype(config.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("dtype float16 needs a GPU; use bfloat16 on CPU")
    model.to(device).train()

    layout = config.pair_layout()
    silence = silence_frame(dataset.info["mel"]) if layout.gap is not None else None
    if config.pair_fraction > 0:
        layout.check(dataset)

    def batches_of(epoch: int) -> list[list[tuple[int, ...]]]:
        return epoch_batches(
            frames,
            config.batch_frames,
            config.max_samples,
            config.seed,
            epoch,
            config.pair_fraction,
            lambda item: item_frames(dataset, item, layout),
        )

    cursor = BatchCursor(batches_of)
    csv_path = os.path.join(out_dir, LOG_CSV)

    def write_files():
        save_model(loop.ema, os.path.join(out_dir, "model.safetensors"), extra={"step": loop.step})
        plot_loss_curve(csv_path, os.path.join(out_dir, "loss.png"))
        if config.log_samples:
            mel, text = (held_out if held_out is not None and len(held_out) else dataset)[0]
            log_sample(loop.ema, mel, text, out_dir, loop.step, seed=config.seed)

    loop = TrainingLoop(
        model,
        out_dir,
        LoopSettings.of(config),
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        identity={"model_config": (json.dumps(model.config.to_dict()), "architecture")},
        state=lambda: {**cursor.state(), "train_config": json.dumps(asdict(config))},
        desc="training",
        progress=progress,
        stop_at=stop_at,
        on_step=on_step,
        env=env,
    )
    if loop.resumed:
        cursor.restore(loop.resumed)
        if rank == 0:
            log.info("resumed from %s at step %d", loop.path, loop.step)
    net = dist_utils.wrap(model, env)
    recognizer = None
    if config.ctc_weight > 0:
        from flowtts.eval.recognizer import load_recognizer
        from flowtts.train.reward import mel_config_of

        recognizer = load_recognizer(config.recognizer, device).requires_grad_(False)
        recognizer.check_fits(mel_config_of(model), "the model")
    eval_batch = None
    if held_out is not None and len(held_out) >= 2:
        eval_batch = collate([held_out[i] for i in range(min(8, len(held_out)))])

    accum = config.grad_accum
    window_frames, window_start = 0, time.perf_counter()
    last_loss = float("nan")
    with loop:
        while loop.running():
            loop.optimizer.zero_grad(set_to_none=True)
            loss_sums, ctc_sums = [], []
            for micro in range(accum):
                indices = cursor.next()
                mels, lens, texts = collate([join_item(dataset, item, layout, silence) for item in indices])
                mels, lens = mels.to(device), lens.to(device)
                # one random stream per micro-batch (= the step without accumulation)
                draw_index = loop.step * accum + micro
                generator = _step_generator(config.seed, draw_index, device)
                draws = model.draw(lens, mels.shape[1], generator)
                total_span = int(draws.span.sum()) * model.num_channels  # loss elements of the global batch
                rows = list(range(rank, len(indices), world))
                weight = 1.0
                if not rows:  # fewer rows than ranks: run one row with weight 0 to join the all-reduce
                    rows, weight = [0], 0.0
                torch.manual_seed(config.seed * 104_729 + draw_index * world + rank)  # dropout
                local_frames = int(lens[rows].max())
                # Only the last micro-batch's backward all-reduces under DDP (the sum is the same).
                sync = micro == accum - 1 or not hasattr(net, "no_sync")
                with contextlib.nullcontext() if sync else net.no_sync():
                    local_draws = draws.select(rows, local_frames)
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                        loss_sum, _, pred = net(
                            mels[rows, :local_frames],
                            [texts[r] for r in rows],
                            lens=lens[rows],
                            draws=local_draws,
                            reduction="sum",
                            isolate_batch=config.isolate_batch,
                        )
                    loss_sum = loss_sum * weight
                    # DDP averages gradients over ranks; scaling by world size makes the result the
                    # gradient of the global mean; micro-batches count equally, as in F5-TTS's accumulation.
                    loss = loss_sum * world / max(total_span, 1) / accum
                    if recognizer is not None:
                        ctc_sum, ctc_rows = ctc_term(
                            recognizer,
                            mels[rows],
                            lens[rows],
                            [item_text(dataset, indices[r], plain=True) for r in rows],
                            local_draws,
                            pred,
                            config.ctc_min_time,
                        )
                        loss = loss + config.ctc_weight * ctc_sum * weight * world / len(indices) / accum
                        ctc_sums.append(float(ctc_sum.detach()) / max(ctc_rows, 1))
                    loss.backward()
                loss_sums.append(loss_sum.detach() / max(total_span, 1) * world)
                window_frames += int(lens.sum())
            grad_norm = loop.update()
            last_loss = dist_utils.mean_over_ranks(torch.stack(loss_sums).mean(), env)
            fps = None
            if loop.due_log():
                elapsed = time.perf_counter() - window_start
                fps = window_frames / max(elapsed, 1e-9)
                window_frames, window_start = 0, time.perf_counter()
                row = {
                    "step": loop.step,
                    "epoch": cursor.epoch,
                    "loss": f"{last_loss:.5f}",
                    "lr": f"{loop.lr:.3e}",
                    "grad_norm": f"{grad_norm:.4f}",
                    "frames_per_s": f"{fps:.0f}",
                    "elapsed_s": f"{loop.seconds:.1f}",
                    "ctc_loss": f"{sum(ctc_sums) / len(ctc_sums):.4f}" if ctc_sums else "",
                }
                if eval_batch is not None and (loop.step % config.eval_every == 0 or loop.step == loop.stop):
                    right, wrong = _text_gap(loop.ema, eval_batch, config.seed, device, config.isolate_batch)
                    row["val_loss"], row["wrong_text_loss"] = f"{right:.5f}", f"{wrong:.5f}"
                loop.log(row)
            postfix = {"loss": f"{last_loss:.4f}", **({"fps": f"{fps:.0f}"} if fps is not None else {})}
            loop.end_step(last_loss, **postfix)
            loop.checkpoint_if_due()
            if config.snapshot_every and loop.step % config.snapshot_every == 0 and rank == 0:
                keep_snapshot(loop.ema, out_dir, loop.step, config.keep_snapshots)
    return {"step": loop.step, "loss": last_loss, "seconds": loop.seconds, "finished": loop.finished}


def read_log(out_dir: str) -> list[dict]:
    with open(os.path.join(out_dir, LOG_CSV), encoding="utf-8") as f:
        return list(csv.DictReader(f))
