"""The reference clip: reading, clipping, trimming, loudness and its mel, as F5-TTS prepares it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowtts.synthesis.options import InferenceOptions
from flowtts.text.units import end_reference

log = logging.getLogger("flowtts")


@dataclass
class Reference:
    """A prepared reference clip."""

    mel: torch.Tensor  # (1, n, d)
    text: str  # what the model reads before the new text
    rms: float
    seconds: float
    pipeline: str = "flowtts"  # the rules it was prepared by (flowtts.synthesis.pipeline)
    # Reference frames the duration rule counts and the output is cut after; None: all of mel's. F5-TTS's
    # pipeline counts samples // hop, one frame fewer than the centred mel, and so keeps its last frame.
    frames: int | None = None
    transcript: str | None = None  # the transcript chunk sizes are computed from (None: text)

    @property
    def cut(self) -> int:
        """Frames of the reference before the generated ones (see ``frames``)."""
        return self.mel.shape[1] if self.frames is None else self.frames


def prepare_reference(model, wave: torch.Tensor, text: str, options: InferenceOptions) -> Reference:
    """Clip, trim, normalise and embed a reference wave (already mono at the model's rate).

    As in F5-TTS: a clip longer than ``max_ref_seconds`` is cut inside a pause where it has one
    (a warning says so: its transcript should then be shortened to match), leading and trailing
    silence is dropped and ``options.ref_silence`` seconds of silence appended (F5-TTS: 50 ms; a model
    file can ask for more, see :func:`flowtts.synthesis.options.model_defaults`), and a clip quieter
    than ``target_rms`` is raised to it.

    With ``options.pipeline == "f5tts"`` the clip is prepared by F5-TTS's rules instead
    (:func:`flowtts.synthesis.pipeline.prepared_wave`), on its 16-bit samples at the model's rate
    (:func:`load_reference` reads a file at its own rate and width, as F5-TTS does).

    Raises:
        ValueError: A silent clip, one with NaN or infinite samples, one shorter than ``min_ref_seconds``
            after trimming, an empty transcript, or a ``ref_silence`` out of range.
    """
    from flowtts.audio.silence import clip_at_pause, silent_windows, trim_edges
    from flowtts.synthesis.options import check_ref_silence

    check_ref_silence(options.ref_silence)
    if not bool(torch.isfinite(wave).all()):
        raise ValueError("reference audio contains NaN or infinite samples: it is damaged")
    if getattr(options, "pipeline", "flowtts") == "f5tts":
        from flowtts.audio.pcm import PcmClip
        from flowtts.synthesis import pipeline

        clip = PcmClip.from_float(wave.detach().cpu().numpy(), model.mel_spec.target_sample_rate)
        return _prepare_reference_f5tts(model, pipeline.prepared_wave(clip, options)[0], text, options)

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
    wave = torch.cat((wave, wave.new_zeros(int(options.ref_silence * rate))))
    seconds = wave.numel() / rate
    text = text.strip()
    if not text:
        raise ValueError("the reference transcript (--ref-text) is empty")
    rms = float(wave.pow(2).mean().sqrt())
    if rms < options.target_rms:
        wave = wave * (options.target_rms / max(rms, 1e-8))
    text = end_reference(text)  # F5-TTS separates the reference transcript from the new text with a sentence end
    with torch.no_grad():
        mel = model.mel_spec(wave[None].to(model.device)).transpose(1, 2)
    return Reference(mel=mel, text=text, rms=rms, seconds=seconds)


def load_reference(
    model,
    ref_file: str | None,
    ref_text: str | None,
    options: InferenceOptions,
    *,
    on_transcript: Callable[[str], None] | None = None,
    transcribe: Callable[[torch.Tensor, int], str] | None = None,
) -> Reference:
    """Read, clip, normalise and embed a reference clip; the built-in one when ``ref_file`` is ``None``.

    Args:
        model: A :class:`flowtts.CFM`.
        ref_file: Any audio file soundfile reads (resampled to the model's rate, downmixed to mono).
        ref_text: Its transcript; ``None`` or empty: made by ``transcribe``.
        options: :class:`InferenceOptions` (reference length limits, ``target_rms``).
        on_transcript: Called with a transcript that was recognised rather than given.
        transcribe: ``(wave, sample_rate) -> transcript`` for a clip without one (e.g.
            :func:`flowtts.audio.transcribe.transcribe_reference`, offline English); ``None``: a transcript is needed.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable or too short audio, nothing recognised, or no transcript and no ``transcribe``.
        ImportError: ``transcribe`` needs a package that is not installed.
    """
    from flowtts.audio.io import read_audio

    if ref_file is None:
        from flowtts.checkpoints.loader import builtin_reference

        ref_file, ref_text = builtin_reference(ref_text or None)
    rate = model.mel_spec.target_sample_rate
    if getattr(options, "pipeline", "flowtts") == "f5tts":
        return _load_reference_f5tts(model, ref_file, ref_text, options, on_transcript, transcribe)
    wave, _ = read_audio(ref_file, rate)
    if not (ref_text or "").strip():
        if transcribe is None:
            raise ValueError("the reference clip has no transcript: give its text (or a transcriber)")
        ref_text = transcribe(wave, rate)
        if on_transcript is not None:
            on_transcript(ref_text)
    return prepare_reference(model, wave, ref_text, options)


def _load_reference_f5tts(model, ref_file, ref_text, options, on_transcript, transcribe) -> Reference:
    """F5-TTS's ``preprocess_ref_audio_text``: the file's own samples (rate, channels, width) are clipped,
    and a missing transcript is made from the clipped clip (utils_infer.py:316-363)."""
    from flowtts.audio.pcm import PcmClip
    from flowtts.synthesis import pipeline
    from flowtts.synthesis.options import check_ref_silence

    check_ref_silence(options.ref_silence)
    clip, _ = pipeline.prepared_wave(PcmClip.read(ref_file), options)
    if not (ref_text or "").strip():
        if transcribe is None:
            raise ValueError("the reference clip has no transcript: give its text (or a transcriber)")
        rate = model.mel_spec.target_sample_rate
        ref_text = transcribe(pipeline.level_and_resample(clip, rate, 0.0)[0], rate)
        if on_transcript is not None:
            on_transcript(ref_text)
    return _prepare_reference_f5tts(model, clip, ref_text, options)


def _prepare_reference_f5tts(model, clip, text: str, options) -> Reference:
    """A :class:`Reference` prepared as F5-TTS prepares it, from a clip :func:`pipeline.prepared_wave` made.

    Raises:
        ValueError: An empty transcript.
    """
    from flowtts.synthesis import pipeline

    if not text.strip():
        raise ValueError("the reference transcript (--ref-text) is empty")
    rate, hop = model.mel_spec.target_sample_rate, model.mel_spec.hop_length
    wave, rms = pipeline.level_and_resample(clip, rate, options.target_rms)
    transcript = pipeline.end_transcript(text)
    with torch.no_grad():
        mel = model.mel_spec(wave[None].to(model.device)).transpose(1, 2)
    return Reference(
        mel=mel,
        text=pipeline.model_transcript(transcript),
        rms=float(rms),
        seconds=clip.frames / clip.rate,  # utils_infer.py:404: the clip with its pause, at its own rate
        pipeline="f5tts",
        frames=wave.numel() // hop,  # utils_infer.py:498: samples // hop_length
        transcript=transcript,
    )
