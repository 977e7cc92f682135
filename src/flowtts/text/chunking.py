"""Long text -> chunks at sentence and clause ends, as F5-TTS splits what it synthesises."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?;:,。！？；：，])\s*")


def chunk_text(text: str, max_bytes: int) -> list[str]:
    """Split at sentence/clause ends into chunks of at most ``max_bytes`` UTF-8 bytes where possible."""
    pieces = [p.strip() for p in _SENTENCE_END.split(text) if p.strip()]
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}".strip() if current else piece
        if current and len(candidate.encode("utf-8")) > max_bytes:
            chunks.append(current)
            current = piece
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


# F5-TTS 1.1.22 (infer/utils_infer.py:87) splits after ASCII punctuation only where whitespace follows
# (the whitespace is dropped), and after full-width punctuation always (nothing is dropped).
_F5TTS_SPLIT = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")


def chunk_text_f5tts(text: str, max_chars: int) -> list[str]:
    """F5-TTS's own chunking (``infer/utils_infer.py:73-102`` in 1.1.22), for its pipeline.

    It differs from :func:`chunk_text` in ways that change chunk sizes, so it is kept apart:

    * the text is not stripped first, and pieces are split as described at ``_F5TTS_SPLIT``;
    * a piece whose last character is one UTF-8 byte is stored with a space after it, and that space
      counts towards the limit: a piece joins the chunk when ``bytes(chunk so far, spaces included) +
      bytes(piece) <= max_chars``, otherwise the chunk is closed (stripped) and the piece starts the next;
    * there is no lower bound on ``max_chars`` (flowtts's pipeline never goes below 40 bytes), so a short
      reference clip can make every sentence a chunk.
    """
    chunks: list[str] = []
    current = ""
    for piece in _F5TTS_SPLIT.split(text):
        if not piece:
            continue
        stored = piece + " " if len(piece[-1].encode("utf-8")) == 1 else piece
        if len(current.encode("utf-8")) + len(piece.encode("utf-8")) <= max_chars:
            current += stored
        else:
            if current:
                chunks.append(current.strip())
            current = stored
    if current:
        chunks.append(current.strip())
    return chunks
