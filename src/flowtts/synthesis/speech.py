"""Text + reference -> speech: chunking, length estimates, batched sampling, joining, streaming.

It follows F5-TTS's inference recipe: the reference is mono, at the model's rate, at most
``max_ref_seconds`` long and loudness-normalised to ``target_rms`` (undone on the output); the text
fed to the model is the reference transcript followed by the new text; the output length is estimated
from the reference's frames per UTF-8 byte and ``speed``; long text is split at sentence boundaries
and the chunks are joined with a short cross-fade (``fix_duration`` instead fixes each text's total
length, reference included, and keeps it in one piece); ``remove_silence`` then shortens long pauses.
Several utterances (or chunks) share one ``sample()`` call, each computed exactly as it would be
alone (``isolate_batch``).

That is the ``"flowtts"`` pipeline. With ``options.pipeline == "f5tts"`` (the default for F5-TTS
checkpoints) the chunks, durations, the text the model reads, the reference cut and ``remove_silence``
follow F5-TTS 1.1.22's own rules instead (:mod:`flowtts.synthesis.pipeline`), so that the output is
upstream's for the same seed (one noise draw per chunk: chunk ``j`` from ``seed + j`` in both).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from flowtts.audio.crossfade import cross_fade, fade_join
from flowtts.model.sample_checks import MAX_SECONDS  # longest reference + chunk one sample() call is asked for
from flowtts.synthesis.options import InferenceOptions, check_options
from flowtts.synthesis.reference import Reference
from flowtts.synthesis.seeds import choose_seed
from flowtts.text.chunking import chunk_text
from flowtts.text.units import text_units

log = logging.getLogger("flowtts")
STREAM_FRAMES = 96  # hops (about 1 s at 24 kHz) per piece the neural vocoder streams: the first leaves early


@dataclass
class Utterance:
    """One synthesised text."""

    text: str
    wave: torch.Tensor  # (nw,)
    mel: torch.Tensor  # (d, n) generated part only (before any silence removal)
    seed: int
    sample_rate: int


@dataclass
class _Piece:
    """One ``sample()`` row of a synthesis: a chunk of one text."""

    text_index: int
    chunk_index: int
    chunk: str  # the text this row says (continuing the reference, the model reads its transcript first)
    duration: int  # frames, reference included
    seed: int


def _check_lengths(model, reference: Reference, pieces: Sequence[_Piece], options) -> None:
    """Refuse chunks whose estimated length no speech fits: under one frame per text unit, or a call
    longer than :data:`MAX_SECONDS`; the message gives the speeds that would fit."""
    hop, rate = model.mel_spec.hop_length, model.mel_spec.target_sample_rate
    ref_frames = reference.mel.shape[1]
    limit = int(MAX_SECONDS * rate / hop)
    bad = None
    lo, hi = 0.0, math.inf
    frames_per_byte = ref_frames / len(reference.text.encode("utf-8"))
    for piece in pieces:
        chunk = piece.chunk
        units = len(text_units(model, chunk))
        generated = piece.duration - ref_frames
        chunk_bytes = len(chunk.encode("utf-8"))
        if chunk_bytes >= 10:  # F5-TTS fixes the speed of shorter chunks
            lo = max(lo, frames_per_byte * chunk_bytes / max(limit - ref_frames, 1))
            hi = min(hi, frames_per_byte * chunk_bytes / max(units, 1))
        if bad is None and (generated < units or piece.duration > limit):
            bad = (piece, generated, units)
    if bad is None:
        return
    piece, generated, units = bad
    seconds = generated * hop / rate
    what = f"speed={options.speed:g}"
    problem = (
        f"too short for its {units} text units" if generated < units else f"over the {MAX_SECONDS:g} s one call allows"
    )
    advice = f"; with this reference and text, speed must lie in about [{lo:.3g}, {hi:.3g}]" if lo < hi else ""
    raise ValueError(f"{what} gives text chunk {piece.chunk_index + 1} {seconds:.2f} s of speech, {problem}{advice}")


def _units(model, text: str, options):
    """What the model reads for ``text`` under ``options.pipeline`` (F5-TTS's converts every text)."""
    if options.pipeline == "f5tts":
        from flowtts.synthesis.pipeline import units

        return units(model, text)
    return text_units(model, text)


def _token_count(model, units) -> int:
    """How many tokens ``sample()`` makes of ``units`` (UTF-8 bytes of a string without a vocabulary)."""
    if model.vocab_char_map is None and isinstance(units, str):
        return len(units.encode("utf-8"))
    return len(units)


def _plan_f5tts(model, reference: Reference, texts: Sequence[str], seeds: Sequence[int], options) -> list[_Piece]:
    """F5-TTS's chunks and durations (:mod:`flowtts.synthesis.pipeline`): chunks sized from the clip's bytes
    per second, durations from its ``samples // hop`` frames per byte of what the model reads, a fixed
    length shared between chunks by bytes, and each duration raised to what ``sample()`` raises it to
    (text or prompt length + 1 frame, cfm.py in F5-TTS), so that the cut takes everything generated."""
    from flowtts.synthesis import pipeline
    from flowtts.text.chunking import chunk_text_f5tts

    hop, rate = model.mel_spec.hop_length, model.mel_spec.target_sample_rate
    cut, prompt = reference.cut, reference.mel.shape[1]
    if options.fix_duration is not None and int(options.fix_duration * rate / hop) <= cut:
        raise ValueError(
            f"fix_duration ({options.fix_duration} s) must be longer than the reference clip "
            f"({cut * hop / rate:.2f} s): it is the length of reference + generated speech"
        )
    transcript = reference.transcript if reference.transcript is not None else reference.text
    size = pipeline.max_chars(transcript, reference.seconds, options.speed)
    ref_bytes = len(reference.text.encode("utf-8"))
    pieces = []
    for i, text in enumerate(texts):
        chunks = chunk_text_f5tts(text, size)
        fixed = pipeline.fix_durations(options.fix_duration, chunks, cut, hop, rate, options.cross_fade_seconds)
        for j, (chunk, seconds) in enumerate(zip(chunks, fixed)):
            duration = pipeline.chunk_frames(chunk, seconds, cut, ref_bytes, options.speed, hop, rate)
            if options.continue_reference:
                least = max(_token_count(model, _units(model, reference.text + chunk, options)), prompt) + 1
            else:  # alone after one frame of no audio: at least its own tokens + 1 after that frame
                least = cut + max(_token_count(model, _units(model, chunk, options)), 1)
            pieces.append(_Piece(i, j, chunk, max(duration, least), seeds[i] + j))
    return pieces


def _plan(model, reference: Reference, texts: Sequence[str], seeds: Sequence[int], options) -> list[_Piece]:
    """Chunk each text and estimate each chunk's duration, as F5-TTS does."""
    if reference.pipeline != options.pipeline:
        raise ValueError(
            f"the reference was prepared by the {reference.pipeline!r} pipeline but the options ask for "
            f"{options.pipeline!r}: prepare it with the same options"
        )
    if options.pipeline == "f5tts":
        return _plan_f5tts(model, reference, texts, seeds, options)
    hop = model.mel_spec.hop_length
    rate = model.mel_spec.target_sample_rate
    ref_frames = reference.mel.shape[1]
    if options.fix_duration is not None:
        fixed_frames = int(options.fix_duration * rate / hop)
        if fixed_frames <= ref_frames:
            raise ValueError(
                f"fix_duration ({options.fix_duration} s) must be longer than the reference clip "
                f"({reference.seconds:.2f} s): it is the length of reference + generated speech"
            )
        # An explicit length is the caller's choice (sample() still gives each text one frame per unit).
        return [_Piece(i, 0, text.strip(), fixed_frames, seeds[i]) for i, text in enumerate(texts)]
    ref_bytes = len(reference.text.encode("utf-8"))
    max_bytes = max(int(ref_bytes / reference.seconds * (22 - reference.seconds) * options.speed), 40)
    pieces = []
    for i, text in enumerate(texts):
        for j, chunk in enumerate(chunk_text(text.strip(), max_bytes)):
            chunk_bytes = len(chunk.encode("utf-8"))
            speed = 0.3 if chunk_bytes < 10 else options.speed  # F5-TTS slows very short texts
            duration = ref_frames + int(ref_frames / ref_bytes * chunk_bytes / speed)
            pieces.append(_Piece(i, j, chunk, duration, seeds[i] + j))
    _check_lengths(model, reference, pieces, options)
    return pieces


def _warn_unknown(model, reference: Reference, pieces: Sequence[_Piece], options) -> None:
    vocab = model.vocab_char_map
    if vocab is not None:
        from flowtts.text import unknown_characters

        missing = unknown_characters([_units(model, reference.text + p.chunk, options) for p in pieces], vocab)
        if missing:
            log.warning("characters not in the vocabulary (read as id 0): %s", " ".join(repr(c) for c in missing))


def _render_mels(model, reference: Reference, batch: Sequence[_Piece], options) -> list[torch.Tensor]:
    """The generated log-mel ``(d, n)`` of each piece of ``batch``, from one ``sample()`` call (each row as
    if alone).

    Continuing the reference (F5-TTS), the prompt is the clip's mel and the text its transcript + the
    chunk. Unprompted (``options.continue_reference`` off), the model generates the chunk's frames alone
    after one frame with no audio condition -- the layout of a training example whose whole utterance is
    the target -- with the chunk's text only; the clip has set the duration and sets the level.
    """
    ref_frames = reference.cut  # F5-TTS's pipeline keeps the reference's last mel frame (Reference.frames)
    if options.continue_reference:
        cond, start = reference.mel.expand(len(batch), -1, -1), ref_frames
        texts = [reference.text + p.chunk for p in batch]
    else:
        cond, start = reference.mel.new_zeros(len(batch), 1, reference.mel.shape[2]), 1
        texts = [p.chunk for p in batch]
    ends = [p.duration - ref_frames + start for p in batch]
    out, _ = model.sample(
        cond,
        [_units(model, text, options) for text in texts],
        torch.tensor(ends),
        **options.solver_kwargs(),
        seed=[p.seed for p in batch],
        isolate_batch=True,
        no_ref_audio=not options.continue_reference,
        dtype=options.dtype,
    )
    return [out[k, start:end].t().float().cpu() for k, end in enumerate(ends)]


def _render(model, reference: Reference, batch: Sequence[_Piece], vocoder, options) -> list[tuple[torch.Tensor, ...]]:
    """``(wave, mel)`` of each piece of ``batch`` (see :func:`_render_mels`)."""
    results = []
    for mel in _render_mels(model, reference, batch, options):
        with torch.no_grad():  # inference: a graph through the vocoder would keep every activation
            wave = vocoder(mel[None])[0].float().cpu()
        results.append((_level(wave, reference, options), mel))
    return results


def _level(wave: torch.Tensor, reference: Reference, options) -> torch.Tensor:
    """``wave`` lowered back to a quiet reference's level (the reference was raised to ``target_rms``)."""
    if reference.rms < options.target_rms:
        if options.pipeline == "f5tts":  # utils_infer.py:526-527, in its order
            return wave * reference.rms / options.target_rms
        return wave * (reference.rms / options.target_rms)
    return wave


def _wave_pieces(vocoder, mel: torch.Tensor, reference: Reference, options) -> Iterator[torch.Tensor]:
    """The wave of one chunk's mel ``(d, n)`` at the output's level, in pieces of :data:`STREAM_FRAMES` hops
    with the neural vocoder (:func:`flowtts.vocoder.stream.vocode_in_chunks`: the first leaves before the
    rest is vocoded, and they join into the whole mel's wave), in one piece with any other vocoder."""
    from flowtts.vocoder.network import MelVocoder

    if not isinstance(vocoder, MelVocoder) or mel.shape[1] < 2:
        with torch.no_grad():
            wave = vocoder(mel[None])[0].float().cpu()
        yield _level(wave, reference, options)  # outside no_grad: grad mode must not leak to the consumer
        return
    from flowtts.vocoder.stream import vocode_in_chunks

    pieces = vocode_in_chunks(vocoder, mel.to(vocoder.window.device), STREAM_FRAMES)
    while True:
        with torch.no_grad():  # around each step only, as above
            piece = next(pieces, None)
        if piece is None:
            return
        yield _level(piece.float().cpu(), reference, options)


def _check_texts(texts: Sequence[str]) -> None:
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"text {i + 1} is empty")


def synthesize(
    model,
    reference: Reference,
    texts: Sequence[str],
    *,
    vocoder: Callable[[torch.Tensor], torch.Tensor],
    options: InferenceOptions | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> list[Utterance]:
    """Synthesise each text in the reference's voice.

    Args:
        model: A :class:`flowtts.CFM`.
        reference: From :func:`prepare_reference`.
        texts: Texts to speak; long ones are chunked.
        vocoder: Log-mel ``(b, d, n)`` -> wave ``(b, nw)``.
        options: :class:`InferenceOptions`.
        seeds: One seed per text (random ones are drawn and reported otherwise); chunk ``j`` of a text
            uses ``seed + j``.
        progress: Show a progress bar over ``sample()`` calls.

    Raises:
        ValueError: An empty text, a seed count that does not match, or an option out of range
            (``speed``/``target_rms`` not positive, negative cross-fade, ``fix_duration`` not longer
            than the reference).
    """
    options = options or InferenceOptions()
    _check_texts(texts)
    if seeds is None:
        seeds = [choose_seed() for _ in texts]
    if len(seeds) != len(texts):
        raise ValueError(f"got {len(seeds)} seeds for {len(texts)} texts")
    check_options(options)
    rate = model.mel_spec.target_sample_rate
    items = _plan(model, reference, texts, seeds, options)
    _warn_unknown(model, reference, items, options)

    batches = [items[k : k + options.batch_size] for k in range(0, len(items), options.batch_size)]
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="synthesising", unit="batch")
    pieces: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for batch in iterator:
        for piece, (wave, mel) in zip(batch, _render(model, reference, batch, vocoder, options)):
            pieces.setdefault(piece.text_index, []).append((piece.chunk_index, wave, mel))

    fade = int(options.cross_fade_seconds * rate)
    results = []
    for i, text in enumerate(texts):
        parts = sorted(pieces[i], key=lambda p: p[0])
        wave = cross_fade([p[1] for p in parts], fade)
        if options.remove_silence and options.pipeline == "f5tts":
            from flowtts.synthesis.pipeline import remove_silence as remove_silence_f5tts

            wave = remove_silence_f5tts(wave, rate)
        elif options.remove_silence:
            from flowtts.audio.silence import remove_silence

            wave = remove_silence(wave, rate)
        mel = torch.cat([p[2] for p in parts], dim=1)
        results.append(Utterance(text=text, wave=wave, mel=mel, seed=seeds[i], sample_rate=rate))
    return results


def stream(
    model,
    reference: Reference,
    text: str,
    *,
    vocoder: Callable[[torch.Tensor], torch.Tensor],
    options: InferenceOptions | None = None,
    seed: int | None = None,
) -> Iterator[torch.Tensor]:
    """Synthesise ``text`` one chunk at a time, yielding audio as soon as it is final.

    For playback that starts before a long text is done (F5-TTS streams the same way, chunk by chunk):
    each sentence-level chunk is sampled alone, and its audio is yielded up to the cross-fade with the
    next chunk, which is held back until that chunk exists. With the neural vocoder a chunk's audio
    leaves in pieces of :data:`STREAM_FRAMES` hops, each vocoded with the context its samples depend on
    (:func:`flowtts.vocoder.stream.vocode_in_chunks`), so the first leaves before the chunk is vocoded.
    Joined, the pieces are the wave :func:`synthesize` returns for the same text and seed (each chunk is
    computed as if alone in both; with the neural vocoder up to float rounding).

    Args:
        model: A :class:`flowtts.CFM`.
        reference: From :func:`prepare_reference`.
        text: The text to speak.
        vocoder: Log-mel ``(b, d, n)`` -> wave ``(b, nw)``.
        options: :class:`InferenceOptions`; ``remove_silence`` needs the whole output and is refused,
            ``batch_size`` does not apply.
        seed: Seed of the first chunk (chunk ``j`` uses ``seed + j``); random when ``None``.

    Yields:
        1-D float waves at the model's sample rate.

    Raises:
        ValueError: An empty text, ``remove_silence``, or an option out of range (as :func:`synthesize`).
    """
    options = options or InferenceOptions()
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    _check_texts([text])
    if options.remove_silence:
        raise ValueError("remove_silence needs the whole output; it cannot be streamed")
    check_options(options)
    seed = choose_seed(seed)
    items = _plan(model, reference, [text], [seed], options)
    _warn_unknown(model, reference, items, options)
    fade = int(options.cross_fade_seconds * model.mel_spec.target_sample_rate)
    pending = None  # the output's last samples (at most the fade), not final until the next chunk fades in
    for piece in items:
        (mel,) = _render_mels(model, reference, [piece], options)
        pieces = _wave_pieces(vocoder, mel, reference, options)
        # cross_fade()'s join needs as much of the new chunk's start as the held-back tail is long
        head = next(pieces)
        while pending is not None and head.numel() < pending.numel():
            more = next(pieces, None)
            if more is None:
                break
            head = torch.cat((head, more))
        pending = head if pending is None else fade_join(pending, head, fade)
        while True:
            if pending.numel() > fade:  # all but the tail a next chunk may fade into is final
                yield pending[: pending.numel() - fade]
                pending = pending[pending.numel() - fade :]
            more = next(pieces, None)
            if more is None:
                break
            pending = torch.cat((pending, more))
    if pending is not None and pending.numel():
        yield pending
