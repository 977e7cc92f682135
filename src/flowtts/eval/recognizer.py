"""A small differentiable speech recogniser on log-mels: a CTC judge and reward for generated speech.

Shapes: ``b`` batch, ``n`` mel frames, ``d`` mel channels, ``m`` encoder frames (``ceil(n / 2)``),
``v`` output classes (CTC blank at 0, then the alphabet).

The network reads the same log-mel a flow-matching model generates (same front end, no vocoder), so its
CTC loss on a generated mel is differentiable with respect to that mel, and through the sampler with
``sample(cache=False)`` with respect to the model's parameters. Architecture: three 1-D convolutions
(the first with stride 2), each followed by GELU and a per-frame LayerNorm (nothing depends on the
padding of a batch), a bidirectional GRU over packed sequences, and a linear layer to the classes.

A recogniser file is a safetensors file with the weights and JSON metadata: the architecture, the
alphabet and the mel front end it was trained on (:func:`save_recognizer` / :func:`load_recognizer`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from flowtts.config import MelConfig

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
RECOGNIZER_FORMAT = "flowtts-recognizer"
_OUTSIDE = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r" +")


def normalize_text(text: str, alphabet: str = ALPHABET) -> str:
    """What a recogniser writes for ``text``: lower case, characters outside ``alphabet`` as spaces, single spaces.

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    lowered = text.lower()
    if alphabet == ALPHABET:
        lowered = _OUTSIDE.sub(" ", lowered)
    else:
        lowered = "".join(c if c in alphabet else " " for c in lowered)
    return _SPACES.sub(" ", lowered).strip()


@dataclass(frozen=True)
class RecognizerConfig:
    """Architecture of :class:`CTCRecognizer` and the front end it reads."""

    channels: int = 256
    hidden: int = 192
    gru_layers: int = 2
    kernel: int = 5
    dropout: float = 0.1
    alphabet: str = ALPHABET
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self):
        for name in ("channels", "hidden", "gru_layers", "kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet must be non-empty without repeated characters, got {self.alphabet!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RecognizerConfig:
        data = dict(data)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown recognizer config keys: {sorted(unknown)}")
        mel = MelConfig(**data.pop("mel", {}))
        return cls(mel=mel, **data)


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(c_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, c, n) -> (b, c', n')
        x = F.gelu(self.conv(x))
        return self.dropout(self.norm(x.transpose(1, 2))).transpose(1, 2)


class CTCRecognizer(nn.Module):
    """Character CTC recogniser on log-mels ``(b, n, d)``.

    Args:
        config: :class:`RecognizerConfig`.

    Buffers ``mel_mean`` / ``mel_std`` (per channel) normalise the input; training sets them from data.
    """

    def __init__(self, config: RecognizerConfig | None = None):
        super().__init__()
        self.config = config or RecognizerConfig()
        c = self.config
        d = c.mel.n_mel_channels
        self.register_buffer("mel_mean", torch.zeros(d))
        self.register_buffer("mel_std", torch.ones(d))
        self.convs = nn.ModuleList(
            [
                _ConvBlock(d, c.channels, c.kernel, 2, c.dropout),
                _ConvBlock(c.channels, c.channels, c.kernel, 1, c.dropout),
                _ConvBlock(c.channels, c.channels, c.kernel, 1, c.dropout),
            ]
        )
        self.gru = nn.GRU(
            c.channels,
            c.hidden,
            num_layers=c.gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=c.dropout if c.gru_layers > 1 else 0.0,
        )
        self.out = nn.Linear(2 * c.hidden, len(c.alphabet) + 1)
        self.class_ids = {ch: i + 1 for i, ch in enumerate(c.alphabet)}  # blank is 0
        self.metadata: dict = {}

    @property
    def alphabet(self) -> str:
        return self.config.alphabet

    @property
    def n_mels(self) -> int:
        return self.config.mel.n_mel_channels

    @staticmethod
    def output_lengths(lens: torch.Tensor) -> torch.Tensor:
        """Encoder frames for ``lens`` mel frames (the stride-2 convolution halves them, rounding up)."""
        return torch.div(lens + 1, 2, rounding_mode="floor")

    def _check_mel(self, mel: torch.Tensor, lens: torch.Tensor | None) -> torch.Tensor:
        if not torch.is_tensor(mel) or not mel.is_floating_point() or mel.ndim != 3:
            raise ValueError("mel must be a floating tensor of shape (batch, frames, channels)")
        if mel.shape[-1] != self.n_mels:
            raise ValueError(f"mel has {mel.shape[-1]} channels, the recogniser reads {self.n_mels}")
        batch, frames = mel.shape[:2]
        if lens is None:
            return torch.full((batch,), frames, dtype=torch.long)
        if not torch.is_tensor(lens) or lens.dtype.is_floating_point or tuple(lens.shape) != (batch,):
            raise ValueError(f"lens must be an integer tensor of shape ({batch},)")
        lens = lens.detach().cpu().long()
        if (lens < 1).any() or (lens > frames).any():
            raise ValueError(f"lens must lie in 1..{frames}, got {lens.tolist()}")
        return lens

    def forward(self, mel: torch.Tensor, lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``(b, m, v)`` and encoder lengths ``(b,)`` for log-mels ``(b, n, d)``."""
        y, out_lens = self.hidden_states(mel, lens)
        logits = self.out(y)
        return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1), out_lens

    def hidden_states(self, mel: torch.Tensor, lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU's outputs ``(b, m, 2 * hidden)`` (what the output layer reads; zero past each utterance's
        encoder length) and encoder lengths ``(b,)`` for log-mels ``(b, n, d)``: features for other judges."""
        lens = self._check_mel(mel, lens)
        dtype = self.out.weight.dtype
        x = (mel.to(dtype) - self.mel_mean) / self.mel_std
        valid = (torch.arange(mel.shape[1], device=mel.device)[None, :] < lens.to(mel.device)[:, None])[..., None]
        x = torch.where(valid, x, torch.zeros_like(x)).transpose(1, 2)
        out_lens = self.output_lengths(lens)
        # Frames past an utterance's end are zeroed after every block, so that each convolution sees the
        # zero padding it would see on the utterance alone.
        width = (mel.shape[1] + 1) // 2
        inside = torch.arange(width, device=mel.device)[None, :] < out_lens.to(mel.device)[:, None]
        for block in self.convs:
            x = block(x)
            x = x * inside[:, None, :].to(x.dtype)
        x = x.transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(x, out_lens, batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return y, out_lens

    # ------------------------------------------------------------------ text

    def encode(self, text: str) -> list[int]:
        """Class ids of ``text`` after :func:`normalize_text` (blank is 0, so the alphabet starts at 1)."""
        return [self.class_ids[c] for c in normalize_text(text, self.alphabet)]

    def decode(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        """Greedy CTC decoding: best class per frame, repeats merged, blanks dropped."""
        best = log_probs.argmax(dim=-1).cpu()
        texts = []
        for row, n in zip(best.tolist(), lens.tolist()):
            chars, previous = [], 0
            for k in row[:n]:
                if k != previous and k != 0:
                    chars.append(self.alphabet[k - 1])
                previous = k
            texts.append(_SPACES.sub(" ", "".join(chars)).strip())
        return texts

    @torch.no_grad()
    def transcribe(self, mel: torch.Tensor, lens: torch.Tensor | None = None) -> list[str]:
        """Texts heard in log-mels ``(b, n, d)`` (greedy CTC; eval mode for the call, restored after)."""
        training = self.training
        self.eval()
        try:
            log_probs, out_lens = self(mel, lens)
        finally:
            self.train(training)
        return self.decode(log_probs, out_lens)

    def ctc_loss(
        self, mel: torch.Tensor, lens: torch.Tensor | None, texts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-utterance CTC loss per target character, and which utterances could be scored.

        An utterance whose target (after :func:`normalize_text`) is empty, or needs more encoder frames
        than its mel gives (CTC needs one frame per character plus one between repeated characters), is
        not scored: its loss is 0 with no gradient and its flag ``False``; the caller counts and reports
        them. Never NaN or Inf.

        Args:
            mel: Log-mels ``(b, n, d)``.
            lens: Valid frames per utterance (default: all).
            texts: Target texts, one per utterance.

        Returns:
            ``(loss (b,), scored (b,) bool)``.
        """
        if isinstance(texts, str) or len(texts) != mel.shape[0]:
            raise ValueError(f"texts must be a list of {mel.shape[0]} strings, one per utterance")
        log_probs, out_lens = self(mel, lens)
        targets = [self.encode(t) for t in texts]
        needed = torch.tensor([len(t) + sum(a == b for a, b in zip(t, t[1:])) for t in targets])
        lengths = torch.tensor([len(t) for t in targets])
        scored = (lengths > 0) & (needed <= out_lens)
        loss = log_probs.new_zeros(mel.shape[0])
        if not bool(scored.any()):
            return loss, scored
        rows = scored.nonzero().flatten()
        flat = torch.tensor([k for r in rows.tolist() for k in targets[r]], dtype=torch.long)
        per_row = F.ctc_loss(
            log_probs[rows].transpose(0, 1),
            flat,
            out_lens[rows],
            lengths[rows],
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        loss = loss.index_put((rows.to(loss.device),), per_row / lengths[rows].to(per_row))
        return loss, scored

    def check_fits(self, mel_config: MelConfig, what: str = "the model") -> None:
        """``ValueError`` naming both front ends when ``mel_config`` is not the one this recogniser reads."""
        if MelConfig(**asdict(mel_config)) != self.config.mel:
            raise ValueError(
                f"the recogniser reads mels {asdict(self.config.mel)}, but {what} makes {asdict(mel_config)}"
            )


def save_recognizer(
    recognizer: CTCRecognizer, path: str, extra: dict | None = None, dtype: torch.dtype | None = None
) -> None:
    """Write ``recognizer`` as safetensors with its config (and ``extra`` facts) in the metadata.

    ``dtype`` stores the floating tensors in another precision (``torch.float16`` halves the file); they are
    read back as float32.
    """
    from flowtts.utils.tensor_files import write_tensor_file

    metadata = {"format": RECOGNIZER_FORMAT, "config": recognizer.config.to_dict(), **(extra or {})}
    write_tensor_file(path, recognizer.state_dict(), metadata, dtype)


BUILTIN_RECOGNIZER = "recognizer.safetensors"


def load_recognizer(path: str = "builtin", device: torch.device | str = "cpu") -> CTCRecognizer:
    """A recogniser from a file written by :func:`save_recognizer`, or ``"builtin"`` (the built-in voice's).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a flowtts recogniser, or its tensors do not fit its config.
    """
    from flowtts.utils.tensor_files import load_fitting, read_tensor_file

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path or 'builtin', got {type(path).__name__}")
    if path == "builtin":
        from importlib.resources import files

        path = str(files("flowtts").joinpath("assets", BUILTIN_RECOGNIZER))
    if os.path.isfile(path) and not os.fspath(path).endswith(".safetensors"):
        raise ValueError(f"{path} is not a recogniser file: those are .safetensors (flowtts asr train writes one)")
    tensors, metadata = read_tensor_file(path, "recogniser")
    if metadata.get("format") != RECOGNIZER_FORMAT:
        raise ValueError(f"{path} is not a flowtts recogniser (format {metadata.get('format')!r})")
    config = RecognizerConfig.from_dict(json.loads(metadata["config"]))
    recognizer = CTCRecognizer(config)
    load_fitting(recognizer, tensors, path, "recogniser")
    recognizer.metadata = {k: v for k, v in metadata.items() if k not in ("format", "config")}
    return recognizer.to(device).eval()
