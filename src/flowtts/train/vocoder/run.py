"""``flowtts vocoder train``: a :class:`~flowtts.vocoder.network.MelVocoder` on the one training loop.

Each step draws random segments of the corpus's waves, makes their log-mels with the vocoder's own front
end, and asks the vocoder for the waves back. The generator's loss is

* ``mel_weight`` x the log-mel L1 of the two waves,
* ``stft_weight`` x the multi-resolution STFT loss,
* ``phase_weight`` x APNet's anti-wrapping phase losses (instantaneous phase, group delay, instantaneous
  frequency) against the segment's own STFT phase,
* from step ``adversarial_from`` on: the hinge generator loss of multi-period and multi-resolution
  discriminators plus ``feature_weight`` x their feature matching; the discriminators are then updated
  once per step with their own AdamW (``aux_lr``), kept in ``last.pt``.

The run writes ``vocoder.safetensors`` (the EMA weights, with what it was trained on) at every checkpoint,
and ``vocoder_log.csv``. Randomness derives from ``(seed, step)``, so a resumed run is the run that never
stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import torch

from flowtts.train import distributed as dist_utils
from flowtts.train.loop import LoopSettings, TrainingLoop
from flowtts.train.vocoder import losses
from flowtts.train.vocoder.data import WaveCorpus, corpus_audio_files
from flowtts.train.vocoder.discriminators import (
    Discriminators,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from flowtts.vocoder.network import MelVocoder, VocoderConfig

VOCODER_LOOP = LoopSettings(
    steps=20_000, lr=5e-4, warmup=200, weight_decay=0.01, grad_clip=10.0, ema_decay=0.999, save_every=250, log_every=25
)
LOG_CSV = "vocoder_log.csv"
LOG_COLUMNS = ["step", "loss", "mel", "stft", "phase", "gen", "feat", "disc", "lr", "grad_norm", "seconds_per_step"]
OUTPUT = "vocoder.safetensors"


@dataclass(frozen=True)
class VocoderTrainConfig:
    """A vocoder training run.

    Attributes:
        vocoder: The architecture and mel front end.
        loop: Optimisation and bookkeeping.
        batch_size: Segments per step.
        segment_frames: Mel frames per segment (``segment_frames * hop`` samples).
        mel_weight, stft_weight, phase_weight: Weights of the reconstruction losses.
        adversarial_from: First step with discriminators (``None``: never).
        feature_weight: Weight of feature matching (adversarial steps).
        aux_lr: Learning rate of the discriminators.
        gain_db: Range of the random gain applied to each segment.
        seed: Seed of every random draw.

    Raises:
        ValueError: A size below 1, a negative weight, or an empty gain range.
    """

    vocoder: VocoderConfig = dataclasses.field(default_factory=VocoderConfig)
    loop: LoopSettings = VOCODER_LOOP
    batch_size: int = 16
    segment_frames: int = 48
    mel_weight: float = 45.0
    stft_weight: float = 15.0
    phase_weight: float = 15.0
    adversarial_from: int | None = None
    feature_weight: float = 2.0
    aux_lr: float = 2e-4
    gain_db: tuple[float, float] = (-6.0, 0.0)
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "segment_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "batch_size" else 8):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'batch_size' else 8}, got {value!r}")
        for name in ("mel_weight", "stft_weight", "phase_weight", "feature_weight", "aux_lr"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.adversarial_from is not None and (
            not isinstance(self.adversarial_from, int) or self.adversarial_from < 0
        ):
            raise ValueError(f"adversarial_from must be a step >= 0 or None, got {self.adversarial_from!r}")
        mel = self.vocoder.mel
        if self.segment_frames * mel.hop_length < 2 * mel.n_fft:
            raise ValueError(
                f"segment_frames must give at least 2 * n_fft = {2 * mel.n_fft} samples (the longest STFT loss), "
                f"got {self.segment_frames} frames of {mel.hop_length}"
            )
        low, high = self.gain_db
        if not low <= high:
            raise ValueError(f"gain_db must be (low, high) with low <= high, got {self.gain_db}")

    def identity(self) -> str:
        """What a resumed run must match: everything but the loop's length and bookkeeping."""
        data = dataclasses.asdict(self)
        data["loop"] = {k: v for k, v in data["loop"].items() if k not in ("steps", "save_every", "log_every")}
        return json.dumps(data, sort_keys=True)


class _Discriminate:
    """The discriminators and their optimiser (a part of ``last.pt``)."""

    def __init__(self, net: Discriminators, lr: float):
        self.net = net
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.8, 0.99))

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])

    def update(self, real: torch.Tensor, fake: torch.Tensor, env) -> float:
        loss = discriminator_loss(self.net(real), self.net(fake.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist_utils.average_gradients(self.net.parameters(), env)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.optimizer.step()
        return float(loss)


def _rank_share(batch_size: int, env) -> slice:
    """This rank's rows of the global batch (every rank draws the same global batch).

    Raises:
        ValueError: A batch that does not split evenly over the ranks.
    """
    if batch_size % env.world_size:
        raise ValueError(f"batch_size {batch_size} does not split over {env.world_size} processes")
    per = batch_size // env.world_size
    return slice(env.rank * per, (env.rank + 1) * per)


def generator_losses(vocoder: MelVocoder, mel_spec, wave: torch.Tensor, config: VocoderTrainConfig) -> dict:
    """The reconstruction losses of one batch of waves ``(b, nw)``; ``"fake"`` holds the generated waves."""
    mel = vocoder.config.mel
    log_mel = mel_spec(wave)
    log_mag, phase = vocoder.spectrum(log_mel)
    fake = vocoder.synthesize(log_mag, phase)
    real = wave[:, : fake.shape[-1]]
    target = mel_spec.spectrum(wave)
    phase_terms = losses.phase_losses(phase, target.angle(), target.abs())
    return {
        "fake": fake,
        "real": real,
        "mel": losses.mel_loss(mel_spec, fake, real),
        "stft": losses.multi_resolution_stft_loss(fake, real, losses.stft_resolutions(mel.n_fft, mel.hop_length)),
        "phase": sum(phase_terms.values()),
    }


def train_vocoder(
    corpus: str,
    out_dir: str,
    config: VocoderTrainConfig,
    *,
    init: str | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
    stop_at: int | None = None,
    on_step=None,
) -> str:
    """Train a vocoder on the waves of ``corpus``; returns the path of ``vocoder.safetensors``.

    Args:
        corpus: A ``metadata.csv`` or a prepared dataset folder.
        out_dir: Run directory (``last.pt``, the log, the vocoder file).
        config: :class:`VocoderTrainConfig`.
        init: A vocoder file whose weights start the run (its config must equal ``config.vocoder``).
        progress: Show a progress bar.
        max_seconds: Stop (with a checkpoint) after the first step past this wall time.
        stop_at: Stop after this step.
        on_step: Called with ``(step, loss)`` after every step.
    """
    from flowtts.model.mel import MelSpec
    from flowtts.vocoder.files import load_vocoder_file, save_vocoder

    mel = config.vocoder.mel
    files = corpus_audio_files(corpus)
    try:
        data = WaveCorpus(files, mel.target_sample_rate, min_samples=config.segment_frames * mel.hop_length)
    except ValueError as error:  # name what sets the length: the segment
        raise ValueError(
            f"{error} (a segment is segment_frames {config.segment_frames} x hop {mel.hop_length} samples, "
            f"{config.segment_frames * mel.hop_length / mel.target_sample_rate:.3g} s): give longer clips or "
            "shorter segments (--segment-frames)"
        ) from None
    env = dist_utils.setup()
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)  # the starting weights are the seed's, like every other draw
        vocoder = MelVocoder(config.vocoder)
        disc_net = Discriminators(resolutions=losses.stft_resolutions(mel.n_fft, mel.hop_length))
    if init is not None:
        start = load_vocoder_file(init)
        if start.config != config.vocoder:
            raise ValueError(f"--init {init} is another architecture: {start.config} (this run: {config.vocoder})")
        vocoder.load_state_dict(start.state_dict())
    vocoder.to(env.device)  # before the loop copies it for the EMA
    disc = _Discriminate(disc_net.to(env.device), config.aux_lr)
    mel_spec = MelSpec(**dataclasses.asdict(mel)).to(env.device)
    facts = {
        "trained_on": os.path.abspath(corpus),
        "corpus_seconds": round(data.seconds, 1),
        "train_config": config.identity(),
    }
    loop: TrainingLoop

    def write_files() -> None:
        extra = {**facts, "steps": loop.step}
        save_vocoder(loop.ema, os.path.join(out_dir, OUTPUT), extra=extra)

    loop = TrainingLoop(
        vocoder,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        parts={"discriminators": disc},
        identity={"vocoder_config": (config.identity(), "vocoder training config")},
        desc="vocoder",
        progress=progress,
        stop_at=stop_at,
        max_seconds=max_seconds,
        on_step=on_step,
        env=env,
    )
    samples = config.segment_frames * mel.hop_length
    first_step = loop.step  # a resumed run times only its own steps
    share = _rank_share(config.batch_size, env)
    with loop:
        while loop.running():
            wave = data.batch(config.batch_size, samples, config.seed, loop.step, config.gain_db)[share].to(env.device)
            terms = generator_losses(vocoder, mel_spec, wave, config)
            loss = config.mel_weight * terms["mel"] + config.stft_weight * terms["stft"]
            loss = loss + config.phase_weight * terms["phase"]
            gen = feat = d_loss = float("nan")
            adversarial = config.adversarial_from is not None and loop.step >= config.adversarial_from
            if adversarial:
                disc.net.requires_grad_(False)
                fake_out, real_out = disc.net(terms["fake"]), disc.net(terms["real"])
                g, f = generator_loss(fake_out), feature_matching_loss(real_out, fake_out)
                loss = loss + g + config.feature_weight * f
                gen, feat = float(g.detach()), float(f.detach())
                disc.net.requires_grad_(True)
            loop.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            dist_utils.average_gradients(vocoder.parameters(), env)
            grad_norm = loop.update()
            if adversarial:
                d_loss = disc.update(terms["real"], terms["fake"], env)
            if loop.due_log():
                loop.log(
                    {
                        "step": loop.step,
                        "loss": f"{float(loss.detach()):.4f}",
                        "mel": f"{float(terms['mel'].detach()):.4f}",
                        "stft": f"{float(terms['stft'].detach()):.4f}",
                        "phase": f"{float(terms['phase'].detach()):.4f}",
                        "gen": f"{gen:.4f}",
                        "feat": f"{feat:.4f}",
                        "disc": f"{d_loss:.4f}",
                        "lr": f"{loop.lr:.3g}",
                        "grad_norm": f"{grad_norm:.3f}",
                        "seconds_per_step": f"{loop.seconds / max(1, loop.step - first_step):.3f}",
                    }
                )
            loop.end_step(float(loss.detach()), mel=f"{float(terms['mel'].detach()):.3f}")
            loop.checkpoint_if_due()
    return os.path.join(out_dir, OUTPUT)
