"""Multi-voice texts: ``[name]`` tags switch the voice for the text up to the next tag."""

from __future__ import annotations

import re

VOICE_TAG = re.compile(r"\[(\w+)\]")
MAIN = "main"


def split_voices(text: str, voices) -> list[tuple[str, str]]:
    """``(voice, text)`` pieces of a text with ``[voice]`` tags, in order, empty pieces dropped.

    Args:
        text: The text; what precedes the first tag is the main voice's.
        voices: The names a tag may use (the main voice is always allowed).

    Raises:
        ValueError: A tag names no voice of ``voices``.
    """
    allowed = {MAIN, *voices}
    pieces, voice, start = [], MAIN, 0
    for match in VOICE_TAG.finditer(text):
        piece = text[start : match.start()].strip()
        if piece:
            pieces.append((voice, piece))
        voice, start = match.group(1), match.end()
        if voice not in allowed:
            known = ", ".join(sorted(allowed))
            raise ValueError(f"the text names voice [{voice}], which is not defined; voices: {known}")
    piece = text[start:].strip()
    if piece:
        pieces.append((voice, piece))
    return pieces
