"""Rewards on what the listener hears: a generated mel rendered to a wave by a differentiable vocoder.

Shapes: ``b`` batch, ``n`` frames, ``d`` mel channels, ``nw`` samples.

``flowtts reward --on wave`` scores waves instead of mels: each utterance's generated mel ``(n, d)`` (cut at
its duration, so it is vocoded as if alone) goes through a frozen vocoder (log-mel ``(1, d, n)`` -> wave
``(1, nw)``; the built-in :class:`flowtts.vocoder.network.MelVocoder` or Griffin-Lim with a fixed iteration
count, both differentiable) and a wave reward ``r(rendered, prompts) -> (b,)`` reads the
:class:`Rendered` batch. Gradients flow from the wave through the vocoder into the mel, and from there
through the sampler into the model (:mod:`flowtts.train.reward`).

Built-in wave rewards (:data:`WAVE_REWARDS`):

* ``wave-stft``: minus a multi-resolution STFT distance (spectral convergence plus log-magnitude L1,
  averaged over three resolutions) between the generated part of the wave and the same samples of the
  prompt's recording, rendered by the same vocoder from the dataset's mel of that recording.
* ``loudness`` / ``loudness:DB``: minus the squared distance of the generated part's RMS level in dBFS to
  ``DB`` (default :data:`DEFAULT_LOUDNESS_DB`).
* ``speaker``: the cosine between resemblyzer's speaker embeddings of the generated part and of the
  prompt's part of the same wave; the encoder's 40-band power mels are computed from the wave itself
  (resampled to 16 kHz, levelled to -30 dBFS), every step differentiable.

:class:`Judges` scores samples with fixed judges no reward trains against (pocketsphinx WER, resemblyzer
SIM, DNSMOS), as a guard against reward hacking in a run's report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

DEFAULT_LOUDNESS_DB = -20.0
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop); window = n_fft
GRIFFIN_LIM_ITERATIONS = 16  # fixed: the unrolled iterations are part of the graph


def load_vocoder(choice: str, model) -> nn.Module:
    """The frozen vocoder ``choice`` names, for ``model``'s mels, on its device.

    Args:
        choice: As :func:`flowtts.audio.vocoders.choose_vocoder` takes it (``"auto"``, ``"builtin"``,
            ``"griffin-lim"`` or a vocoder file); Griffin-Lim runs :data:`GRIFFIN_LIM_ITERATIONS` iterations,
            every one of them in the graph.
        model: The model whose samples it renders.

    Raises:
        ValueError: A vocoder made for another mel front end (naming both), or a bad choice.
        FileNotFoundError: No such vocoder file.
    """
    from flowtts.audio.vocoders import GriffinLim, choose_vocoder

    vocoder = choose_vocoder(model, choice, name="--vocoder")
    if isinstance(vocoder, GriffinLim):
        vocoder = GriffinLim(model.mel_spec, n_iter=GRIFFIN_LIM_ITERATIONS).requires_grad_(False).eval()
    return vocoder.to(model.device)


@dataclass
class Rendered:
    """A batch of generated mels rendered to waves.

    Attributes:
        waves: One wave ``(nw,)`` per utterance, prompt included (``(duration - 1) * hop`` samples).
        starts: First sample of each utterance's generated part (``prompt frames * hop``).
        sample_rate: Of the waves.
        prompts: The prompts the mels were generated for.
        render: Mel ``(n, d)`` -> wave ``(nw,)``, the vocoder the waves came from.
    """

    waves: list[torch.Tensor]
    starts: list[int]
    sample_rate: int
    prompts: object
    render: Callable[[torch.Tensor], torch.Tensor]
    _recordings: list[torch.Tensor] | None = field(default=None, repr=False)

    def generated(self, i: int) -> torch.Tensor:
        """The generated part of utterance ``i``'s wave."""
        return self.waves[i][self.starts[i] :]

    def prompt(self, i: int) -> torch.Tensor:
        """The prompt's part of utterance ``i``'s wave."""
        return self.waves[i][: self.starts[i]]

    def recordings(self) -> list[torch.Tensor]:
        """The prompts' own utterances (their dataset mels) rendered by the same vocoder, without gradient.

        Raises:
            ValueError: The prompts carry no data mels.
        """
        if self._recordings is None:
            data = getattr(self.prompts, "data", None)
            if data is None:
                raise ValueError("this wave reward compares with the recordings; these prompts carry none")
            with torch.no_grad():
                durations = self.prompts.durations.tolist()
                self._recordings = [self.render(data[i, :n].to(self.waves[i])) for i, n in enumerate(durations)]
        return self._recordings


def render(vocoder: nn.Module, mel: torch.Tensor, prompts) -> Rendered:
    """Each utterance of ``mel`` ``(b, n, d)`` cut at its duration and vocoded as if alone."""
    hop = _hop_length(vocoder)

    def one(frames: torch.Tensor) -> torch.Tensor:
        return vocoder(frames.transpose(0, 1)[None])[0]

    durations, lens = prompts.durations.tolist(), prompts.lens.tolist()
    waves = [one(mel[i, :n]) for i, n in enumerate(durations)]
    return Rendered(waves, [k * hop for k in lens], int(vocoder.sample_rate), prompts, one)


def _hop_length(vocoder: nn.Module) -> int:
    """Samples per frame of the mels ``vocoder`` reads."""
    from flowtts.audio.vocoders import GriffinLim

    if isinstance(vocoder, GriffinLim):
        return int(vocoder.mel_spec.hop_length)
    return int(vocoder.config.mel.hop_length)


class WaveReward:
    """A reward ``(mel, prompts) -> (b,)`` that scores the rendered waves with ``reward(rendered, prompts)``.

    Args:
        vocoder: A frozen vocoder (:func:`load_vocoder`).
        reward: A wave reward ``(Rendered, prompts) -> (b,)``.
    """

    def __init__(self, vocoder: nn.Module, reward: Callable):
        self.vocoder = vocoder
        self.reward = reward

    def __call__(self, mel: torch.Tensor, prompts) -> torch.Tensor:
        return self.reward(render(self.vocoder, mel, prompts), prompts)


# ---------------------------------------------------------------------------- wave rewards


def _magnitude(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """STFT magnitude ``(f, frames)`` with a floor inside the root (finite gradients at silence)."""
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop_length=hop, window=window, center=True, pad_mode="constant", return_complex=True)
    return (spec.real**2 + spec.imag**2 + 1e-9).sqrt()


def stft_distance(a: torch.Tensor, b: torch.Tensor, resolutions=STFT_RESOLUTIONS) -> torch.Tensor:
    """Multi-resolution STFT distance of two waves ``(nw,)``: per resolution, spectral convergence
    ``||B - A||_F / ||B||_F`` plus the mean absolute log-magnitude difference, averaged over resolutions."""
    total = a.new_zeros(())
    for n_fft, hop in resolutions:
        mag_a, mag_b = _magnitude(a, n_fft, hop), _magnitude(b, n_fft, hop)
        convergence = (mag_b - mag_a).norm() / mag_b.norm()
        total = total + convergence + (mag_b.log() - mag_a.log()).abs().mean()
    return total / len(resolutions)


def wave_stft_reward(rendered: Rendered, prompts) -> torch.Tensor:
    """Minus the multi-resolution STFT distance of each generated part to the same samples of its recording."""
    recordings = rendered.recordings()
    out = []
    for i, recording in enumerate(recordings):
        generated = rendered.generated(i)
        out.append(-stft_distance(generated, recording[rendered.starts[i] :].to(generated)))
    return torch.stack(out)


def level_db(wave: torch.Tensor) -> torch.Tensor:
    """RMS level of ``wave`` ``(nw,)`` in dB relative to full scale (``10 log10 mean(w^2)``)."""
    return 10 * torch.log10(wave.pow(2).mean() + 1e-10)


@dataclass(frozen=True)
class LoudnessReward:
    """Minus the squared distance (dB^2) of each generated part's RMS level to ``target_db`` dBFS."""

    target_db: float = DEFAULT_LOUDNESS_DB

    def __call__(self, rendered: Rendered, prompts) -> torch.Tensor:
        levels = [level_db(rendered.generated(i)) for i in range(len(rendered.waves))]
        return -((torch.stack(levels) - self.target_db) ** 2)


class WaveSpeakerReward(nn.Module):
    """Cosine of resemblyzer's speaker embeddings of each wave's generated part and its prompt's part.

    The encoder's features are computed from the wave as resemblyzer computes them from audio: 16 kHz,
    levelled to -30 dBFS (always; resemblyzer only raises quiet audio), a 25 ms / 10 ms power STFT pooled by
    40 Slaney mel filters. Its voice-activity trimming is left out (not differentiable).

    Args:
        encoder: A :class:`flowtts.eval.speaker.SpeakerEncoder` (default: resemblyzer's weights).
    """

    def __init__(self, encoder=None):
        super().__init__()
        from flowtts.eval.speaker import ENCODER_BANDS, ENCODER_FFT, ENCODER_RATE, SpeakerEncoder
        from flowtts.model.mel import mel_filterbank

        self.encoder = encoder if encoder is not None else SpeakerEncoder.from_file()
        self.encoder.eval().requires_grad_(False)
        self.register_buffer("filters", mel_filterbank(ENCODER_RATE, ENCODER_FFT, ENCODER_BANDS, scale="slaney"))
        self.register_buffer("window", torch.hann_window(ENCODER_FFT))
        self.rate, self.n_fft = ENCODER_RATE, ENCODER_FFT

    def features(self, wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """The encoder's power-mel frames ``(n', 40)`` of ``wave`` ``(nw,)`` at ``sample_rate``."""
        from flowtts.audio.resample import resample

        wave = wave.to(self.filters.dtype)
        if sample_rate != self.rate:
            wave = resample(wave, sample_rate, self.rate)
        wave = wave * (10 ** (-30 / 20) / (wave.pow(2).mean() + 1e-12).sqrt())
        spec = torch.stft(
            wave,
            self.n_fft,
            hop_length=self.rate // 100,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return (self.filters @ (spec.real**2 + spec.imag**2)).transpose(0, 1)

    def embed(self, wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Unit speaker embedding ``(256,)`` of ``wave``."""
        return self.encoder(self.features(wave, sample_rate))

    def forward(self, rendered: Rendered, prompts) -> torch.Tensor:
        out = []
        for i in range(len(rendered.waves)):
            reference = self.embed(rendered.prompt(i), rendered.sample_rate)
            out.append((reference * self.embed(rendered.generated(i), rendered.sample_rate)).sum())
        return torch.stack(out)


def _loudness(spec: str):
    _, _, value = spec.partition(":")
    if not value:
        return LoudnessReward()
    try:
        target = float(value)
    except ValueError:
        target = float("nan")
    # level_db reads -100 dBFS for silence and at most 0 for a wave in [-1, 1]: a target outside is never reached
    if not -100 <= target <= 0:
        raise ValueError(
            f"reward {spec!r}: the loudness target must be a number of dBFS in -100..0 (e.g. loudness:-20)"
        )
    return LoudnessReward(target)


# Built-in wave rewards: each entry builds the reward from its spec (``"loudness:-23"`` -> loudness at -23 dBFS).
WAVE_REWARDS: dict[str, Callable[[str], Callable]] = {
    "wave-stft": lambda spec: wave_stft_reward,
    "loudness": _loudness,
    "speaker": lambda spec: WaveSpeakerReward(),
}


def wave_reward_name(spec) -> str | None:
    """The :data:`WAVE_REWARDS` entry ``spec`` names (``"loudness:-23"`` -> ``"loudness"``), else ``None``."""
    if not isinstance(spec, str):
        return None
    name = spec.partition(":")[0] if spec.startswith("loudness:") else spec
    return name if name in WAVE_REWARDS else None


def wave_reward(spec: str, model, vocoder: str) -> WaveReward:
    """The built-in wave reward ``spec`` rendered by ``vocoder`` (:func:`load_vocoder`) for ``model``."""
    name = wave_reward_name(spec)
    if name is None:
        raise ValueError(f"--on wave: reward must be one of {tuple(WAVE_REWARDS)} or 'module:function', got {spec!r}")
    reward = WAVE_REWARDS[name](spec)
    if isinstance(reward, nn.Module):
        reward = reward.to(model.device)
    return WaveReward(load_vocoder(vocoder, model), reward)


# ---------------------------------------------------------------------------- fixed judges


class Judges:
    """Fixed judges of samples that no reward trains against: a guard against reward hacking.

    ``WER``: pocketsphinx's transcript of the wave (the generated part against the target text when the
    prompts know it, else the whole utterance against its text); ``SIM``: resemblyzer's speaker cosine of
    the generated frames to the prompt's (:class:`flowtts.eval.speaker.SpeakerSimilarity`; none for
    unprompted prompts); ``OVRL``: DNSMOS's overall-quality prediction of the generated part. A judge that is
    not installed, or cannot score a sample, reports ``None`` (printed ``n/a``).

    Args:
        model: The model whose samples are judged (its mel front end).
        vocoder: A vocoder module for the waves (:func:`load_vocoder`).
    """

    COLUMNS = ("WER", "SIM", "OVRL")

    def __init__(self, model, vocoder: nn.Module):
        from flowtts.eval.dnsmos import dnsmos_available
        from flowtts.eval.report import speaker_similarity_or_none

        self.vocoder = vocoder
        try:
            from flowtts.audio.transcribe import PocketSphinx

            self.asr = PocketSphinx()
        except ImportError:
            self.asr = None
        similarity = speaker_similarity_or_none(model.mel_spec)
        self.similarity = similarity.to(model.device) if similarity is not None else None
        self.dnsmos = dnsmos_available()

    @torch.no_grad()
    def __call__(self, mel: torch.Tensor, prompts) -> dict[str, float | None]:
        from flowtts.eval.wer import word_error_rate

        rendered = render(self.vocoder, mel.float(), prompts)
        scores: dict[str, float | None] = dict.fromkeys(self.COLUMNS)
        if self.asr is not None:
            targets = prompts.targets
            heard = [
                self.asr((rendered.generated(i) if targets else rendered.waves[i]).cpu(), rendered.sample_rate)
                for i in range(len(rendered.waves))
            ]
            scores["WER"] = word_error_rate(targets or prompts.texts, heard)
        if self.similarity is not None and prompts.kind != "unprompted":
            scores["SIM"] = float(self.similarity(mel.float(), prompts).mean())
        if self.dnsmos:
            from flowtts.eval.dnsmos import dnsmos

            try:
                values = [dnsmos(rendered.generated(i).cpu(), rendered.sample_rate).ovrl for i in range(len(mel))]
                scores["OVRL"] = sum(values) / len(values)
            except ValueError:  # a silent or non-finite sample
                scores["OVRL"] = None
        return scores


def format_score(value: float | None) -> str:
    """A judge's score as printed (``n/a`` without one)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
