"""F5-TTS's inference config files (TOML) and multi-voice texts (``[voice]`` tags).

A config holds what ``f5-tts_infer-cli -c`` reads: the model, the main reference (``ref_audio``,
``ref_text``), the text (``gen_text``, or ``gen_file`` read whole), solver and output settings, and
optional extra voices::

    ref_audio = "main.wav"
    ref_text = ""            # empty: transcribe the reference
    gen_text = "Hello. [town] Good evening. [main] Goodbye."

    [voices.town]
    ref_audio = "town.wav"
    ref_text = "The transcript of town.wav."
    speed = 0.8              # this voice's own speed

A ``[name]`` tag switches the voice for the text up to the next tag; text before the first tag is
the main voice's. Unlike upstream, which falls back to the main voice, a tag naming no voice of the
config is an error.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from flowtts.text.voices import MAIN, VOICE_TAG, split_voices  # noqa: F401 -- their first import path

log = logging.getLogger("flowtts")

# config key -> expected type(s)
STRING_KEYS = ("model", "ckpt_file", "vocab_file", "ref_audio", "ref_text", "gen_text", "gen_file", "output_dir")
STRING_KEYS += ("output_file", "device", "model_cfg")
NUMBER_KEYS = ("nfe_step", "cfg_strength", "sway_sampling_coef", "speed", "fix_duration", "target_rms")
NUMBER_KEYS += ("cross_fade_duration",)
BOOL_KEYS = ("remove_silence",)
# upstream keys flowtts has no use for (vocoders are chosen with --vocoder-path; nothing is downloaded)
IGNORED_KEYS = ("vocoder_name", "load_vocoder_from_local", "save_chunk", "no_legacy_text")
VOICE_KEYS = ("ref_audio", "ref_text", "speed")


@dataclass
class Voice:
    """A reference to speak in: its clip (``None``: the built-in one), transcript (``None``: transcribe it)
    and its own speed (``None``: the run's)."""

    ref_audio: str | None = None
    ref_text: str | None = None
    speed: float | None = None


def _check_type(where: str, key: str, value, kind) -> None:
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        raise ValueError(f"{where}: {key} must be a {kind}, got {value!r}")


def read_config(path: str) -> dict:
    """An F5-TTS inference config as a dict of its known keys, checked.

    ``ref_text = ""`` becomes ``None`` (transcribe), as upstream; ``voices`` becomes ``name -> Voice``.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: Not TOML, an unknown key, a value of the wrong type, or a voice without ``ref_audio``.
    """
    import os

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not a TOML file ({exc})") from None
    known = set(STRING_KEYS) | set(NUMBER_KEYS) | set(BOOL_KEYS) | set(IGNORED_KEYS) | {"voices"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    config = {}
    for keys, kind in ((STRING_KEYS, "string"), (NUMBER_KEYS, "number"), (BOOL_KEYS, "bool")):
        for key in keys:
            if key in raw:
                _check_type(path, key, raw[key], kind)
                config[key] = raw[key]
    for key in IGNORED_KEYS:
        if key in raw:
            log.warning("%s: %s is an F5-TTS setting flowtts does not use; ignored", path, key)
    if config.get("ref_text") == "":
        config["ref_text"] = None
    voices = raw.get("voices", {})
    if not isinstance(voices, dict):
        raise ValueError(f"{path}: voices must be a table of [voices.NAME] tables")
    config["voices"] = {}
    for name, table in voices.items():
        where = f"{path}: [voices.{name}]"
        if name == MAIN:
            raise ValueError(f"{where}: the main voice is the top-level ref_audio / ref_text")
        if not re.fullmatch(r"\w+", name):
            raise ValueError(f"{where}: a voice name is letters, digits and underscores (it is written [{name}])")
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table with ref_audio, ref_text and optionally speed")
        extra = sorted(set(table) - set(VOICE_KEYS))
        if extra:
            raise ValueError(f"{where}: unknown keys {', '.join(extra)}; known: {', '.join(VOICE_KEYS)}")
        if "ref_audio" not in table:
            raise ValueError(f"{where}: ref_audio is missing")
        _check_type(where, "ref_audio", table["ref_audio"], "string")
        if "ref_text" in table:
            _check_type(where, "ref_text", table["ref_text"], "string")
        if "speed" in table:
            _check_type(where, "speed", table["speed"], "number")
            if not table["speed"] > 0:
                raise ValueError(f"{where}: speed must be positive, got {table['speed']}")
        config["voices"][name] = Voice(table["ref_audio"], table.get("ref_text") or None, table.get("speed"))
    return config
