"""Text + reference clip -> speech: the pipeline behind ``flowtts infer``.

It follows F5-TTS's inference recipe: the reference is mono, at the model's rate, at most
``max_ref_seconds`` long and loudness-normalised to ``target_rms`` (undone on the output); the text
fed to the model is the reference transcript followed by the new text; the output length is estimated
from the reference's frames per UTF-8 byte and ``speed``; long text is split at sentence boundaries
and the chunks are joined with a short cross-fade (``fix_duration`` instead fixes each text's total
length, reference included, and keeps it in one piece); ``remove_silence`` then shortens long pauses.
Several utterances (or chunks) share one ``sample()`` call, each computed exactly as it would be
alone (``isolate_batch``).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from flowtts.utils.files import atomic_output

log = logging.getLogger("flowtts")


@dataclass
class InferenceOptions:
    """Knobs of :func:`synthesize` (defaults are F5-TTS's)."""

    steps: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float | None = -1.0
    speed: float = 1.0
    use_epss: bool = True
    target_rms: float = 0.1
    cross_fade_seconds: float = 0.15
    fix_duration: float | None = None  # seconds of reference + speech per text (F5-TTS's fix_duration); no chunking
    remove_silence: bool = False  # shorten silences over 1 s in the output (F5-TTS's remove_silence)
    max_ref_seconds: float = 12.0
    min_ref_seconds: float = 0.5
    batch_size: int = 4
    dtype: str | None = None  # network precision: float32 (default), bfloat16, float16 (GPU)
    t_grid: tuple[float, ...] | None = None  # explicit solver times; replace steps, EPSS and sway

    def solver_kwargs(self) -> dict:
        """The ``CFM.sample()`` keyword arguments these options fix (steps, guidance, time grid)."""
        if self.t_grid is not None:
            return dict(
                steps=len(self.t_grid) - 1,
                cfg_strength=self.cfg_strength,
                sway_sampling_coef=None,
                t_grid=tuple(self.t_grid),
            )
        return dict(
            steps=self.steps,
            cfg_strength=self.cfg_strength,
            sway_sampling_coef=self.sway_sampling_coef,
            use_epss=self.use_epss,
        )


def recommended_options(model, **overrides) -> InferenceOptions:
    """:class:`InferenceOptions` for ``model``: F5-TTS's defaults, or what a distilled student was trained for.

    A student written by :func:`flowtts.train.distill.distill` carries its ``distill_config`` (step
    count, guidance, grid) in its metadata; sampling it any other way throws its training away.
    ``overrides`` (non-``None`` values) win over both.
    """
    from flowtts.train.distill import recorded_sampling

    fields = recorded_sampling(model) or {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if {"steps", "sway_sampling_coef"} & set(overrides):  # an explicit step count or sway replaces a student's grid
        fields.pop("t_grid", None)
    fields.update(overrides)
    return InferenceOptions(**fields)


@dataclass
class Reference:
    """A prepared reference clip."""

    mel: torch.Tensor  # (1, n, d)
    text: str
    rms: float
    seconds: float


@dataclass
class Utterance:
    """One synthesised text."""

    text: str
    wave: torch.Tensor  # (nw,)
    mel: torch.Tensor  # (d, n) generated part only (before any silence removal)
    seed: int
    sample_rate: int


def prepare_reference(model, wave: torch.Tensor, text: str, options: InferenceOptions) -> Reference:
    """Clip, trim, normalise and embed a reference wave (already mono at the model's rate).

    As in F5-TTS: a clip longer than ``max_ref_seconds`` is cut inside a pause where it has one
    (a warning says so: its transcript should then be shortened to match), leading and trailing
    silence is dropped and 50 ms of silence appended, and a clip quieter than ``target_rms`` is
    raised to it.

    Raises:
        ValueError: A silent clip, one shorter than ``min_ref_seconds`` after trimming, or an empty
            transcript.
    """
    from flowtts.audio.silence import clip_at_pause, silent_windows, trim_edges

    rate = model.mel_spec.target_sample_rate
    if wave.numel() == 0 or bool(silent_windows(wave, round(0.01 * rate), -50.0).all()):  # trim_edges' test
        raise ValueError("reference audio is silent (below -50 dBFS throughout)")
    seconds = wave.numel() / rate
    if seconds > options.max_ref_seconds:
        wave = clip_at_pause(wave, rate, options.max_ref_seconds)
        log.warning(
            "reference audio clipped from %.1f s to %.1f s (at a pause where possible); its transcript must "
            "match the clipped audio",
            seconds,
            wave.numel() / rate,
        )
    wave = trim_edges(wave, rate)
    seconds = wave.numel() / rate
    if seconds < options.min_ref_seconds:
        raise ValueError(
            f"reference audio is {seconds:.2f} s long without its leading and trailing silence; "
            f"at least {options.min_ref_seconds} s of speech is needed"
        )
    wave = torch.cat((wave, wave.new_zeros(int(0.05 * rate))))
    seconds = wave.numel() / rate
    text = text.strip()
    if not text:
        raise ValueError("the reference transcript (--ref-text) is empty")
    rms = float(wave.pow(2).mean().sqrt())
    if rms < options.target_rms:
        wave = wave * (options.target_rms / max(rms, 1e-8))
    # F5-TTS separates the reference transcript from the new text with a sentence end.
    if not text.endswith((". ", "。")):
        text = text + " " if text.endswith(".") else text + ". "
    with torch.no_grad():
        mel = model.mel_spec(wave[None].to(model.device)).transpose(1, 2)
    return Reference(mel=mel, text=text, rms=rms, seconds=seconds)


def transcribe_reference(wave: torch.Tensor, sample_rate: int) -> str:
    """Transcribe an English reference clip offline, for when its transcript is not given.

    F5-TTS transcribes with Whisper, which is downloaded; this uses pocketsphinx's generic English model,
    which ships inside its wheel (``pip install 'flowtts[eval]'``). It is far less accurate, so the
    transcript should be checked, and other languages need ``--ref-text``.

    Raises:
        ImportError: pocketsphinx is not installed.
        ValueError: Nothing was recognised.
    """
    from flowtts.eval.asr import PocketSphinx

    text = PocketSphinx()(wave, sample_rate).strip()
    if not text:
        raise ValueError("no words were recognised in the reference clip; pass its transcript (--ref-text)")
    return text


def load_reference(
    model,
    ref_file: str | None,
    ref_text: str | None,
    options: InferenceOptions,
    *,
    on_transcript: Callable[[str], None] | None = None,
) -> Reference:
    """Read, clip, normalise and embed a reference clip; the built-in one when ``ref_file`` is ``None``.

    Args:
        model: A :class:`flowtts.CFM`.
        ref_file: Any audio file soundfile reads (resampled to the model's rate, downmixed to mono).
        ref_text: Its transcript; ``None`` or empty: transcribed with :func:`transcribe_reference`.
        options: :class:`InferenceOptions` (reference length limits, ``target_rms``).
        on_transcript: Called with a transcript that was recognised rather than given.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable or too short audio, or nothing recognised.
        ImportError: No transcript and no pocketsphinx to make one.
    """
    from flowtts.audio.io import read_audio

    if ref_file is None:
        from flowtts.checkpoints.loader import builtin_reference

        ref_file, ref_text = builtin_reference(ref_text or None)
    rate = model.mel_spec.target_sample_rate
    wave, _ = read_audio(ref_file, rate)
    if not (ref_text or "").strip():
        ref_text = transcribe_reference(wave, rate)
        if on_transcript is not None:
            on_transcript(ref_text)
    return prepare_reference(model, wave, ref_text, options)


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


def text_units(model, text: str):
    """What ``model`` reads for ``text``: pinyin units for Chinese text with a character vocabulary
    (:func:`flowtts.text.pinyin.vocab_units`), else the string (UTF-8 byte models)."""
    if model.vocab_char_map is None:
        return text
    from flowtts.text.pinyin import vocab_units

    return vocab_units(text)


def _fade_join(left: torch.Tensor, right: torch.Tensor, samples: int) -> torch.Tensor:
    """``left`` then ``right``, overlapped by a linear cross-fade of ``min(samples, len(left), len(right))``."""
    n = min(samples, left.numel(), right.numel())
    if n <= 0:
        return torch.cat((left, right))
    ramp = torch.linspace(0, 1, n, dtype=left.dtype)
    mixed = left[left.numel() - n :] * (1 - ramp) + right[:n] * ramp
    return torch.cat((left[: left.numel() - n], mixed, right[n:]))


def cross_fade(waves: Sequence[torch.Tensor], samples: int) -> torch.Tensor:
    """Concatenate with linear cross-fades of ``samples`` (shortened where a wave is shorter)."""
    out = waves[0]
    for wave in waves[1:]:
        out = _fade_join(out, wave, samples)
    return out


@dataclass
class _Piece:
    """One ``sample()`` row of a synthesis: a chunk of one text."""

    text_index: int
    chunk_index: int
    text: str  # reference transcript + chunk
    duration: int  # frames, reference included
    seed: int


MAX_SECONDS = 60.0  # longest reference + chunk one sample() call is asked for (F5-TTS trains on <= 30 s)


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_options(options: InferenceOptions) -> None:
    """Raise ``ValueError`` naming the first option of ``options`` that is out of range."""
    from flowtts.model.sample_checks import check_t_grid, is_int
    from flowtts.sampling.grids import check_sway

    if not is_int(options.steps) or options.steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {options.steps!r}")
    cfg = options.cfg_strength
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg_strength must be a finite number >= 0, got {cfg!r}")
    if options.sway_sampling_coef is not None:
        check_sway(options.sway_sampling_coef)
    for name in ("speed", "target_rms", "max_ref_seconds", "min_ref_seconds"):
        if not _positive(getattr(options, name)):
            raise ValueError(f"{name} must be a positive number, got {getattr(options, name)!r}")
    fade = options.cross_fade_seconds
    if isinstance(fade, bool) or not isinstance(fade, (int, float)) or not math.isfinite(fade) or fade < 0:
        raise ValueError(f"cross_fade_seconds must be a number >= 0, got {fade!r}")
    if options.fix_duration is not None and not _positive(options.fix_duration):
        raise ValueError(f"fix_duration must be None or a positive number of seconds, got {options.fix_duration!r}")
    if not is_int(options.batch_size) or options.batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {options.batch_size!r}")
    if options.dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be None, 'float32', 'bfloat16' or 'float16', got {options.dtype!r}")
    if options.t_grid is not None:
        check_t_grid(options.t_grid, None)


_check_options = check_options


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
        chunk = piece.text[len(reference.text) :]
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
    what = "fix_duration" if options.fix_duration is not None else f"speed={options.speed:g}"
    problem = (
        f"too short for its {units} text units" if generated < units else f"over the {MAX_SECONDS:g} s one call allows"
    )
    advice = f"; with this reference and text, speed must lie in about [{lo:.3g}, {hi:.3g}]" if lo < hi else ""
    raise ValueError(f"{what} gives text chunk {piece.chunk_index + 1} {seconds:.2f} s of speech, {problem}{advice}")


def _plan(model, reference: Reference, texts: Sequence[str], seeds: Sequence[int], options) -> list[_Piece]:
    """Chunk each text and estimate each chunk's duration, as F5-TTS does."""
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
        pieces = [_Piece(i, 0, reference.text + text.strip(), fixed_frames, seeds[i]) for i, text in enumerate(texts)]
        _check_lengths(model, reference, pieces, options)
        return pieces
    ref_bytes = len(reference.text.encode("utf-8"))
    max_bytes = max(int(ref_bytes / reference.seconds * (22 - reference.seconds) * options.speed), 40)
    pieces = []
    for i, text in enumerate(texts):
        for j, chunk in enumerate(chunk_text(text.strip(), max_bytes)):
            chunk_bytes = len(chunk.encode("utf-8"))
            speed = 0.3 if chunk_bytes < 10 else options.speed  # F5-TTS slows very short texts
            duration = ref_frames + int(ref_frames / ref_bytes * chunk_bytes / speed)
            pieces.append(_Piece(i, j, reference.text + chunk, duration, seeds[i] + j))
    _check_lengths(model, reference, pieces, options)
    return pieces


def _warn_unknown(model, pieces: Sequence[_Piece]) -> None:
    vocab = model.vocab_char_map
    if vocab is not None:
        from flowtts.text import unknown_characters

        missing = unknown_characters([text_units(model, p.text) for p in pieces], vocab)
        if missing:
            log.warning("characters not in the vocabulary (read as id 0): %s", " ".join(repr(c) for c in missing))


def _render(model, reference: Reference, batch: Sequence[_Piece], vocoder, options) -> list[tuple[torch.Tensor, ...]]:
    """``(wave, mel)`` of each piece of ``batch``, from one ``sample()`` call (each row as if alone)."""
    ref_frames = reference.mel.shape[1]
    out, _ = model.sample(
        reference.mel.expand(len(batch), -1, -1),
        [text_units(model, p.text) for p in batch],
        torch.tensor([p.duration for p in batch]),
        **options.solver_kwargs(),
        seed=[p.seed for p in batch],
        isolate_batch=True,
        dtype=options.dtype,
    )
    results = []
    for k, piece in enumerate(batch):
        mel = out[k, ref_frames : piece.duration].t().float().cpu()
        wave = vocoder(mel[None])[0].float().cpu()
        if reference.rms < options.target_rms:
            wave = wave * (reference.rms / options.target_rms)
        results.append((wave, mel))
    return results


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
        seeds = [random.randrange(2**31) for _ in texts]
    if len(seeds) != len(texts):
        raise ValueError(f"got {len(seeds)} seeds for {len(texts)} texts")
    _check_options(options)
    rate = model.mel_spec.target_sample_rate
    items = _plan(model, reference, texts, seeds, options)
    _warn_unknown(model, items)

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
        if options.remove_silence:
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
    next chunk, which is held back until that chunk exists. Joined, the pieces are the wave
    :func:`synthesize` returns for the same text and seed (each chunk is computed as if alone in both).

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
    _check_options(options)
    seed = random.randrange(2**31) if seed is None else seed
    items = _plan(model, reference, [text], [seed], options)
    _warn_unknown(model, items)
    fade = int(options.cross_fade_seconds * model.mel_spec.target_sample_rate)
    tail = None  # the output's last samples (at most the fade), not final until the next chunk fades in
    for piece in items:
        ((wave, _mel),) = _render(model, reference, [piece], vocoder, options)
        # cross_fade()'s join: the tail holds min(fade, output so far) samples, all the join can reach
        joined = wave if tail is None else _fade_join(tail, wave, fade)
        keep = min(fade, joined.numel())
        if joined.numel() > keep:
            yield joined[: joined.numel() - keep]
        tail = joined[joined.numel() - keep :]
    if tail is not None and tail.numel():
        yield tail


def check_picture_output(path: str) -> None:
    """``ValueError`` unless ``path`` is a ``.png`` name in a writable directory; ``ImportError`` without
    matplotlib. Meant to run before the work whose picture goes there."""
    from flowtts.audio.io import check_writable_directory

    if os.path.isdir(path) or os.path.splitext(path)[1].lower() != ".png":
        raise ValueError(f"the mel picture {path} must be a .png file name")
    check_writable_directory(os.path.dirname(os.path.abspath(path)), create=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("the mel picture needs matplotlib: pip install 'flowtts[plot]'") from exc


def save_mel_png(mel: torch.Tensor, path: str, title: str = "") -> None:
    """Write a log-mel ``(d, n)`` as a picture (needs matplotlib: the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--save-mel needs matplotlib: pip install 'flowtts[plot]'") from exc
    fig, ax = plt.subplots(figsize=(max(4, mel.shape[1] / 60), 3))
    image = ax.imshow(mel.numpy(), origin="lower", aspect="auto", interpolation="none")
    ax.set_xlabel("frame")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
