"""DNSMOS: Microsoft's no-reference speech-quality predictor (P.808 MOS and the overall OVRL score).

It needs ``speechmos`` and ``onnxruntime`` (``pip install speechmos onnxruntime``); the scores come from
their ONNX models at 16 kHz. A wave at another rate is resampled with :func:`flowtts.audio.resample.resample`
and scaled so that its peak is 0.9 (DNSMOS is not level-invariant; the scaling makes waves of different
loudness comparable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DNSMOS_RATE = 16_000
PEAK = 0.9
INSTALL_HINT = "DNSMOS needs speechmos and onnxruntime: pip install speechmos onnxruntime"


@dataclass(frozen=True)
class DnsmosScore:
    """DNSMOS of one wave.

    Attributes:
        p808: The P.808 MOS prediction (1 to 5).
        ovrl: The overall-quality (OVRL) prediction (1 to 5).
    """

    p808: float
    ovrl: float


def dnsmos_available() -> bool:
    """Whether ``speechmos`` and ``onnxruntime`` import."""
    try:
        _run_function()
    except ImportError:
        return False
    return True


def _run_function():
    """``speechmos.dnsmos.run``, or an ``ImportError`` that says what to install."""
    try:
        import onnxruntime  # noqa: F401
        from speechmos import dnsmos
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    return dnsmos.run


def prepare_wave(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``wave`` (``(nw,)``) at 16 kHz, float32, scaled so that its peak is 0.9.

    Raises:
        ValueError: ``wave`` is not one-dimensional, is empty, is silent or not finite, or ``sample_rate``
            is not a positive integer.
    """
    from flowtts.audio.resample import resample

    if not isinstance(wave, torch.Tensor) or wave.ndim != 1 or wave.numel() == 0:
        raise ValueError(f"wave must be a non-empty 1-D tensor, got {getattr(wave, 'shape', type(wave))}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    wave = resample(wave.detach().double().cpu(), sample_rate, DNSMOS_RATE)
    peak = float(wave.abs().max())
    if not torch.isfinite(wave).all() or peak == 0:
        raise ValueError("wave must be finite and not silent")
    return (wave * (PEAK / peak)).float()


def limit_threads(threads: int) -> bool:
    """Make speechmos run its ONNX models on ``threads`` CPU threads (onnxruntime's default is every core).

    speechmos builds its sessions itself, with no thread setting; this builds them once, as it would, with
    one, and installs them where :func:`speechmos.dnsmos.run` looks. Returns ``False`` (and changes
    nothing) when the installed speechmos is laid out differently.

    Raises:
        ImportError: ``speechmos`` or ``onnxruntime`` is not installed.
        ValueError: ``threads`` is not an integer >= 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    _run_function()
    import onnxruntime as ort
    from speechmos import dnsmos as module

    folder = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "dnsmos_models")
    primary, p808 = os.path.join(folder, "sig_bak_ovr.onnx"), os.path.join(folder, "model_v8.onnx")
    if not (hasattr(module, "DNSMOS") and hasattr(module, "dnsmos") and os.path.isfile(primary)):
        return False
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    model = object.__new__(module.DNSMOS)
    model.primary_model_path = primary
    model.onnx_sess = ort.InferenceSession(primary, options)
    model.p808_onnx_sess = ort.InferenceSession(p808, options)
    module.dnsmos = model
    return True


def dnsmos(wave: torch.Tensor, sample_rate: int) -> DnsmosScore:
    """The DNSMOS scores of ``wave`` (``(nw,)`` at ``sample_rate``).

    Raises:
        ImportError: ``speechmos`` or ``onnxruntime`` is not installed.
        ValueError: A bad wave or rate (see :func:`prepare_wave`).
    """
    run = _run_function()
    scores = run(prepare_wave(wave, sample_rate).numpy(), DNSMOS_RATE, return_df=False)
    return DnsmosScore(p808=float(scores["p808_mos"]), ovrl=float(scores["ovrl_mos"]))
