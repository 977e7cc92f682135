"""What the commands share: user errors, number lists, model loading, architecture and sampling options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flowtts.utils.dtypes import DTYPE_NAMES


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit status 2, no traceback."""


DTYPE_CHOICES = list(DTYPE_NAMES)


def numbers(value: str) -> tuple[float, ...]:
    """argparse type of ``--student-times`` and ``--weights``: comma-separated numbers."""
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


SEED_MAX = 2**32 - 1


def seed(value: str) -> int:
    """argparse type of a training run's ``--seed``: an integer in 0..2**32-1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if not 0 <= number <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must lie in 0..{SEED_MAX}, got {number}")
    return number


def inference_seed(value: str) -> int:
    """argparse type of a synthesis ``--seed``: -1 (a random one, as in F5-TTS) or an integer in 0..2**32-1."""
    if value.strip() == "-1":
        return -1
    try:
        return seed(value)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (or -1 for a random seed)") from None


# The shared flags, declared here once and with no argparse default: a value not given comes from the
# next source in the order flag > config file (infer's --config) > model file > F5-TTS's defaults
# (flowtts.synthesis.options.InferenceOptions), filled by recommended_options() once the model is loaded.
SHARED_FLAGS = {
    "steps": (("--steps", "--nfe_step"), dict(type=int, help="solver steps (default: the model file's, else 32)")),
    "cfg": (
        ("--cfg", "--cfg_strength"),
        dict(type=float, help="classifier-free guidance strength (default: the model file's, else 2)"),
    ),
    "sway": (
        ("--sway", "--sway_sampling_coef"),
        dict(type=float, help="sway sampling coefficient (default: the model file's, else -1)"),
    ),
    "speed": (
        ("--speed",),
        dict(
            type=float,
            help="speaking rate, default 1 (estimated durations are divided by it; times the rate factor a model "
            "file records, as the built-in models do)",
        ),
    ),
    "ref_silence": (
        ("--ref-silence",),
        dict(
            type=float,
            help="seconds of silence after the trimmed reference clip (default: the model file's, else 0.05 as F5-TTS)",
        ),
    ),
    "target_rms": (
        ("--target-rms", "--target_rms"),
        dict(
            type=float,
            help="quieter references are raised to this RMS and the output lowered back (default: the model file's, "
            "else 0.1 as F5-TTS)",
        ),
    ),
    "cross_fade": (
        ("--cross-fade", "--cross_fade_duration"),
        dict(type=float, help="seconds of cross-fade between the chunks of a long text, default 0.15"),
    ),
    "fix_duration": (
        ("--fix-duration", "--fix_duration"),
        dict(type=float, help="seconds of reference + generated speech for each text (replaces the estimate)"),
    ),
    "seed": (("--seed",), dict(type=inference_seed, help="noise seed (default or -1: a random one, printed)")),
    "run_seed": (("--seed",), dict(type=seed, dest="seed", help="seed of the run (default 0)")),
    "device": (("--device",), dict(help="cpu (default), cuda, cuda:N or mps")),
    "dtype": (("--dtype",), dict(choices=DTYPE_CHOICES, help="network precision (autocast; default float32)")),
    "vocoder": (
        ("--vocoder",),
        dict(
            metavar="{auto,builtin,griffin-lim,FILE}",
            help="the vocoder: auto (default: the built-in neural vocoder for models that record they speak the "
            "built-in voice, else Griffin-Lim), builtin, griffin-lim, or a vocoder file (flowtts vocoder train)",
        ),
    ),
    "vocoder_path": (
        ("--vocoder-path",),
        dict(help="local Vocos directory (config.yaml + weights), e.g. for F5-TTS checkpoints; instead of --vocoder"),
    ),
    "threads": (("--threads",), dict(type=int, help="CPU threads (default: torch's)")),
}


def add_sampling_flags(parser: argparse.ArgumentParser, which: Sequence[str], **helps: str) -> None:
    """Declare the :data:`SHARED_FLAGS` named in ``which`` (no defaults; see the precedence above them).

    ``helps`` replaces a flag's help where a command uses it its own way (e.g. how a seed walks over texts).
    """
    for name in which:
        spellings, kwargs = SHARED_FLAGS[name]
        parser.add_argument(*spellings, **{**kwargs, **({"help": helps[name]} if name in helps else {})})


def fill_defaults(args: argparse.Namespace, defaults: dict) -> None:
    """Give the options ``args`` was not given (``None``) the command's own ``defaults``."""
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def set_threads(args: argparse.Namespace) -> None:
    """``--threads``, where given."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"{path} has no non-empty lines")
    return lines


def resolve_checkpoint(args: argparse.Namespace) -> None:
    """Upstream's pair ``--model ARCH --ckpt_file FILE`` (or a config's) -> ``args.model`` = the file, ``args.preset``.

    Alone, ``--model`` is the checkpoint (or ``builtin``, the default).
    """
    from flowtts.checkpoints.loader import read_metadata
    from flowtts.config import PRESETS

    model, ckpt = args.model, args.ckpt_file
    if ckpt:
        if model and model not in PRESETS and model != ckpt:
            raise UserError(
                f"model {model!r} is not an architecture flowtts knows ({', '.join(PRESETS)}); with a checkpoint "
                "(ckpt_file), model names its architecture"
            )
        own = os.path.isfile(ckpt) and ckpt.endswith(".safetensors") and read_metadata(ckpt) is not None
        if model in PRESETS and args.preset is None and not own:  # a flowtts file names its own
            args.preset = model
        args.model = ckpt
    elif model in PRESETS and not os.path.exists(model):
        raise UserError(
            f"model {model!r} names an architecture without weights; flowtts downloads nothing: give ckpt_file "
            "(--ckpt_file, the checkpoint on disk) or --model builtin"
        )
    args.model = args.model or "builtin"


def load_model(args: argparse.Namespace):
    """``--model`` with its ``--preset``/``--model_cfg``/``--vocab`` (and ``--device``), saying which preset the
    shapes matched."""
    from flowtts.checkpoints.loader import load

    preset = args.preset
    if getattr(args, "model_cfg", None):  # upstream: the model config file wins over the architecture's name
        from flowtts.checkpoints.loader import carries_architecture
        from flowtts.checkpoints.model_config import read_model_config

        config = read_model_config(args.model_cfg)
        if carries_architecture(args.model):
            if not getattr(args, "quiet", False):
                print(f"--model_cfg ignored: {args.model} carries its own architecture", file=sys.stderr)
        else:
            preset = config
    model = load(
        args.model,
        preset=preset,
        vocab=args.vocab,
        device=getattr(args, "device", None) or "cpu",
        quantize=getattr(args, "quantize", None),
    )
    if model.preset and args.preset is None and not getattr(args, "quiet", False):
        print(f"using preset {model.preset} (matched by parameter shapes)", file=sys.stderr)
    return model


def load_vocoder(model, args: argparse.Namespace):
    """The vocoder ``--vocoder`` (default ``auto``) and ``--vocoder-path`` choose for ``model``
    (:func:`flowtts.audio.vocoders.choose_vocoder`)."""
    from flowtts.audio.vocoders import choose_vocoder

    choice = getattr(args, "vocoder", None) or "auto"
    return choose_vocoder(model, choice, getattr(args, "vocoder_path", None), name="--vocoder")


def sampling_options(model, args: argparse.Namespace):
    """The model's recommended :class:`~flowtts.synthesis.InferenceOptions` with the command's sampling options
    (those the command has and was given) on top."""
    from flowtts.synthesis import recommended_options

    names = {
        "steps": "steps",
        "cfg": "cfg_strength",
        "sway": "sway_sampling_coef",
        "speed": "speed",
        "ref_silence": "ref_silence",
        "batch_size": "batch_size",
        "dtype": "dtype",
        "fix_duration": "fix_duration",
        "remove_silence": "remove_silence",
        "target_rms": "target_rms",
        "cross_fade": "cross_fade_seconds",
        "continue_reference": "continue_reference",
    }
    return recommended_options(
        model, **{field: getattr(args, arg) for arg, field in names.items() if hasattr(args, arg)}
    )


def say_clip_note(
    model, args: argparse.Namespace, *, has_clip: bool, editing: bool = False, name: str | None = None
) -> None:
    """Print, once, what ``model`` does with the user's clip when it does not clone it (see
    :func:`flowtts.synthesis.clip_note.clip_note`), even with ``--quiet``: the output is not what an F5-TTS
    user expects."""
    from flowtts.synthesis.clip_note import clip_note

    note = clip_note(
        model,
        name or args.model,
        has_clip=has_clip,
        continue_reference=getattr(args, "continue_reference", None),
        editing=editing,
    )
    if note:
        print(f"note: {note}", file=sys.stderr)


def check_sampling_flags(args: argparse.Namespace) -> None:
    """The sampling options a command has (infer, edit, serve, eval), refused in one line before anything is
    loaded, by the rules of :mod:`flowtts.synthesis.options` (the speed's range depends on the model's rate
    factor: :func:`~flowtts.synthesis.options.recommended_options` checks it once the model is loaded)."""
    import math

    from flowtts.model.sample_checks import check_cfg_strength
    from flowtts.synthesis.options import check_fix_duration, check_ref_silence, check_steps, check_target_rms

    for flag, name, check in (
        ("--steps", "steps", check_steps),
        ("--cfg", "cfg", check_cfg_strength),
        ("--fix-duration", "fix_duration", check_fix_duration),
        ("--ref-silence", "ref_silence", check_ref_silence),
        ("--target-rms", "target_rms", check_target_rms),
    ):
        value = getattr(args, name, None)
        if value is not None:
            try:
                check(value, flag)
            except ValueError as error:
                raise UserError(str(error)) from None
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if getattr(args, "speed", None) is not None and not (math.isfinite(args.speed) and args.speed > 0):
        raise UserError(f"--speed must be a positive number, got {args.speed}")
    if getattr(args, "cross_fade", None) is not None and not (math.isfinite(args.cross_fade) and args.cross_fade >= 0):
        raise UserError(f"--cross-fade must be a number >= 0, got {args.cross_fade}")
    if getattr(args, "sway", None) is not None:
        from flowtts.sampling.grids import check_sway

        try:
            check_sway(args.sway)
        except ValueError as error:
            raise UserError(f"--sway: {error}") from None


def check_machine_flags(args: argparse.Namespace) -> None:
    """``--threads``, ``--device`` and ``--vocoder``, for every command that has them: refused in one line before
    any work."""
    vocoder = getattr(args, "vocoder", None)
    if vocoder is not None:
        from flowtts.audio.vocoders import check_vocoder_choice

        check_vocoder_choice(vocoder, "--vocoder")  # ValueError, FileNotFoundError: one line, status 2
        if getattr(args, "vocoder_path", None) is not None and vocoder != "auto":
            raise UserError(f"--vocoder {vocoder} and --vocoder-path (a Vocos directory): give one vocoder")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be an integer >= 1 (CPU threads), got {threads}")
    device = getattr(args, "device", None)
    if device is not None:
        from flowtts.checkpoints.loader import resolve_device

        try:
            resolve_device(device, name="--device")
        except ValueError as error:
            raise UserError(str(error)) from None


def add_continue_option(parser: argparse.ArgumentParser) -> None:
    """``--continue-reference`` / ``--no-continue-reference`` (default: what the model file records)."""
    parser.add_argument(
        "--continue-reference",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="continue the reference clip as F5-TTS does (the default), or with --no-continue-reference speak the "
        "text unprompted, the clip setting only rate and level; default: what the model file records (the built-in "
        "models speak unprompted)",
    )


def add_architecture_options(parser: argparse.ArgumentParser) -> None:
    """What an official checkpoint needs besides its weights: its architecture and its vocabulary."""
    parser.add_argument("--preset", help="architecture of an official checkpoint (default: matched by shapes)")
    parser.add_argument(
        "--model-cfg",
        "--model_cfg",
        help="F5-TTS model config (configs/*.yaml) of an official checkpoint's architecture",
    )
    parser.add_argument("-v", "--vocab", "--vocab_file", help="vocab.txt the official checkpoint was trained with")


def add_quantize_option(parser: argparse.ArgumentParser) -> None:
    """``--quantize int8``: the backbone's matrix products in int8 on CPU (inference only)."""
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="run the network's matrix products in int8 on CPU (faster; see benchmarks/sample_speed.py)",
    )


def start_run(args: argparse.Namespace) -> None:
    """What distill and reward do first: their seed's default (0), check --report-prompts, keep freed memory,
    set the thread count."""
    from flowtts.utils.memory import retain_freed_memory

    fill_defaults(args, {"seed": 0})
    if args.report_prompts < 0:
        raise UserError(f"--report-prompts must be >= 0 (0: no report), got {args.report_prompts}")
    retain_freed_memory()
    set_threads(args)
