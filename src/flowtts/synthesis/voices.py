"""Multi-voice synthesis: each ``(voice, text)`` piece said in its voice, the pieces' waves joined end to end.

As upstream F5-TTS's ``infer_cli`` (``np.concatenate`` of the pieces' waves), the pieces are not
cross-faded; the joined mel is the pieces' mels side by side. ``flowtts infer --config`` with
``[voices.NAME]`` and the web app's multi-voice tab both speak through :func:`speak_pieces`, so the
same text, voices and seed give the same samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch

from flowtts.synthesis.options import InferenceOptions
from flowtts.synthesis.reference import Reference
from flowtts.synthesis.speech import Utterance, synthesize


def piece_seeds(seed: int | None, count: int, own: Mapping[int, int] | None = None) -> list[int | None]:
    """Seed of each of ``count`` pieces: piece ``k`` uses ``seed + k`` (``None``: a random one each), or
    ``own[k]`` where given."""
    own = own or {}
    return [own.get(k, None if seed is None else seed + k) for k in range(count)]


def speak_pieces(
    model,
    pieces: Sequence[tuple[str, str]],
    references: Mapping[str, Reference],
    options: Mapping[str, InferenceOptions],
    *,
    vocoder,
    seeds: Sequence[int | None],
    text: str | None = None,
    on_piece: Callable[[str, str, Utterance], None] | None = None,
) -> Utterance:
    """Say each ``(voice, text)`` piece with ``references[voice]`` and ``options[voice]``, then join them.

    Args:
        model: A :class:`flowtts.CFM`.
        pieces: From :func:`flowtts.text.voices.split_voices`.
        references: A prepared reference per voice the pieces name.
        options: The options of each voice (its own speed, for one).
        vocoder: Log-mel -> wave, as :func:`~flowtts.synthesis.synthesize`.
        seeds: One per piece (``None``: a random one); see :func:`piece_seeds`.
        text: The whole text, kept in the result (default: the pieces' texts joined by spaces).
        on_piece: Called with ``(voice, text, utterance)`` after each piece.

    Returns:
        One :class:`Utterance`: the pieces' waves concatenated, their mels side by side, the first piece's seed.

    Raises:
        ValueError: No pieces, or a seed count that does not match.
    """
    if not pieces:
        raise ValueError("the text has nothing to say besides its voice tags")
    if len(seeds) != len(pieces):
        raise ValueError(f"got {len(seeds)} seeds for {len(pieces)} pieces")
    parts = []
    for (voice, piece), seed in zip(pieces, seeds):
        (utterance,) = synthesize(
            model,
            references[voice],
            [piece],
            vocoder=vocoder,
            options=options[voice],
            seeds=None if seed is None else [seed],
            progress=False,
        )
        parts.append(utterance)
        if on_piece is not None:
            on_piece(voice, piece, utterance)
    return dataclasses.replace(
        parts[0],
        text=text if text is not None else " ".join(piece for _, piece in pieces),
        wave=torch.cat([p.wave for p in parts]),
        mel=torch.cat([p.mel for p in parts], dim=-1),
    )
