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

from flowtts.model.mel import mel_config_of
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
from flowtts.train.loop import LoopSettings, TrainingLoop
from flowtts.utils.dtypes import DTYPE_NAMES, resolve_dtype
from flowtts.utils.plotting import plot_loss_curve

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
TRAIN_LOOP = LoopSettings(
    steps=10_000,
    lr=7.5e-5,
    warmup=1_000,
    weight_decay=0.01,
    grad_clip=1.0,
    ema_decay=0.999,
    save_every=500,
    log_every=10,
)


@dataclass
class TrainConfig:
    """What :func:`train` does besides the loop's optimisation and bookkeeping (``loop``)."""

    loop: LoopSettings = TRAIN_LOOP
    batch_frames: int = 8_000
    max_samples: int = 32
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
        for name in ("batch_frames", "max_samples", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0 (0: no snapshots), got {self.snapshot_every}")
        if self.keep_snapshots == 0 or self.keep_snapshots < -1:
            raise ValueError(f"keep_snapshots must be -1 (all) or >= 1, got {self.keep_snapshots}")
        if self.loop.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.loop.lr}")
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


def _check_data(dataset: MelDataset, config: TrainConfig) -> None:
    if len(dataset) == 0:
        raise ValueError(f"the training data {dataset.directory} has no usable rows")
    longest = max(dataset.frames)
    if longest > config.batch_frames:
        raise ValueError(
            f"the longest utterance has {longest} frames, over batch_frames={config.batch_frames}: "
            "raise --batch-frames or prepare the data with a lower max_frames"
        )


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The network's autocast dtype: the config's, else bfloat16 on CUDA and float32 elsewhere."""
    dtype = resolve_dtype(config.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("dtype float16 needs a GPU; use bfloat16 on CPU")
    return dtype


def _frozen_recognizer(config: TrainConfig, model, device):
    """The recogniser of the CTC term (frozen, checked against the model's mel), ``None`` without the term."""
    if config.ctc_weight <= 0:
        return None
    from flowtts.eval.recognizer import load_recognizer

    recognizer = load_recognizer(config.recognizer, device).requires_grad_(False)
    recognizer.check_fits(mel_config_of(model), "the model")
    return recognizer


class _FlowObjective:
    """Forward and backward of one optimiser step's frame batches, this rank's rows of each.

    Every random choice of a micro-batch derives from ``(seed, step * grad_accum + micro)``: one stream per
    micro-batch, the step's stream without accumulation.
    """

    def __init__(self, model, dataset: MelDataset, config: TrainConfig, env, dtype: torch.dtype, recognizer=None):
        self.model, self.net = model, dist_utils.wrap(model, env)
        self.dataset, self.config, self.env, self.dtype = dataset, config, env, dtype
        self.layout = config.pair_layout()
        self.silence = silence_frame(dataset.info["mel"]) if self.layout.gap is not None else None
        self.recognizer = recognizer

    def step(self, cursor: BatchCursor, step: int) -> tuple[list[torch.Tensor], list[float], int]:
        """Backward of every micro-batch of ``step``: their global mean losses, CTC values and frames."""
        accum = self.config.grad_accum
        loss_sums, ctc_values, frames = [], [], 0
        for micro in range(accum):
            indices = cursor.next()
            # Only the last micro-batch's backward all-reduces under DDP (the sum is the same).
            sync = micro == accum - 1 or not hasattr(self.net, "no_sync")
            loss_sum, ctc_value, lens = self.micro_batch(indices, step * accum + micro, sync)
            loss_sums.append(loss_sum)
            if ctc_value is not None:
                ctc_values.append(ctc_value)
            frames += int(lens.sum())
        return loss_sums, ctc_values, frames

    def micro_batch(self, indices, draw_index: int, sync: bool):
        """Backward of one frame batch; ``(its global mean loss, its CTC value or None, its lengths)``."""
        c, model, device = self.config, self.model, self.env.device
        rank, world = self.env.rank, self.env.world_size
        items = [join_item(self.dataset, item, self.layout, self.silence) for item in indices]
        mels, lens, texts = collate(items)
        mels, lens = mels.to(device), lens.to(device)
        draws = model.draw(lens, mels.shape[1], _step_generator(c.seed, draw_index, device))
        total_span = int(draws.span.sum()) * model.num_channels  # loss elements of the global batch
        rows, weight = list(range(rank, len(indices), world)), 1.0
        if not rows:  # fewer rows than ranks: run one row with weight 0 to join the all-reduce
            rows, weight = [0], 0.0
        torch.manual_seed(c.seed * 104_729 + draw_index * world + rank)  # dropout
        local_frames = int(lens[rows].max())
        ctc_value = None
        with contextlib.nullcontext() if sync else self.net.no_sync():
            local_draws = draws.select(rows, local_frames)
            with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                loss_sum, _, pred = self.net(
                    mels[rows, :local_frames],
                    [texts[r] for r in rows],
                    lens=lens[rows],
                    draws=local_draws,
                    reduction="sum",
                    isolate_batch=c.isolate_batch,
                )
            loss_sum = loss_sum * weight
            # DDP averages gradients over ranks; scaling by world size makes the result the gradient of the
            # global mean; micro-batches count equally, as in F5-TTS's accumulation.
            loss = loss_sum * world / max(total_span, 1) / c.grad_accum
            if self.recognizer is not None:
                plain = [item_text(self.dataset, indices[r], plain=True) for r in rows]
                ctc_sum, ctc_rows = ctc_term(
                    self.recognizer, mels[rows], lens[rows], plain, local_draws, pred, c.ctc_min_time
                )
                loss = loss + c.ctc_weight * ctc_sum * weight * world / len(indices) / c.grad_accum
                ctc_value = float(ctc_sum.detach()) / max(ctc_rows, 1)
            loss.backward()
        return loss_sum.detach() / max(total_span, 1) * world, ctc_value, lens


class _Throughput:
    """Frames per second since the last reading."""

    def __init__(self):
        self.frames, self.start = 0, time.perf_counter()

    def add(self, frames: int) -> None:
        self.frames += frames

    def read(self) -> float:
        elapsed = time.perf_counter() - self.start
        fps = self.frames / max(elapsed, 1e-9)
        self.frames, self.start = 0, time.perf_counter()
        return fps


def _log_row(loop: TrainingLoop, epoch: int, loss: float, grad_norm: float, fps: float, ctc_values) -> dict:
    return {
        "step": loop.step,
        "epoch": epoch,
        "loss": f"{loss:.5f}",
        "lr": f"{loop.lr:.3e}",
        "grad_norm": f"{grad_norm:.4f}",
        "frames_per_s": f"{fps:.0f}",
        "elapsed_s": f"{loop.seconds:.1f}",
        "ctc_loss": f"{sum(ctc_values) / len(ctc_values):.4f}" if ctc_values else "",
    }


def _write_files(loop: TrainingLoop, out_dir: str, config: TrainConfig, sample_data: MelDataset) -> None:
    """``model.safetensors`` (the EMA weights), ``loss.png``, and with ``log_samples`` the step's sample."""
    from flowtts.checkpoints.loader import save as save_model
    from flowtts.train.snapshots import log_sample

    save_model(loop.ema, os.path.join(out_dir, "model.safetensors"), extra={"step": loop.step})
    plot_loss_curve(os.path.join(out_dir, LOG_CSV), os.path.join(out_dir, "loss.png"))
    if config.log_samples:
        mel, text = sample_data[0]
        log_sample(loop.ema, mel, text, out_dir, loop.step, seed=config.seed)


def _training_loop(model, dataset, out_dir, config: TrainConfig, cursor, held_out, env, **options) -> TrainingLoop:
    """The loop of ``model``: resumable only with the same architecture, its position in the epochs kept."""
    sample_data = held_out if held_out is not None and len(held_out) else dataset
    loop = TrainingLoop(
        model,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=lambda: _write_files(loop, out_dir, config, sample_data),
        identity={"model_config": (json.dumps(model.config.to_dict()), "architecture")},
        state=lambda: {**cursor.state(), "train_config": json.dumps(asdict(config))},
        desc="training",
        env=env,
        **options,
    )
    return loop


def _batch_cursor(dataset: MelDataset, config: TrainConfig) -> BatchCursor:
    """Where the run is in its epochs of frame batches (items of one utterance or a pair, see ``pair_fraction``)."""
    layout = config.pair_layout()
    if config.pair_fraction > 0:
        layout.check(dataset)

    def length(item: tuple[int, ...]) -> int:
        return item_frames(dataset, item, layout)

    def batches_of(epoch: int) -> list[list[tuple[int, ...]]]:
        c = config
        return epoch_batches(dataset.frames, c.batch_frames, c.max_samples, c.seed, epoch, c.pair_fraction, length)

    return BatchCursor(batches_of)


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
        model: The model to train (its weights are the starting point unless a checkpoint resumes). Its file's
            ``vocoder`` record is dropped: trained on ``dataset``, it may speak another voice than the one the
            built-in vocoder learnt.
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
    from flowtts.checkpoints.recorded import VOCODER_KEY
    from flowtts.train.snapshots import keep_snapshot

    _check_data(dataset, config)
    if VOCODER_KEY in (getattr(model, "metadata", None) or {}):  # trained on this data, it may speak another
        model.metadata = {k: v for k, v in model.metadata.items() if k != VOCODER_KEY}  # voice: auto -> Griffin-Lim
    env = dist_utils.setup()
    dtype = _autocast_dtype(config, env.device)
    model.to(env.device).train()
    cursor = _batch_cursor(dataset, config)
    options = dict(progress=progress, stop_at=stop_at, on_step=on_step)
    loop = _training_loop(model, dataset, out_dir, config, cursor, held_out, env, **options)
    if loop.resumed:
        cursor.restore(loop.resumed)
        if env.rank == 0:
            log.info("resumed from %s at step %d", loop.path, loop.step)
    objective = _FlowObjective(model, dataset, config, env, dtype, _frozen_recognizer(config, model, env.device))
    eval_batch = None
    if held_out is not None and len(held_out) >= 2:
        eval_batch = collate([held_out[i] for i in range(min(8, len(held_out)))])
    throughput, last_loss = _Throughput(), float("nan")
    with loop:
        while loop.running():
            loop.optimizer.zero_grad(set_to_none=True)
            loss_sums, ctc_values, frames = objective.step(cursor, loop.step)
            throughput.add(frames)
            grad_norm = loop.update()
            last_loss = dist_utils.mean_over_ranks(torch.stack(loss_sums).mean(), env)
            fps = None
            if loop.due_log():
                fps = throughput.read()
                row = _log_row(loop, cursor.epoch, last_loss, grad_norm, fps, ctc_values)
                if eval_batch is not None and (loop.step % config.eval_every == 0 or loop.step == loop.stop):
                    right, wrong = _text_gap(loop.ema, eval_batch, config.seed, env.device, config.isolate_batch)
                    row["val_loss"], row["wrong_text_loss"] = f"{right:.5f}", f"{wrong:.5f}"
                loop.log(row)
            postfix = {"loss": f"{last_loss:.4f}", **({"fps": f"{fps:.0f}"} if fps is not None else {})}
            loop.end_step(last_loss, **postfix)
            loop.checkpoint_if_due()
            if config.snapshot_every and loop.step % config.snapshot_every == 0 and env.rank == 0:
                keep_snapshot(loop.ema, out_dir, loop.step, config.keep_snapshots)
    return {"step": loop.step, "loss": last_loss, "seconds": loop.seconds, "finished": loop.finished}


def read_log(out_dir: str) -> list[dict]:
    with open(os.path.join(out_dir, LOG_CSV), encoding="utf-8") as f:
        return list(csv.DictReader(f))
