"""A learned reward: a scalar score of a generated log-mel, fitted to preference pairs (Bradley-Terry).

Shapes: ``b`` batch, ``n`` mel frames, ``d`` mel channels, ``m`` feature frames, ``c`` feature channels,
``f`` pooled features.

A :class:`PreferenceModel` reads fixed features of the mel and puts a small trained head on them:

- ``"recognizer"``: the hidden states ``(b, m, c)`` of a frozen CTC recogniser
  (:meth:`flowtts.eval.recognizer.CTCRecognizer.hidden_states`), their mean and standard deviation over
  the valid frames;
- ``"stats"``: the mel's per-channel mean and standard deviation over the valid frames;
- ``"recognizer+stats"`` (the default): both, concatenated.

The head standardises the pooled features with the training set's mean and spread (buffers), then
LayerNorm, a linear layer, GELU and a linear layer to one number. Everything is differentiable with
respect to the mel, so the score can serve as a reward for fine-tuning.

A preference-model file is safetensors: the head's tensors and JSON/string metadata (format
``"flowtts-preference"``, the features, the mel front end, the head's size, and what the model was trained
on). The frozen feature network is not stored: the file names it (``feature_source``, e.g.
``"recognizer:builtin"``) with a fingerprint of its weights, and :func:`load_preference_model` loads it
again and checks the fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict

import torch
from torch import nn

from flowtts.config import MelConfig

PREFERENCE_FORMAT = "flowtts-preference"
FEATURES = ("recognizer+stats", "recognizer", "stats")
RECOGNIZER_PREFIX = "recognizer:"
# Keys written from the model itself on save; whatever a caller's metadata says about them is replaced.
_STRUCTURE_KEYS = ("format", "features", "feature_source", "feature_fingerprint", "mel", "head")
_EPS = 1e-5


def check_features(features: str) -> str:
    """``features`` if it names a known feature set, else ``ValueError`` listing them."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    return features


def valid_mask(lens: torch.Tensor, frames: int, device: torch.device) -> torch.Tensor:
    """``(b, n)`` bool: which of ``frames`` frames lie within each utterance's ``lens``."""
    return torch.arange(frames, device=device)[None, :] < lens.to(device)[:, None]


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean and standard deviation over the frames in ``mask``: ``(b, n, c), (b, n) -> (b, 2c)``.

    The standard deviation is ``sqrt(var + 1e-5)``, so it stays differentiable for constant frames.
    """
    weights = mask[..., None].to(x.dtype)
    count = weights.sum(dim=1).clamp(min=1.0)
    mean = (x * weights).sum(dim=1) / count
    var = ((x - mean[:, None]) ** 2 * weights).sum(dim=1) / count
    return torch.cat([mean, (var + _EPS).sqrt()], dim=-1)


def fingerprint(module: nn.Module) -> str:
    """A short hash of ``module``'s parameters and buffers (names, shapes and float32 values)."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class RecognizerFeatures(nn.Module):
    """Frame features from a frozen CTC recogniser: its hidden states (always in eval mode, no trained weights).

    Args:
        recognizer: A :class:`flowtts.eval.recognizer.CTCRecognizer`.
        source: How to load it again: ``"recognizer:builtin"`` or ``"recognizer:PATH"``.
    """

    def __init__(self, recognizer: nn.Module, source: str):
        super().__init__()
        if not isinstance(source, str) or not source.startswith(RECOGNIZER_PREFIX):
            raise ValueError(f"source must read 'recognizer:builtin' or 'recognizer:PATH', got {source!r}")
        self.recognizer = recognizer.eval().requires_grad_(False)
        self.source = source

    @property
    def dim(self) -> int:
        """Channels ``c`` of a feature frame."""
        return 2 * self.recognizer.config.hidden

    @property
    def mel(self) -> MelConfig:
        """The mel front end the recogniser reads."""
        return self.recognizer.config.mel

    def train(self, mode: bool = True) -> RecognizerFeatures:
        """Stays in eval mode (no dropout): the features are fixed whatever mode the owner is in."""
        super().train(False)
        return self

    def forward(self, mel: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states ``(b, m, c)`` and their valid lengths ``(b,)`` for log-mels ``(b, n, d)``."""
        # cuDNN's GRU has no backward in eval mode; the native kernel does (gradients w.r.t. the mel).
        native = mel.is_cuda and mel.requires_grad and torch.is_grad_enabled()
        with torch.backends.cudnn.flags(enabled=False) if native else contextlib.nullcontext():
            return self.recognizer.hidden_states(mel, lens)


def load_feature_net(source: str, device: torch.device | str = "cpu") -> RecognizerFeatures:
    """The frozen feature network named by ``source`` (``"recognizer:builtin"`` or ``"recognizer:PATH"``).

    Raises:
        ValueError: ``source`` names no known kind of feature network, or the file is not a recogniser.
        FileNotFoundError: No such recogniser file.
    """
    from flowtts.eval.recognizer import load_recognizer

    if not isinstance(source, str) or not source.startswith(RECOGNIZER_PREFIX):
        raise ValueError(f"feature source must read 'recognizer:builtin' or 'recognizer:PATH', got {source!r}")
    return RecognizerFeatures(load_recognizer(source[len(RECOGNIZER_PREFIX) :], device), source)


class PreferenceModel(nn.Module):
    """A scalar score of a log-mel, higher for what the preference pairs preferred.

    Args:
        feature_net: The frozen frame-feature network (a module ``(mel (b, n, d), lens (b,)) -> (frames
            (b, m, c), frame lens (b,))`` with attributes ``dim`` (``c``), ``mel`` (its
            :class:`~flowtts.config.MelConfig`) and ``source`` (how to load it again), e.g.
            :class:`RecognizerFeatures`); ``None`` for ``features="stats"``.
        mel: The mel front end scored (default: the feature network's, else F5-TTS's).
        features: One of :data:`FEATURES`.
        hidden: Width of the head's hidden layer.
        metadata: String facts about the model (what it was trained on), kept in :attr:`metadata`.

    Raises:
        ValueError: Unknown ``features``, a feature network missing or superfluous for them, a
            ``hidden`` below 1, or a feature network that reads another mel front end.
    """

    def __init__(
        self,
        feature_net: nn.Module | None,
        mel: MelConfig | None = None,
        *,
        features: str = "recognizer+stats",
        hidden: int = 32,
        metadata: dict | None = None,
    ):
        super().__init__()
        check_features(features)
        uses_net = features != "stats"
        if uses_net and feature_net is None:
            raise ValueError(f"features={features!r} need a feature network (load_feature_net('recognizer:builtin'))")
        if not uses_net and feature_net is not None:
            raise ValueError("features='stats' read the mel alone: pass feature_net=None")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {hidden!r}")
        if mel is None:
            mel = feature_net.mel if feature_net is not None else MelConfig()
        self.mel = MelConfig(**asdict(mel))
        if feature_net is not None and MelConfig(**asdict(feature_net.mel)) != self.mel:
            raise ValueError(
                f"the feature network {feature_net.source} reads mels {asdict(feature_net.mel)}, but the preference "
                f"model is for {asdict(self.mel)}"
            )
        self.features = features
        self.feature_net = feature_net
        self.hidden = hidden
        in_dim = (2 * feature_net.dim if uses_net else 0) + (2 * self.mel.n_mel_channels if "stats" in features else 0)
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.head = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
        self.metadata.update(self._structure())

    @property
    def in_dim(self) -> int:
        """Number ``f`` of pooled features the head reads."""
        return self.feature_mean.shape[0]

    @property
    def feature_source(self) -> str:
        """How the frozen feature network is loaded again (``"none"`` for ``features="stats"``)."""
        return self.feature_net.source if self.feature_net is not None else "none"

    def _structure(self) -> dict[str, str]:
        return {
            "features": self.features,
            "feature_source": self.feature_source,
            "feature_fingerprint": fingerprint(self.feature_net) if self.feature_net is not None else "none",
            "mel": json.dumps(asdict(self.mel)),
            "head": json.dumps({"in": self.in_dim, "hidden": self.hidden}),
        }

    def _check_input(self, mel: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(mel) or not mel.is_floating_point() or mel.ndim != 3:
            raise ValueError("mel must be a floating tensor of shape (batch, frames, channels)")
        if mel.shape[-1] != self.mel.n_mel_channels:
            raise ValueError(f"mel has {mel.shape[-1]} channels, the preference model reads {self.mel.n_mel_channels}")
        batch, frames = mel.shape[:2]
        if not torch.is_tensor(lens) or lens.dtype.is_floating_point or tuple(lens.shape) != (batch,):
            raise ValueError(f"lens must be an integer tensor of shape ({batch},)")
        lens = lens.detach().cpu().long()
        if (lens < 1).any() or (lens > frames).any():
            raise ValueError(f"lens must lie in 1..{frames}, got {lens.tolist()}")
        return lens

    def pooled_features(self, mel: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """The features ``(b, f)`` the head reads, before standardisation (fixed: no trained weights).

        Args:
            mel: Log-mels ``(b, n, d)``.
            lens: Valid frames per utterance ``(b,)`` (frames past them do not count).
        """
        lens = self._check_input(mel, lens)
        dtype = self.feature_mean.dtype
        parts = []
        if self.feature_net is not None:
            frames, frame_lens = self.feature_net(mel, lens)
            frames = frames.to(dtype)
            parts.append(masked_mean_std(frames, valid_mask(frame_lens, frames.shape[1], frames.device)))
        if "stats" in self.features:
            x = mel.to(dtype)
            parts.append(masked_mean_std(x, valid_mask(lens, x.shape[1], x.device)))
        return torch.cat([p.to(mel.device) for p in parts], dim=-1)

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``(b,)`` of pooled features ``(b, f)`` from :meth:`pooled_features` (the trained part)."""
        x = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        return self.head(x).squeeze(-1)

    def score(self, mel: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Scores ``(b,)`` of log-mels ``(b, n, d)`` with valid lengths ``(b,)``; differentiable w.r.t. ``mel``.

        Pass only the frames to be judged (a generation without its prompt's frames).
        """
        return self.score_features(self.pooled_features(mel, lens))

    def forward(self, mel: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`score`."""
        return self.score(mel, lens)

    def check_fits(self, mel_config: MelConfig, what: str = "the model") -> None:
        """``ValueError`` naming both front ends when ``mel_config`` is not the one this model scores."""
        if MelConfig(**asdict(mel_config)) != self.mel:
            raise ValueError(
                f"the preference model reads mels {asdict(self.mel)}, but {what} makes {asdict(mel_config)}"
            )


def save_preference_model(model: PreferenceModel, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write ``model``'s head and metadata (plus ``extra`` facts) as a safetensors file.

    The frozen feature network is not written, only its source and fingerprint.

    Raises:
        ValueError: ``path`` does not end in ``.safetensors``.
    """
    from flowtts.utils.tensor_files import write_tensor_file

    if not os.fspath(path).endswith(".safetensors"):
        raise ValueError(f"a preference model is written as .safetensors, got {os.fspath(path)!r}")
    metadata = {**model.metadata, **(extra or {}), **model._structure(), "format": PREFERENCE_FORMAT}
    head = {name: value.float() for name, value in model.state_dict().items() if not name.startswith("feature_net.")}
    write_tensor_file(path, head, metadata)


def load_preference_model(
    path: str | os.PathLike, device: torch.device | str = "cpu", *, feature_source: str | None = None
) -> PreferenceModel:
    """A preference model from a file written by :func:`save_preference_model`, in eval mode on ``device``.

    Args:
        path: The ``.safetensors`` file.
        device: Where the model goes.
        feature_source: Load the feature network from here instead of the recorded source (e.g.
            ``"recognizer:PATH"`` for a recogniser file that moved); its weights must be the recorded ones.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a flowtts preference model, its tensors do not fit its metadata, or the
            feature network is not the one it was trained with.
    """
    from flowtts.utils.tensor_files import read_tensor_file

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isfile(path) and not path.endswith(".safetensors"):
        raise ValueError(f"{path} is not a preference model file: those are .safetensors (flowtts prefs train)")
    tensors, metadata = read_tensor_file(path, "preference model")
    if metadata.get("format") != PREFERENCE_FORMAT:
        raise ValueError(
            f"{path} is not a flowtts preference model (format {metadata.get('format')!r}; flowtts prefs train "
            "writes one)"
        )
    try:
        features = check_features(metadata["features"])
        mel = MelConfig(**json.loads(metadata["mel"]))
        hidden = json.loads(metadata["head"])["hidden"]
        recorded_source, recorded_print = metadata["feature_source"], metadata["feature_fingerprint"]
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: incomplete preference model metadata ({error!r})") from None
    feature_net = None
    if features != "stats":
        feature_net = load_feature_net(feature_source or recorded_source, device)
        if fingerprint(feature_net) != recorded_print:
            raise ValueError(
                f"{path} was trained on the features of {recorded_source} (fingerprint {recorded_print}), but "
                f"{feature_net.source} has other weights (fingerprint {fingerprint(feature_net)})"
            )
    facts = {k: v for k, v in metadata.items() if k not in _STRUCTURE_KEYS}
    model = PreferenceModel(feature_net, mel, features=features, hidden=hidden, metadata=facts)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("feature_net.")}
    wrong = sorted(k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape)
    if wrong or set(tensors) - set(expected):
        raise ValueError(f"{path}: tensors do not fit its preference model metadata (mismatched: {wrong[:5]})")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    if feature_net is not None and feature_source is not None:
        model.metadata["feature_source"] = recorded_source  # the file's record, not where it was found this time
    return model.to(device).eval()
