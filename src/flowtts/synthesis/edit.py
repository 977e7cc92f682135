"""Speech editing: make a recording say new words in chosen spans and keep the rest (F5-TTS's speech_edit).

The recording's log-mel is kept frame for frame outside the spans to edit. Each span is replaced by
empty frames, as many as its new length (its old length unless given), which the model fills in,
conditioned on the transcript of the whole edited utterance and on the frames around the span. As in
F5-TTS, span bounds in seconds become frames as ``round(seconds * sample_rate / hop_length)``, a
recording quieter than ``target_rms`` is raised to it (and the output lowered back), and the kept
frames are the recording's own mel, so only the vocoder changes them.

A span may be empty (``start == end``) when it is given a new length: the new words are inserted there.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flowtts.model.sample_checks import MAX_SECONDS
from flowtts.synthesis.options import InferenceOptions
from flowtts.synthesis.seeds import choose_seed
from flowtts.text.units import text_units

# Longest edit, recording and new speech together: the whole of it is sampled in one call, whose attention
# grows with the square of its length (a 10-minute recording does not get past the first step on a CPU).
MAX_EDIT_SECONDS = MAX_SECONDS


_SECONDS = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*"


def parse_parts(parts: str) -> list[tuple[float, float]]:
    """The spans to edit, written ``"1.2-1.8, 3-3.5"`` (commas or semicolons), as ``[(1.2, 1.8), (3.0, 3.5)]``.

    ``flowtts edit --parts`` and the web app's Edit tab both read their parts here.

    Raises:
        ValueError: A part that is not ``START-END`` in seconds, or no part at all.
    """
    spans = []
    for item in (parts or "").replace(";", ",").split(","):
        if not item.strip():
            continue
        match = re.fullmatch(f"{_SECONDS}-{_SECONDS}", item)
        if match is None:
            raise ValueError(
                f"parts are start-end seconds separated by commas (e.g. 1.2-1.8, 3-3.5); got {item.strip()!r}"
            )
        spans.append((float(match[1]), float(match[2])))
    if not spans:
        raise ValueError("mark at least one part to regenerate (start-end seconds, e.g. 1.2-1.8)")
    return spans


def check_edit_seconds(seconds: float, what: str = "the recording to edit") -> None:
    """Refuse an edit longer than :data:`MAX_EDIT_SECONDS` (``flowtts edit`` and the web app alike).

    Raises:
        ValueError: Naming the length and the cap.
    """
    if seconds > MAX_EDIT_SECONDS:
        raise ValueError(
            f"{what} is {seconds:.1f} s long; an edit takes at most {MAX_EDIT_SECONDS:g} s (MAX_EDIT_SECONDS: "
            "the whole recording is sampled in one call); cut the recording to the part around the edit"
        )


@dataclass(frozen=True)
class EditPlan:
    """The conditioning of one edit.

    Attributes:
        cond: ``(1, n, d)`` log-mel: the recording's frames, zeros where new speech goes.
        keep: ``(1, n)`` bool, ``True`` on the recording's frames (``CFM.sample``'s ``edit_mask``).
        spans: Frame ranges ``[start, end)`` of the new speech in ``cond``, one per edited part.
    """

    cond: torch.Tensor
    keep: torch.Tensor
    spans: tuple[tuple[int, int], ...]


@dataclass
class EditResult:
    """One edited recording."""

    wave: torch.Tensor  # (nw,) the whole edited recording
    mel: torch.Tensor  # (d, n) its log-mel: the recording's frames outside ``spans``, generated ones inside
    spans: tuple[tuple[int, int], ...]  # frame ranges of the generated speech
    seed: int
    sample_rate: int


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    return float(value)


def plan_edit(
    mel: torch.Tensor,
    parts: Sequence[Sequence[float]],
    durations: Sequence[float | None] | None = None,
    *,
    frame_rate: float,
) -> EditPlan:
    """Lay out the frames of an edit: the recording's frames kept, each part replaced by empty frames.

    Args:
        mel: The recording's log-mel ``(1, n, d)``.
        parts: ``(start, end)`` seconds of each span to replace, in order and not overlapping.
        durations: New length in seconds of each part (``None`` entries: the part's own length);
            default: every part keeps its length.
        frame_rate: Mel frames per second (sample rate / hop length).

    Returns:
        An :class:`EditPlan`.

    Raises:
        ValueError: No parts, a part that is not a pair of finite seconds, runs backwards, starts before
            the previous part ends, or ends after the recording; a durations list of another length; a
            duration that is not positive or over :data:`MAX_EDIT_SECONDS`; a part whose new length is under
            one frame; an edited recording longer than :data:`MAX_EDIT_SECONDS` (refused before it is laid out).
    """
    if not torch.is_tensor(mel) or mel.ndim != 3 or mel.shape[0] != 1:
        raise ValueError(f"mel must be a (1, frames, channels) tensor, got {getattr(mel, 'shape', type(mel))}")
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or len(parts) == 0:
        raise ValueError(f"parts must be a non-empty list of (start, end) seconds, got {parts!r}")
    if durations is not None and (isinstance(durations, (str, bytes)) or len(durations) != len(parts)):
        raise ValueError(f"durations must give one length per part ({len(parts)}), got {durations!r}")
    frames, channels = mel.shape[1], mel.shape[2]
    seconds = frames / frame_rate
    pieces, keep, spans = [], [], []
    offset = 0  # first recording frame not yet laid out
    previous_end = 0.0
    length = 0  # frames laid out so far
    for i, part in enumerate(parts):
        if isinstance(part, (str, bytes)) or not isinstance(part, Sequence) or len(part) != 2:
            raise ValueError(f"parts[{i}] must be a (start, end) pair of seconds, got {part!r}")
        start, end = _number(part[0], f"parts[{i}] start"), _number(part[1], f"parts[{i}] end")
        if start < previous_end:
            which = "0 s" if i == 0 else f"the end of parts[{i - 1}] ({previous_end:g} s)"
            raise ValueError(f"parts[{i}] starts at {start:g} s, before {which}: parts must be in order, apart")
        if end < start:
            raise ValueError(f"parts[{i}] ends ({end:g} s) before it starts ({start:g} s)")
        if round(end * frame_rate) > frames:
            raise ValueError(f"parts[{i}] ends at {end:g} s, after the recording ({seconds:.2f} s)")
        new = None if durations is None else durations[i]
        new_seconds = end - start if new is None else _number(new, f"durations[{i}]")
        if new is not None and not 0 < new_seconds <= MAX_EDIT_SECONDS:
            raise ValueError(
                f"durations[{i}] must be positive seconds, at most {MAX_EDIT_SECONDS:g} (an edit is sampled in one "
                f"call), got {new!r}"
            )
        new_frames = round(new_seconds * frame_rate)
        if new_frames < 1:
            raise ValueError(
                f"parts[{i}] would get {new_seconds:g} s of new speech, under one frame (1/{frame_rate:g} s); "
                "give it a longer span or a duration"
            )
        start_frame, end_frame = round(start * frame_rate), round(end * frame_rate)
        kept = mel[:, offset:start_frame]
        check_edit_seconds((length + kept.shape[1] + new_frames) / frame_rate, "the edited recording")
        pieces += [kept, mel.new_zeros(1, new_frames, channels)]
        keep += [torch.ones(kept.shape[1], dtype=torch.bool), torch.zeros(new_frames, dtype=torch.bool)]
        length += kept.shape[1]
        spans.append((length, length + new_frames))
        length += new_frames
        offset, previous_end = end_frame, end
    pieces.append(mel[:, offset:])
    keep.append(torch.ones(frames - offset, dtype=torch.bool))
    cond = torch.cat(pieces, dim=1)
    return EditPlan(cond=cond, keep=torch.cat(keep)[None].to(mel.device), spans=tuple(spans))


def edit_speech(
    model,
    wave: torch.Tensor,
    text: str,
    parts: Sequence[Sequence[float]],
    *,
    vocoder: Callable[[torch.Tensor], torch.Tensor],
    durations: Sequence[float | None] | None = None,
    options: InferenceOptions | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> EditResult:
    """Replace ``parts`` of a recording with speech, so that the whole says ``text``.

    Args:
        model: A :class:`flowtts.CFM`.
        wave: The recording, mono ``(nw,)`` at the model's sample rate.
        text: The transcript of the whole recording after the edit (not just the new words).
        parts: ``(start, end)`` seconds to replace, in order and not overlapping (see :func:`plan_edit`).
        vocoder: Log-mel ``(b, d, n)`` -> wave ``(b, nw)``.
        durations: New length in seconds of each part (default: their own lengths).
        options: :class:`InferenceOptions`: solver steps, guidance, sway or grid, ``target_rms``, ``dtype``
            (the reference-clip, speed and chunking options do not apply).
        seed: Seed of the noise (drawn at random, and returned, when ``None``).
        progress: Show a progress bar over solver steps.

    Returns:
        An :class:`EditResult`. The output has as many frames as the plan: F5-TTS's ``sample`` adds a
        frame past the conditioning, which is dropped here.

    Raises:
        ValueError: An empty or silent recording, a recording or edit longer than :data:`MAX_EDIT_SECONDS`,
            an empty text, a text with more units than the edited recording has frames, ``target_rms``
            not positive, or bad ``parts``/``durations``.
    """
    options = options or InferenceOptions()
    if not torch.is_tensor(wave) or wave.ndim != 1 or wave.numel() == 0:
        raise ValueError(f"wave must be a non-empty mono (samples,) tensor, got {getattr(wave, 'shape', wave)!r}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text (the transcript of the edited recording) is empty")
    if not options.target_rms > 0:
        raise ValueError(f"target_rms must be positive, got {options.target_rms}")
    rms = float(wave.float().pow(2).mean().sqrt())
    if rms == 0:
        raise ValueError("the recording to edit is silent")
    if rms < options.target_rms:
        wave = wave * (options.target_rms / rms)
    rate, hop = model.mel_spec.target_sample_rate, model.mel_spec.hop_length
    check_edit_seconds(wave.numel() / rate)
    with torch.no_grad():
        mel = model.mel_spec(wave[None].to(model.device)).transpose(1, 2)
    plan = plan_edit(mel, parts, durations, frame_rate=rate / hop)
    check_edit_seconds(plan.cond.shape[1] * hop / rate, "the edited recording")
    units = text_units(model, text.strip())
    frames = plan.cond.shape[1]
    n_units = int((model.tokenize([units]) != -1).sum())
    if n_units >= frames:
        raise ValueError(
            f"text has {n_units} units but the edited recording only {frames} frames: "
            "give the parts longer durations or a shorter text"
        )
    seed = choose_seed(seed)
    out, _ = model.sample(
        plan.cond,
        [units],
        frames,
        **options.solver_kwargs(),
        seed=seed,
        edit_mask=plan.keep,
        dtype=options.dtype,
        progress=progress,
    )
    mel_out = out[0, :frames].t().float().cpu()
    with torch.no_grad():  # inference: a graph through the vocoder would keep every activation
        edited = vocoder(mel_out[None])[0].float().cpu()
    if rms < options.target_rms:
        edited = edited * (rms / options.target_rms)
    return EditResult(wave=edited, mel=mel_out, spans=plan.spans, seed=seed, sample_rate=rate)
