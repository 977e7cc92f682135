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
