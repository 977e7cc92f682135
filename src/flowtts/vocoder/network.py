"""A Vocos-style vocoder: ConvNeXt blocks over log-mel frames predict the STFT, one inverse STFT makes the wave.

Shapes: ``b`` batch, ``d`` mel channels, ``n`` frames, ``f`` STFT bins (``n_fft // 2 + 1``), ``c`` width,
``nw`` samples.

The network works at the mel's own frame rate (no upsampling stack): per frame it predicts a log-magnitude
and a phase for every bin, and :func:`torch.istft` with the mel front end's FFT, hop and window turns them
into ``(n - 1) * hop`` samples, the length the mel came from. With ``magnitude_prior`` the log-magnitude is
a correction to the filterbank's pseudo-inverse applied to the mel (FreeV's prior), so a small network only
has to learn what the filterbank threw away, and the phase.

Every operation is differentiable, so a loss on the wave reaches the mel (and whatever made it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from flowtts.config import MelConfig
from flowtts.model.mel import mel_filterbank

MAX_LOG_MAGNITUDE = 6.0  # exp(6) ~ 400: far above any real STFT bin of a wave in [-1, 1] at n_fft 1024


@dataclass(frozen=True)
class VocoderConfig:
    """A vocoder architecture and the mel front end it reads.

    Attributes:
        mel: The mel front end the vocoder inverts (its FFT, hop and window are the synthesis STFT's).
        dim: Width of the ConvNeXt blocks.
        blocks: Number of ConvNeXt blocks.
        kernel: Depthwise convolution kernel (frames).
        mult: Hidden width of each block's pointwise layers, as a multiple of ``dim``.
        magnitude_prior: Predict the log-magnitude as a correction to the filterbank pseudo-inverse.

    Raises:
        ValueError: A non-positive size, an even kernel, or a mel front end that is not ``"vocos"`` style.
    """

    mel: MelConfig = field(default_factory=MelConfig)
    dim: int = 256
    blocks: int = 8
    kernel: int = 7
    mult: float = 3.0
    magnitude_prior: bool = True

    def __post_init__(self):
        if isinstance(self.mel, dict):
            object.__setattr__(self, "mel", MelConfig(**self.mel))
        for name in ("dim", "blocks", "kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (the frames stay aligned), got {self.kernel}")
        if not self.mult > 0:
            raise ValueError(f"mult must be > 0, got {self.mult}")
        if self.mel.mel_spec_type != "vocos":
            raise ValueError(
                f"the built-in vocoder inverts vocos-style mels (a centred STFT), got mel_spec_type "
                f"{self.mel.mel_spec_type!r}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VocoderConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown vocoder config keys: {sorted(unknown)}")
        return cls(**data)


class ConvNeXtBlock(nn.Module):
    """Depthwise convolution over frames, LayerNorm, pointwise MLP, layer scale, residual: ``(b, n, c)``."""

    def __init__(self, dim: int, hidden: int, kernel: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.full((dim,), 1.0 / 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        h = self.pw2(self.act(self.pw1(self.norm(h))))
        return x + self.scale * h


class MelVocoder(nn.Module):
    """Log-mel ``(b, d, n)`` -> wave ``(b, (n - 1) * hop)`` (see the module docstring).

    Args:
        config: The architecture and mel front end (default: :class:`VocoderConfig`'s).

    Attributes:
        metadata: Facts read from the vocoder's file (what it was trained on), empty for a new one.
    """

    def __init__(self, config: VocoderConfig | None = None):
        super().__init__()
        self.config = config = config or VocoderConfig()
        mel = config.mel
        self.sample_rate = mel.target_sample_rate
        self.n_bins = mel.n_fft // 2 + 1
        self.embed = nn.Conv1d(mel.n_mel_channels, config.dim, config.kernel, padding=config.kernel // 2)
        self.embed_norm = nn.LayerNorm(config.dim, eps=1e-6)
        hidden = max(1, round(config.dim * config.mult))
        self.blocks = nn.ModuleList(ConvNeXtBlock(config.dim, hidden, config.kernel) for _ in range(config.blocks))
        self.out_norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, 2 * self.n_bins)
        fb = mel_filterbank(mel.target_sample_rate, mel.n_fft, mel.n_mel_channels, scale="htk").double()
        self.register_buffer("inverse", torch.linalg.pinv(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(mel.win_length), persistent=False)
        self.metadata: dict = {}

    def check_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``log_mel`` as ``(b, d, n)``; ``ValueError`` naming the expected shape otherwise."""
        if log_mel.ndim == 2:
            log_mel = log_mel[None]
        d = self.config.mel.n_mel_channels
        if log_mel.ndim != 3 or log_mel.shape[1] != d or log_mel.shape[2] < 2:
            raise ValueError(f"log_mel must have shape (batch, {d}, frames >= 2), got {tuple(log_mel.shape)}")
        return log_mel

    def prior(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The filterbank pseudo-inverse's log-magnitude ``(b, f, n)`` of ``log_mel`` ``(b, d, n)``."""
        linear = self.inverse.to(log_mel.dtype) @ log_mel.exp()
        return linear.clamp(min=1e-5).log()

    def spectrum(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted log-magnitude and phase, both ``(b, f, n)``, of ``log_mel`` ``(b, d, n)``."""
        x = self.embed_norm(self.embed(log_mel).transpose(1, 2))
        for block in self.blocks:
            x = block(x)
        out = self.head(self.out_norm(x)).transpose(1, 2)
        log_mag, phase = out.split(self.n_bins, dim=1)
        if self.config.magnitude_prior:
            log_mag = log_mag + self.prior(log_mel)
        return log_mag.clamp(max=MAX_LOG_MAGNITUDE), phase

    def synthesize(self, log_mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The wave ``(b, (n - 1) * hop)`` of a spectrum given as log-magnitude and phase ``(b, f, n)``."""
        mel = self.config.mel
        mag = log_mag.exp()
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        frames = spec.shape[-1]
        window = self.window.to(device=spec.device, dtype=mag.dtype)
        return torch.istft(
            spec,
            mel.n_fft,
            hop_length=mel.hop_length,
            win_length=mel.win_length,
            window=window,
            center=True,
            length=(frames - 1) * mel.hop_length,
        )

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        log_mel = self.check_mel(log_mel)
        return self.synthesize(*self.spectrum(log_mel.to(self.head.weight.dtype)))  # the weights' precision
