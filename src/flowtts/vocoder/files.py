"""Vocoder files: safetensors weights with the architecture and mel front end in the metadata.

The metadata holds ``format`` (``"flowtts-vocoder"``), ``config`` (the :class:`VocoderConfig` as JSON, its
``mel`` included) and whatever facts the writer adds (what it was trained on, for how long). A vocoder is
only ever used on mels of the front end its file names: :func:`check_fits` refuses any other, naming both.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from flowtts.config import MelConfig
from flowtts.vocoder.network import MelVocoder, VocoderConfig

VOCODER_FORMAT = "flowtts-vocoder"
BUILTIN_VOCODER = "vocoder.safetensors"


def builtin_vocoder_path() -> str:
    """The path of the vocoder shipped in the package (trained on the built-in voice)."""
    from importlib.resources import files

    return str(files("flowtts").joinpath("assets", BUILTIN_VOCODER))


def save_vocoder(vocoder: MelVocoder, path: str, extra: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write ``vocoder`` atomically as safetensors with its config and ``extra`` facts in the metadata.

    ``dtype`` stores the floating tensors in another precision (``torch.float16`` halves the file); they are
    read back as float32.
    """
    from flowtts.utils.tensor_files import write_tensor_file

    metadata = {"format": VOCODER_FORMAT, "config": vocoder.config.to_dict(), **(extra or {})}
    write_tensor_file(path, vocoder.state_dict(), metadata, dtype)


def load_vocoder_file(path: str | os.PathLike = "builtin", device: torch.device | str = "cpu") -> MelVocoder:
    """A vocoder from a file written by :func:`save_vocoder`, or ``"builtin"`` (the package's).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a flowtts vocoder file, or its tensors do not fit its config.
    """
    from flowtts.utils.tensor_files import load_fitting, read_tensor_file

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path or 'builtin', got {type(path).__name__}")
    path = builtin_vocoder_path() if path == "builtin" else os.fspath(path)
    tensors, metadata = read_tensor_file(path, "vocoder")
    if metadata.get("format") != VOCODER_FORMAT:
        raise ValueError(f"{path} is not a flowtts vocoder file (format {metadata.get('format')!r})")
    try:
        vocoder = MelVocoder(VocoderConfig.from_dict(json.loads(metadata["config"])))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # a missing, torn or impossible config
        raise ValueError(
            f"{path}: its vocoder config is missing or invalid ({type(error).__name__}: {error})"
        ) from None
    load_fitting(vocoder, tensors, path, "vocoder")
    vocoder.metadata = {k: v for k, v in metadata.items() if k not in ("format", "config")}
    return vocoder.to(device).eval()


def check_fits(vocoder: MelVocoder, mel_config: MelConfig, what: str = "the model") -> None:
    """``ValueError`` naming both front ends when ``mel_config`` is not the one ``vocoder`` inverts."""
    theirs = MelConfig(**dataclasses.asdict(mel_config))
    if theirs != vocoder.config.mel:
        raise ValueError(
            f"the vocoder inverts mels {dataclasses.asdict(vocoder.config.mel)}, but {what} makes "
            f"{dataclasses.asdict(theirs)}; use a vocoder trained for that front end (flowtts vocoder train) "
            "or --vocoder griffin-lim"
        )
