"""One loader for flowtts files, official F5-TTS checkpoints and the built-in models.

flowtts's own format is a ``.safetensors`` file whose metadata carries the full configuration
(architecture, mel front end, vocabulary), so ``load(path)`` rebuilds the model with no other argument.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Mapping
from types import SimpleNamespace

import torch

from flowtts.checkpoints.model_config import check_model_config
from flowtts.checkpoints.official import (
    CheckpointError,
    describe,
    match_preset,
    mismatches,
    model_state_dict,
    read_file,
    vocab_size_of,
)
from flowtts.checkpoints.recorded import CONTINUE_KEY, carried_metadata, recorded_flag, recorded_voices
from flowtts.config import ModelConfig, get_preset
from flowtts.utils.dtypes import resolve_dtype
from flowtts.utils.files import atomic_output

log = logging.getLogger("flowtts")

FORMAT = "flowtts"
FORMAT_VERSION = "1"


def builtin_path(name: str) -> str:
    """Path of a model shipped in the package (``"builtin"`` is the teacher)."""
    from importlib.resources import files

    kind = name.partition(":")[2] or "teacher"
    path = files("flowtts").joinpath("assets", f"{kind}.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"no built-in model {name!r} in this installation (looked for {path})")
    return str(path)


def save(model, path: str | os.PathLike, *, dtype: str | torch.dtype | None = None, extra: Mapping | None = None):
    """Write ``model`` (a :class:`flowtts.CFM` with a ``config``) as a self-describing ``.safetensors``.

    Args:
        model: Model built by :func:`flowtts.model.build.build_model` or :func:`load`.
        path: Destination; written atomically (temp file + rename).
        dtype: Store the weights in this dtype (default: as they are).
        extra: More string metadata to store (e.g. how the model was trained).

    The file also records what ``model.metadata`` (set by :func:`load`) says about the data it learned
    from -- speaking-rate factor and reference preparation
    (:func:`flowtts.checkpoints.recorded.carried_metadata`) -- so that a fine-tuning, a distilled copy or a
    soup of a model is sampled as the model was; ``extra`` wins over them.
    """
    from safetensors.torch import save_file

    if model.quantized is not None:
        raise ValueError(
            f"a quantised ({model.quantized}) model is not saved: save the float32 model and quantise it when "
            "loading (flowtts.load(path, quantize='int8'))"
        )
    config = model.config
    if not isinstance(config, ModelConfig):
        raise ValueError("model has no flowtts ModelConfig (build it with build_model or load it with flowtts.load)")
    dtype = resolve_dtype(dtype)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    vocab = model.vocab_char_map
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "vocab": json.dumps(sorted(vocab, key=vocab.__getitem__) if vocab is not None else None),
    }
    metadata.update(carried_metadata(model))
    for k, v in (extra or {}).items():
        metadata[str(k)] = str(v)
    path = os.fspath(path)
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def resolve_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` this process can use (``name`` says what it is called).

    Raises:
        ValueError: Not a device name torch knows, or a device this machine lacks (``cuda`` without a GPU).
    """
    known = "'cpu', 'cuda', 'cuda:N' or 'mps'"
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be {known}, got {device!r}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} {str(device)!r}: this machine has no CUDA GPU that torch can use; use 'cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"{name} {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
        return parsed
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{name} 'mps': this machine has no Apple GPU that torch can use; use 'cpu'")
        return parsed
    raise ValueError(f"{name} must be {known}, got {device!r}")


def check_model_path(path: str) -> None:
    """Raise unless ``path`` is a file that can be opened (following links).

    Raises:
        FileNotFoundError: No such file, or a link to none.
        ValueError: A folder, a link that loops, or a path that cannot be looked at.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"model file {path} is a link to {os.readlink(path)!r}, which does not exist"
            ) from None
        raise FileNotFoundError(f"model file not found: {path}") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"model file {path}: its symbolic links point back to each other (a link loop)") from None
        raise ValueError(f"model file {path} cannot be opened: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path} is a folder; give the model file in it (.safetensors or .pt)")


def _json_field(path: str, metadata: Mapping[str, str], key: str):
    """The JSON value of metadata field ``key`` (``None`` when absent), or a :class:`CheckpointError` naming it."""
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON ({error})") from None


def _recorded_config(path: str, metadata: Mapping[str, str]) -> ModelConfig:
    """The architecture a flowtts file records in its ``config`` field, checked before anything is built."""
    data = _json_field(path, metadata, "config")
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: metadata field 'config' must be a JSON object of the architecture, got {data!r}"
        )
    try:
        config = ModelConfig.from_dict(data)
        check_model_config(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: metadata field 'config': {error}") from None
    return config


def _recorded_vocab(path: str, metadata: Mapping[str, str]) -> list[str] | None:
    vocab = _json_field(path, metadata, "vocab")
    if vocab is not None and not (isinstance(vocab, list) and all(isinstance(token, str) for token in vocab)):
        raise CheckpointError(f"{path}: metadata field 'vocab' must be a JSON list of strings or null")
    return vocab


def _check_recorded(path: str, metadata: Mapping[str, str]) -> None:
    """What the file records about sampling it: each value in range, or a :class:`CheckpointError` naming it."""
    from flowtts.sampling.recipe import METADATA_KEY, SamplingRecipe

    probe = SimpleNamespace(metadata=metadata)
    try:
        carried_metadata(probe)  # speed, ref_silence, target_rms
        recorded_flag(probe, CONTINUE_KEY)
        recorded_voices(probe)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    try:
        SamplingRecipe.from_metadata(metadata)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        key = METADATA_KEY if METADATA_KEY in metadata else "distill_config"
        raise CheckpointError(f"{path}: metadata field {key!r} is not a sampling recipe ({error})") from None


def read_metadata(path: str) -> dict[str, str] | None:
    """Metadata of a flowtts file, ``None`` for other files."""
    if not path.endswith(".safetensors"):
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return metadata if metadata.get("format") == FORMAT else None


def carries_architecture(path: str | os.PathLike) -> bool:
    """Whether ``path`` describes its own architecture (``builtin*`` or a flowtts ``.safetensors``), so that a
    model config file given with it does not apply."""
    path = os.fspath(path)
    if path.startswith("builtin"):
        return True
    return path.endswith(".safetensors") and os.path.isfile(path) and bool(read_metadata(path))


def _load_vocab(vocab) -> dict[str, int] | None:
    if vocab is None or isinstance(vocab, Mapping):
        return dict(vocab) if vocab is not None else None
    from flowtts.text import load_vocab

    return load_vocab(vocab)


def load(
    path: str | os.PathLike,
    *,
    preset: str | ModelConfig | None = None,
    vocab: str | os.PathLike | Mapping[str, int] | None = None,
    use_ema: bool = True,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
):
    """Load a model: a flowtts file, an official F5-TTS checkpoint, or ``"builtin"``.

    Args:
        path: ``.safetensors``/``.pt`` file, or ``"builtin"`` / ``"builtin:student"``.
        preset: Architecture of an official checkpoint: a preset name, or a :class:`ModelConfig`
            (e.g. from :func:`flowtts.checkpoints.model_config.read_model_config`, upstream's
            ``--model_cfg``); default: the preset whose shapes match, v1 preferred where v0 has the
            same shapes (the choice is logged).
        vocab: ``vocab.txt`` (or a dict) an official checkpoint was trained with. Not needed when its
            vocabulary is UTF-8 bytes (256 entries).
        use_ema: Take the EMA weights of a ``.pt`` training checkpoint.
        device: Target device.
        dtype: ``"float32"`` (default, whatever the file stores), ``"float16"`` or ``"bfloat16"``.
        quantize: ``"int8"``: run the backbone's matrix products in int8 on CPU, for inference only
            (:func:`flowtts.model.quantize.quantize`); needs ``device="cpu"`` and float32.

    Returns:
        A :class:`flowtts.CFM` in eval mode, with ``config`` (and ``preset`` for official files).

    Raises:
        FileNotFoundError: ``path`` or ``vocab`` does not exist.
        ValueError: ``path`` is a folder or a link loop; a ``device`` this machine does not have.
        CheckpointError: Unreadable file; metadata that is not JSON or out of range (the architecture,
            the vocabulary, what the file records about sampling it), named by field; or weights that do
            not fit the architecture (one message listing missing/unexpected keys and shape mismatches,
            naming the preset tried).
    """
    path = os.fspath(path)
    if path.startswith("builtin"):
        path = builtin_path(path)
    check_model_path(path)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype)
    _check_quantize(quantize, device, dtype)
    metadata = read_metadata(path)
    if metadata is not None:
        if preset is not None:
            raise ValueError(f"{path} is a flowtts file that carries its own architecture; do not pass a preset")
        model, state = _build_own(path, metadata, vocab)
    else:
        model, state = _build_official(path, preset, vocab, use_ema)
    result = model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: {describe(result.missing_keys, result.unexpected_keys, [])}")
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    if quantize is not None:
        from flowtts.model.quantize import quantize as quantize_model

        model = quantize_model(model, quantize, inplace=True)
    return model


def _check_quantize(quantize: str | None, device: torch.device, dtype: torch.dtype | None) -> None:
    if quantize is None:
        return
    from flowtts.model.quantize import MODES

    if quantize not in MODES:
        raise ValueError(f"quantize must be one of {MODES} or None, got {quantize!r}")
    if device.type != "cpu" or dtype not in (None, torch.float32):
        raise ValueError(f"quantize={quantize!r} runs on CPU in float32; got device={device}, dtype={dtype}")


def _check_vocab(path: str, vocab_map: Mapping[str, int] | None, embedded: int) -> None:
    """Raise unless the vocabulary (if any) has as many units as the file's text embedding has rows."""
    if vocab_map is not None and len(vocab_map) != embedded:
        raise CheckpointError(
            f"the vocabulary has {len(vocab_map)} units but {path} embeds {embedded} text tokens: "
            "wrong vocab.txt for this model (not the vocabulary it was trained with)"
        )


def _build_own(path: str, metadata: Mapping[str, str], vocab):
    """``(model, state)`` of a flowtts file: the architecture and vocabulary it records, checked against its
    weights; ``vocab`` replaces the recorded vocabulary."""
    from flowtts.model.build import build_model

    config = _recorded_config(path, metadata)
    stored_vocab = _recorded_vocab(path, metadata)
    _check_recorded(path, metadata)
    if vocab is not None:
        vocab_map = _load_vocab(vocab)
    else:
        vocab_map = {t: i for i, t in enumerate(stored_vocab)} if stored_vocab is not None else None
    state = read_file(path)
    embedded = vocab_size_of(state)
    _check_vocab(path, vocab_map, embedded)
    try:
        problems = mismatches(state, config.with_vocab_size(embedded))
    except (RuntimeError, TypeError, ValueError) as error:  # the backbone's own checks of its arguments
        raise CheckpointError(
            f"{path}: metadata field 'config' describes no model flowtts can build ({error})"
        ) from None
    if any(problems):
        raise CheckpointError(f"{path} does not fit the architecture it records: {describe(*problems)}")
    model = build_model(config, vocab_map)
    model.metadata = {k: v for k, v in metadata.items() if k not in ("config", "vocab")}
    model.preset = None
    model.checkpoint_format = "flowtts"
    return model, state


def _build_official(path: str, preset: str | ModelConfig | None, vocab, use_ema: bool):
    """``(model, state)`` of an official F5-TTS checkpoint: the architecture of ``preset``, or of the preset
    whose shapes match; the vocabulary ``vocab`` (needed unless the file embeds 256 UTF-8 bytes)."""
    from flowtts.model.build import build_model

    state = model_state_dict(read_file(path), use_ema=use_ema, source=path)
    embedded = vocab_size_of(state)
    vocab_map = _load_vocab(vocab)
    if vocab_map is None and embedded != 256:
        raise ValueError(f"{path} embeds {embedded} text tokens: pass the vocab.txt it was trained with (vocab=...)")
    _check_vocab(path, vocab_map, embedded)
    if preset is None:
        name = match_preset(state)
        log.info("%s: using preset %s (matched by parameter shapes)", path, name)
        config = get_preset(name)
    elif isinstance(preset, ModelConfig):
        name, config = None, preset
    else:
        name, config = preset, get_preset(preset)
    config = config.with_vocab_size(embedded)
    problems = mismatches(state, config)
    if any(problems):
        what = f"preset {name}" if name else "the given model config"
        raise CheckpointError(f"{path} does not fit {what}: {describe(*problems)}")
    model = build_model(config, vocab_map)
    model.preset = name
    model.checkpoint_format = "f5tts"
    return model, state


def builtin_reference(text: str | None = None) -> tuple[str, str]:
    """Path and transcript of the reference clip shipped with the built-in models."""
    from importlib.resources import files

    path = files("flowtts").joinpath("assets", "reference.wav")
    transcript = files("flowtts").joinpath("assets", "reference.txt")
    if not path.is_file():
        raise FileNotFoundError("this installation has no built-in reference clip: pass --ref-audio and --ref-text")
    return str(path), text if text is not None else transcript.read_text(encoding="utf-8").strip()
