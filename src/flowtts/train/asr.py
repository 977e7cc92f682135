"""Training the CTC recogniser (:mod:`flowtts.eval.recognizer`) on a prepared dataset.

Batches come from :func:`flowtts.train.data.frame_batches`; every random choice of step ``s``
(augmentation, dropout) is derived from ``(seed, s)`` and the batch order from ``(seed, epoch)``, so a
run killed after a checkpoint resumes to the same weights as a run straight through.

Augmentation, so that the recogniser hears words rather than one recording chain: a random time
stretch (speaking rate), a level shift of the log-mel, and SpecAugment's frequency and time masks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from flowtts.eval.recognizer import CTCRecognizer, RecognizerConfig, normalize_text, save_recognizer
from flowtts.eval.wer import edit_distance, word_error_rate
from flowtts.train.data import BatchCursor, MelDataset, collate, frame_batches
from flowtts.train.distributed import DistEnv
from flowtts.train.loop import LoopSettings, TrainingLoop

LOG_CSV = "asr_log.csv"
LOG_COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "heldout_loss", "cer", "wer", "elapsed_s"]
ASR_LOOP = LoopSettings(
    steps=3000, lr=1e-3, warmup=200, weight_decay=0.01, grad_clip=5.0, ema_decay=0.995, save_every=200, log_every=1
)


@dataclass
class ASRConfig:
    """Batches and augmentation of :func:`train_recognizer`, and its loop (optimisation, bookkeeping; every
    step is logged)."""

    loop: LoopSettings = ASR_LOOP
    batch_frames: int = 12_000
    max_samples: int = 48
    eval_every: int = 200
    seed: int = 0
    stretch: tuple[float, float] = (0.75, 1.3)  # range of the time-stretch factor (1, 1: off)
    level: float = 0.5  # largest log-mel level shift
    freq_masks: int = 2
    freq_width: int = 12
    time_masks: int = 2
    time_width: float = 0.06  # of the utterance's frames, per mask

    def __post_init__(self):
        for name in ("batch_frames", "max_samples", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.loop.lr > 0:
            raise ValueError(f"lr must be positive, got {self.loop.lr}")
        lo, hi = self.stretch
        if not 0 < lo <= hi:
            raise ValueError(f"stretch must satisfy 0 < lo <= hi, got {self.stretch}")
        self.stretch = (float(lo), float(hi))


def _texts(dataset: MelDataset) -> list[str]:
    return [it["text"] for it in dataset.items]


def check_dataset(dataset: MelDataset, recognizer: CTCRecognizer, what: str) -> None:
    """``ValueError`` when ``dataset`` cannot train or test ``recognizer`` (front end, no usable text)."""
    from flowtts.config import MelConfig

    if len(dataset) == 0:
        raise ValueError(f"{what} has no usable rows")
    mel = dict(dataset.info.get("mel", {}))
    recognizer.check_fits(MelConfig(**mel), what)
    if not any(normalize_text(t, recognizer.alphabet) for t in _texts(dataset)):
        raise ValueError(f"{what}: no transcript has a character of the recogniser's alphabet")


def augment(mels: torch.Tensor, lens: torch.Tensor, config: ASRConfig, g: torch.Generator):
    """Stretched, level-shifted and masked copies of ``mels (b, n, d)``; returns ``(mels, lens)``."""
    out, new_lens = [], []
    floor = float(mels.min())
    lo, hi = config.stretch
    for mel, n in zip(mels, lens.tolist()):
        m = mel[:n]
        factor = lo + (hi - lo) * float(torch.rand((), generator=g))
        frames = max(2, round(n * factor))
        if frames != n:
            m = F.interpolate(m.t()[None], size=frames, mode="linear", align_corners=False)[0].t()
        m = m + config.level * (2 * float(torch.rand((), generator=g)) - 1)
        m = m.clone()
        d = m.shape[1]
        for _ in range(config.freq_masks):
            width = int(torch.randint(0, config.freq_width + 1, (), generator=g))
            start = int(torch.randint(0, max(1, d - width), (), generator=g))
            m[:, start : start + width] = floor
        for _ in range(config.time_masks):
            width = int(torch.randint(0, max(1, int(config.time_width * frames)) + 1, (), generator=g))
            start = int(torch.randint(0, max(1, frames - width), (), generator=g))
            m[start : start + width] = floor
        out.append(m)
        new_lens.append(frames)
    return torch.nn.utils.rnn.pad_sequence(out, batch_first=True, padding_value=floor), torch.tensor(new_lens)


def channel_statistics(dataset: MelDataset, limit: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of the first ``limit`` utterances' frames."""
    frames = torch.cat([dataset[i][0] for i in range(min(limit, len(dataset)))])
    return frames.mean(dim=0), frames.std(dim=0).clamp(min=1e-3)


@torch.no_grad()
def evaluate_recognizer(recognizer: CTCRecognizer, dataset: MelDataset, batch: int = 16) -> dict:
    """Held-out mean CTC loss per character, character error rate and word error rate (greedy decoding)."""
    texts = _texts(dataset)
    hyps, losses, counted = [], [], 0
    training = recognizer.training
    recognizer.eval()
    try:
        for begin in range(0, len(dataset), batch):
            rows = range(begin, min(begin + batch, len(dataset)))
            mels, lens, _ = collate([dataset[i] for i in rows])
            loss, scored = recognizer.ctc_loss(mels, lens, [texts[i] for i in rows])
            losses.append(float(loss[scored].sum()))
            counted += int(scored.sum())
            hyps += recognizer.transcribe(mels, lens)
    finally:
        recognizer.train(training)
    refs = [normalize_text(t, recognizer.alphabet) for t in texts]
    chars = sum(len(r) for r in refs)
    cer = sum(edit_distance(list(r), list(h)) for r, h in zip(refs, hyps)) / max(chars, 1)
    return {
        "loss": losses and sum(losses) / max(counted, 1),
        "cer": cer,
        "wer": word_error_rate(refs, hyps),
        "hypotheses": hyps,
    }


def _new_recognizer(
    dataset: MelDataset, config: ASRConfig, recognizer_config: RecognizerConfig | None, held_out: MelDataset | None
) -> CTCRecognizer:
    """A recogniser with seeded initial weights and the data's channel statistics, once the data fit it."""
    from flowtts.config import MelConfig

    if recognizer_config is None:
        recognizer_config = RecognizerConfig(mel=MelConfig(**dataset.info.get("mel", {})))
    torch.manual_seed(config.seed)  # initial weights
    recognizer = CTCRecognizer(recognizer_config)
    check_dataset(dataset, recognizer, "the training data")
    if held_out is not None:
        check_dataset(held_out, recognizer, "the held-out data")
    if max(dataset.frames) * config.stretch[1] > config.batch_frames:
        raise ValueError(
            f"the longest utterance stretched by {config.stretch[1]} does not fit batch_frames={config.batch_frames}"
        )
    mean, std = channel_statistics(dataset)
    recognizer.mel_mean.copy_(mean)
    recognizer.mel_std.copy_(std)
    return recognizer.train()


class _HeldOut:
    """The held-out figures of the latest evaluation (empty before the first, or without held-out data)."""

    def __init__(self, dataset: MelDataset | None, every: int):
        self.dataset, self.every, self.figures = dataset, every, {}

    def due(self, loop: TrainingLoop) -> bool:
        return self.dataset is not None and (loop.step % self.every == 0 or loop.step == loop.stop)

    def evaluate(self, ema: CTCRecognizer) -> dict:
        """Evaluate ``ema``; the log columns of its figures."""
        self.figures = evaluate_recognizer(ema, self.dataset)
        return {
            "heldout_loss": f"{self.figures['loss']:.4f}",
            "cer": f"{self.figures['cer']:.4f}",
            "wer": f"{self.figures['wer']:.4f}",
        }


def _training_loop(recognizer, out_dir: str, dataset, config: ASRConfig, cursor, held: _HeldOut, **options):
    """The recogniser's loop (resumable only with the same architecture); its file records the run."""

    def write_files() -> None:
        extra = {"step": loop.step, "asr_config": asdict(config), "data": os.path.abspath(dataset.directory)}
        if held.figures:
            extra["heldout"] = {k: held.figures[k] for k in ("loss", "cer", "wer")}
        save_recognizer(loop.ema, os.path.join(out_dir, "recognizer.safetensors"), extra=extra)

    architecture = json.dumps(recognizer.config.to_dict())
    loop = TrainingLoop(
        recognizer,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        identity={"recognizer_config": (architecture, "recogniser architecture")},
        state=lambda: {**cursor.state(), "asr_config": json.dumps(asdict(config))},
        desc="training recogniser",
        env=DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")),
        **options,
    )
    return loop


def _step_loss(recognizer, dataset: MelDataset, texts: list[str], indices, config: ASRConfig, step: int):
    """The mean CTC loss per character of a batch's augmented mels (every scored row counts)."""
    mels, lens, _ = collate([dataset[i] for i in indices])
    g = torch.Generator().manual_seed(config.seed * 7_919 + step)
    mels, lens = augment(mels, lens, config, g)
    torch.manual_seed(config.seed * 104_729 + step)  # dropout
    loss_rows, scored = recognizer.ctc_loss(mels, lens, [texts[i] for i in indices])
    return loss_rows[scored].mean() if bool(scored.any()) else loss_rows.sum()


def train_recognizer(
    dataset: MelDataset,
    out_dir: str,
    config: ASRConfig,
    *,
    held_out: MelDataset | None = None,
    recognizer_config: RecognizerConfig | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
    max_seconds: float | None = None,
) -> dict:
    """Train a :class:`CTCRecognizer`; writes ``last.pt``, ``recognizer.safetensors`` (EMA), ``asr_log.csv``.

    Resumes from ``out_dir/last.pt`` when present.

    Args:
        dataset: Prepared training data (:func:`flowtts.train.data.prepare_dataset`).
        out_dir: Run directory.
        config: :class:`ASRConfig`.
        held_out: Prepared held-out data for the loss, CER and WER logged every ``eval_every`` steps.
        recognizer_config: Architecture (default: :class:`RecognizerConfig` with the data's mel front end).
        progress: Progress bar.
        stop_at: Stop after this step (as if killed after a checkpoint).
        on_step: Called with ``(step, loss)`` after every optimiser step.
        max_seconds: Stop (with a checkpoint) after the first step past this wall time.

    Returns:
        ``step``, last ``loss``, the last held-out figures (``cer``, ``wer``), ``seconds``, ``finished``.
    """
    recognizer = _new_recognizer(dataset, config, recognizer_config, held_out)
    texts = _texts(dataset)

    def batches_of(epoch: int) -> list[list[int]]:
        budget = int(config.batch_frames / config.stretch[1])
        return frame_batches(dataset.frames, budget, config.max_samples, config.seed, epoch)

    cursor, held = BatchCursor(batches_of), _HeldOut(held_out, config.eval_every)
    options = dict(progress=progress, stop_at=stop_at, max_seconds=max_seconds, on_step=on_step)
    loop = _training_loop(recognizer, out_dir, dataset, config, cursor, held, **options)
    if loop.resumed:
        cursor.restore(loop.resumed)
    last_loss = float("nan")
    with loop:
        while loop.running():
            loss = _step_loss(recognizer, dataset, texts, cursor.next(), config, loop.step)
            grad_norm = loop.update(loss)
            last_loss = float(loss.detach())
            row = {"step": loop.step, "epoch": cursor.epoch, "loss": f"{last_loss:.4f}"}
            row.update(lr=f"{loop.lr:.3e}", grad_norm=f"{grad_norm:.3f}")
            if held.due(loop):
                row.update(held.evaluate(loop.ema))
            row["elapsed_s"] = f"{loop.seconds:.1f}"
            loop.log(row)
            cer = {"cer": f"{held.figures['cer']:.3f}"} if held.figures else {}
            loop.end_step(last_loss, loss=f"{last_loss:.3f}", **cer)
            loop.checkpoint_if_due()
    figures = held.figures
    return {
        "step": loop.step,
        "loss": last_loss,
        "cer": figures.get("cer"),
        "wer": figures.get("wer"),
        "seconds": loop.seconds,
        "finished": loop.finished,
    }
