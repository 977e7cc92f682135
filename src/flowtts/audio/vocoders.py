"""Vocoders turning log-mels ``(b, d, n)`` into waves ``(b, nw)``, and :func:`choose_vocoder`, which picks one.

* The built-in neural vocoder (:class:`flowtts.vocoder.network.MelVocoder`, ``assets/vocoder.safetensors``)
  was trained on the built-in voice: the default for the models that record they speak it.
* :class:`GriffinLim` needs no weights: it inverts the mel filterbank (non-negative least squares) and
  recovers a phase with fast Griffin-Lim. Works for any voice and front end; sounds robotic.
* :class:`VocosVocoder` wraps the ``vocos`` package (``pip install 'flowtts[vocos]'``) with weights the
  user has on disk; nothing is downloaded.

Every one is differentiable (a loss on the wave reaches the mel); inference callers run them under
``torch.no_grad()``, and :func:`choose_vocoder` hands out modules whose weights need no gradient.
"""

from __future__ import annotations

import logging
import math
import os
from types import SimpleNamespace

import torch
from torch import nn

from flowtts.model.mel import MelSpec

log = logging.getLogger("flowtts")
VOCODER_CHOICES = ("auto", "builtin", "griffin-lim")  # or a path to a flowtts vocoder .safetensors file


class GriffinLim(nn.Module):
    """Log-mel -> wave for a given :class:`MelSpec` front end.

    Args:
        mel_spec: The front end the mels came from (its filterbank, FFT and hop are inverted).
        n_iter: Griffin-Lim iterations.
        momentum: Fast Griffin-Lim momentum (0 gives the classic algorithm).
        nnls_iter: Multiplicative-update iterations of the non-negative filterbank inversion.
        seed: Seed of the initial random phase (fixed, so the output is deterministic).
    """

    def __init__(self, mel_spec: MelSpec, n_iter: int = 48, momentum: float = 0.99, nnls_iter: int = 30, seed=0):
        super().__init__()
        self.mel_spec = mel_spec
        self.n_iter = n_iter
        self.momentum = momentum
        self.nnls_iter = nnls_iter
        self.seed = seed
        self.sample_rate = mel_spec.target_sample_rate

    def magnitudes(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Non-negative linear magnitudes ``(b, n_fft/2+1, n)`` whose mel projection fits ``exp(log_mel)``
        (in float64 for a float64 mel, else float32)."""
        dtype = _working_dtype(log_mel)
        fb = self.mel_spec.filterbank.to(device=log_mel.device, dtype=dtype)
        mel = log_mel.to(dtype).exp()
        mag = (torch.linalg.pinv(fb) @ mel).clamp(min=1e-6)
        fb_t_mel = fb.t() @ mel
        gram = fb.t() @ fb
        for _ in range(self.nnls_iter):
            mag = mag * fb_t_mel / (gram @ mag + 1e-9)
        return mag

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The wave ``(b, (n - 1) * hop)`` of ``log_mel`` ``(b, d, n)`` (or ``(d, n)``); differentiable, with a
        fixed number of iterations and a fixed initial phase."""
        if log_mel.ndim == 2:
            log_mel = log_mel[None]
        spec = self.mel_spec
        mag = self.magnitudes(log_mel)
        window = torch.hann_window(spec.win_length, device=mag.device, dtype=mag.dtype)
        frames = mag.shape[-1]
        length = (frames - 1) * spec.hop_length
        stft = dict(n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length, window=window)
        g = torch.Generator().manual_seed(self.seed)
        phase = torch.rand(mag.shape, generator=g).to(device=mag.device, dtype=mag.dtype) * 2 * math.pi
        angles = torch.polar(torch.ones_like(mag), phase)
        previous = torch.zeros_like(angles)
        for _ in range(self.n_iter):
            wave = torch.istft(mag * angles, length=length, **stft)
            rebuilt = torch.stft(wave, return_complex=True, **stft)
            accelerated = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            previous = rebuilt
            angles = accelerated / accelerated.abs().clamp(min=1e-8)
        return torch.istft(mag * angles, length=length, **stft)


class VocosVocoder(nn.Module):
    """Vocos (24 kHz, 100-band vocos mels) from a local directory with ``config.yaml`` and weights.

    Args:
        path: Directory holding ``config.yaml`` and ``pytorch_model.bin`` (or ``model.safetensors``).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Vocos directory not found: {path}")
        config = os.path.join(path, "config.yaml")
        if not os.path.isfile(config):
            raise FileNotFoundError(f"{path}: no config.yaml (expected a local Vocos model directory)")
        weights = [os.path.join(path, n) for n in ("model.safetensors", "pytorch_model.bin")]
        weights = [w for w in weights if os.path.isfile(w)]
        if not weights:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
        try:
            from vocos import Vocos
        except ImportError as exc:
            raise ImportError("the Vocos vocoder needs the vocos extra: pip install 'flowtts[vocos]'") from exc
        if weights[0].endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights[0])
        else:
            state = torch.load(weights[0], map_location="cpu", weights_only=True)
        self.vocos = Vocos.from_hparams(config)
        self.vocos.load_state_dict(state)
        self.vocos.eval()
        self.sample_rate = 24_000

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.vocos.decode(log_mel.float())


def _working_dtype(log_mel: torch.Tensor) -> torch.dtype:
    """float64 for a float64 mel (exact gradient checks), float32 otherwise."""
    return torch.float64 if log_mel.dtype == torch.float64 else torch.float32


def _is_file_choice(choice) -> bool:
    """Whether a vocoder choice names a file (anything but the named choices that looks like a path)."""
    if isinstance(choice, os.PathLike):
        return True
    return isinstance(choice, str) and (choice.endswith(".safetensors") or os.path.isfile(choice))


def check_vocoder_choice(choice, name: str = "vocoder") -> None:
    """Refuse a vocoder choice before anything is loaded.

    Args:
        choice: One of :data:`VOCODER_CHOICES` or the path of a flowtts vocoder ``.safetensors`` file.
        name: What the choice is called in messages (the command line passes ``"--vocoder"``).

    Raises:
        ValueError: Not a choice nor a file path, naming ``name`` and the choices.
        FileNotFoundError: A ``.safetensors`` path that does not exist.
    """
    if isinstance(choice, str) and choice in VOCODER_CHOICES:
        return
    if _is_file_choice(choice):
        path = os.fspath(choice)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: vocoder file not found: {path}")
        return
    raise ValueError(
        f"{name} must be one of {', '.join(VOCODER_CHOICES)} or a flowtts vocoder .safetensors file, got {choice!r}"
    )


def _front_end(model_or_mel) -> tuple[MelSpec, dict]:
    """The :class:`MelSpec` of a model, a :class:`MelSpec` or a :class:`flowtts.config.MelConfig`, and the
    model file's metadata (empty for a front end alone)."""
    import dataclasses

    from flowtts.config import MelConfig

    if isinstance(model_or_mel, MelSpec):
        return model_or_mel, {}
    if isinstance(model_or_mel, MelConfig):
        return MelSpec(**dataclasses.asdict(model_or_mel)), {}
    spec = getattr(model_or_mel, "mel_spec", None)
    if not isinstance(spec, MelSpec):
        what = type(model_or_mel).__name__
        raise TypeError(f"choose_vocoder needs a model (with a mel_spec), a MelSpec or a MelConfig, got {what}")
    return spec, getattr(model_or_mel, "metadata", None) or {}


def _mel_config(spec: MelSpec):
    import dataclasses

    from flowtts.config import MelConfig

    return MelConfig(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(MelConfig)})


def _neural(path, spec: MelSpec, what: str) -> nn.Module:
    """The vocoder of ``path`` (``"builtin"``: the package's), refused unless it inverts ``spec``'s mels."""
    from flowtts.vocoder.files import check_fits, load_vocoder_file

    vocoder = load_vocoder_file(path)
    check_fits(vocoder, _mel_config(spec), what)
    return vocoder


def choose_vocoder(
    model_or_mel, choice: str | os.PathLike = "auto", vocos_path: str | os.PathLike | None = None, *, name="vocoder"
) -> nn.Module:
    """The vocoder for a model's mels, on the CPU, in eval mode, its weights needing no gradient.

    Args:
        model_or_mel: A :class:`flowtts.CFM` (its front end and what its file records), or a front end alone
            (a :class:`MelSpec` or a :class:`flowtts.config.MelConfig`: ``"auto"`` then means Griffin-Lim).
        choice: ``"auto"``: the built-in vocoder when the model's file records ``vocoder: builtin`` (it speaks
            the built-in voice; :data:`flowtts.checkpoints.recorded.VOCODER_KEY`) and its mel front end is the
            vocoder's, else Griffin-Lim. ``"builtin"``: the built-in vocoder. ``"griffin-lim"``: Griffin-Lim.
            A path: that flowtts vocoder file (``flowtts vocoder train``).
        vocos_path: A local Vocos directory (``config.yaml`` + weights), used instead with ``choice="auto"``.
        name: What ``choice`` is called in messages (the command line passes ``"--vocoder"``).

    Raises:
        ValueError: A bad ``choice`` (naming ``name`` and the choices), ``vocos_path`` with another choice
            than ``"auto"``, a vocoder file for another mel front end (naming both), or a bad ``vocoder``
            record in the model's file.
        FileNotFoundError: No such vocoder file or Vocos directory.
        TypeError: ``model_or_mel`` has no mel front end.
    """
    from flowtts.checkpoints.recorded import VOCODER_KEY, recorded_vocoder

    check_vocoder_choice(choice, name)
    spec, metadata = _front_end(model_or_mel)
    if vocos_path is not None:
        if choice != "auto":
            raise ValueError(f"a Vocos directory ({os.fspath(vocos_path)}) and {name} {choice!r}: give one vocoder")
        vocoder = VocosVocoder(vocos_path)
    elif choice == "griffin-lim":
        vocoder = GriffinLim(spec)
    elif choice == "builtin":
        vocoder = _neural("builtin", spec, "the model")
    elif choice == "auto":
        recorded = recorded_vocoder(SimpleNamespace(metadata=metadata))
        vocoder = GriffinLim(spec)
        if recorded == "builtin":
            try:
                vocoder = _neural("builtin", spec, "the model")
            except ValueError as error:  # the record and the front end disagree: Griffin-Lim fits any
                log.warning("the model file records %s=builtin, but %s; using Griffin-Lim", VOCODER_KEY, error)
    else:
        vocoder = _neural(choice, spec, "the model")
    vocoder.requires_grad_(False)
    return vocoder.eval()


def vocoder_name(vocoder) -> str:
    """How a report names ``vocoder`` (before the word "vocoder"): ``"Griffin-Lim"``, ``"Vocos"``, ``"neural"``
    (flowtts's, :class:`~flowtts.vocoder.network.MelVocoder`), or its type."""
    from flowtts.vocoder.network import MelVocoder

    if isinstance(vocoder, GriffinLim):
        return "Griffin-Lim"
    if isinstance(vocoder, VocosVocoder):
        return "Vocos"
    if isinstance(vocoder, MelVocoder):
        return "neural"
    return type(vocoder).__name__
