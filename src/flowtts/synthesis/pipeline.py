"""F5-TTS's own inference pipeline, rule by rule, so that an F5-TTS checkpoint speaks as under F5-TTS.

flowtts samples with upstream's numerics (``sample()`` equals F5-TTS's to 1e-6), but what surrounds the
sampler -- how the reference clip is cut and levelled, how its transcript ends, how long each chunk is,
where the reference is cut off the output -- decides the output's length, and so everything else. Two
pipelines share ``sample()``:

``"f5tts"``
    What ``F5TTS.infer`` and ``f5-tts_infer-cli`` of F5-TTS 1.1.22 do (``infer/utils_infer.py``,
    ``api.py``), quirks included. The default for F5-TTS checkpoints (files that record nothing of
    flowtts's own: :func:`default_pipeline`).
``"flowtts"``
    flowtts's own rules (:mod:`flowtts.synthesis.reference`, :mod:`flowtts.synthesis.speech`): one silence
    threshold, exact 50 ms pause, no doubled space, the reference's frames all kept out of the output. The
    default for flowtts's files (the built-in models), whose recorded settings (speaking-rate factor,
    pause, level, unprompted speech) were measured with it.

Each rule below cites the upstream line (f5_tts 1.1.22) that defines it; the code is flowtts's own.
The quirks the ``"f5tts"`` pipeline keeps, and that ``"flowtts"`` avoids:

1. the reference is clipped with two silence thresholds (-50 dBFS in 1 s windows to find where to cut a
   clip over 12 s, -42 dBFS in 10 ms chunks to trim its edges), measured in whole milliseconds at the
   file's own rate, so a quiet clip loses more of its speech;
2. the "50 ms" pause appended to it is pydub's 11025 Hz silence converted to the clip's rate (1198
   samples at 24 kHz);
3. the transcript gets ``". "`` (``"!"`` becomes ``"!. "``) and then one more space, and the duration rule
   divides by those bytes;
4. the reference length in the duration rule and the cut is ``samples // hop``, one frame less than its
   mel (centred STFT): each chunk's output starts with the reference's last frame;
5. chunks are sized from the transcript's bytes per second of clip with no lower bound, and measured
   with a space after each piece;
6. ``remove_silence`` in ``F5TTS.infer`` shortens only the file written (``file_wave``), not the returned
   wave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from flowtts.audio.pcm import PcmClip, silence, split_on_silence, trim_silent_edges

log = logging.getLogger("flowtts")

PIPELINES = ("f5tts", "flowtts")

# utils_infer.py:319-321 and 331-333: where to clip a long reference, first at pauses of >= 1 s below
# -50 dBFS, then at pauses of >= 0.1 s below -40 dBFS; each sounding part keeps up to 1 s of its pause.
LONG_PAUSES = dict(min_silence_len=1000, silence_thresh=-50, keep_silence=1000, seek_step=10)
SHORT_PAUSES = dict(min_silence_len=100, silence_thresh=-40, keep_silence=1000, seek_step=10)
EDGE_THRESHOLD = -42  # utils_infer.py:279: remove_silence_edges trims 10 ms chunks quieter than this (dBFS)
# utils_infer.py:614-616: remove_silence splits the output at pauses of >= 1 s below -50 dBFS, keeping 0.5 s.
OUTPUT_PAUSES = dict(min_silence_len=1000, silence_thresh=-50, keep_silence=500, seek_step=10)
CHUNK_SECONDS = 22  # utils_infer.py:404: chunks are sized for (22 s - the clip) of speech
SHORT_CHUNK_BYTES, SHORT_CHUNK_SPEED = 10, 0.3  # utils_infer.py:491-492: chunks under 10 bytes at speed 0.3
RESAMPLE = dict(width_zeros=6, rolloff=0.99)  # utils_infer.py:467: torchaudio's Resample with its defaults


def default_pipeline(model) -> str:
    """``"f5tts"`` for a model loaded from an F5-TTS checkpoint, ``"flowtts"`` otherwise.

    An F5-TTS checkpoint records nothing of flowtts's (:func:`flowtts.load` marks the model's
    ``checkpoint_format`` and leaves its ``metadata`` ``None``); flowtts's files, the built-in models among
    them, carry ``metadata``, and a model built in memory was read from no file.
    """
    return "f5tts" if model.checkpoint_format == "f5tts" and model.metadata is None else "flowtts"


def check_pipeline(value) -> None:
    """Raise ``ValueError`` unless ``value`` names a pipeline (:data:`PIPELINES`)."""
    if value not in PIPELINES:
        raise ValueError(f"pipeline must be one of {', '.join(map(repr, PIPELINES))}, got {value!r}")


# ---------------------------------------------------------------------------------------------- reference


def clip_reference(clip: PcmClip, max_seconds: float = 12.0, on_clip: Callable[[str], None] | None = None) -> PcmClip:
    """The part of ``clip`` F5-TTS keeps as a reference, before its pause is appended
    (``preprocess_ref_audio_text``, utils_infer.py:316-348).

    A clip is rebuilt from its sounding parts (each with up to 1 s of the pause around it) found at
    long pauses, adding parts while the result is at most 6 s long or stays within 12 s; if that is
    still over 12 s, the same is tried at short pauses; if that fails too, the first 12 s are kept.
    Then leading and trailing 10 ms chunks quieter than -42 dBFS are trimmed. ``max_seconds`` stands for
    the 12 s (and its half for the 6 s); lengths are pydub's whole milliseconds (:mod:`flowtts.audio.pcm`).
    """
    limit = max_seconds * 1000

    def rebuild(pauses: dict, attempt: int) -> PcmClip:
        # utils_infer.py:322-327: stop before a part that would take a result already over half the limit
        # past the limit
        result = clip.empty()
        for part in split_on_silence(clip, **pauses):
            if len(result) > limit / 2 and len(result + part) > limit:
                if on_clip is not None:
                    on_clip(f"clipped at a pause ({attempt})")
                break
            result = result + part
        return result

    kept = rebuild(LONG_PAUSES, 1)
    if len(kept) > limit:
        kept = rebuild(SHORT_PAUSES, 2)
    if len(kept) > limit:  # utils_infer.py:344-346: no pause to cut at
        kept = kept.cut(0, limit)
        if on_clip is not None:
            on_clip("cut at the limit (3)")
    return trim_silent_edges(kept, EDGE_THRESHOLD)


def end_transcript(text: str) -> str:
    """The transcript as ``preprocess_ref_audio_text`` ends it (utils_infer.py:370-374): unchanged when it
    ends in ``". "`` or ``"。"``, one space after a final ``"."``, otherwise ``". "`` (also after ``"!"``,
    ``"?"`` or a space: the text is not stripped)."""
    if text.endswith(". ") or text.endswith("。"):
        return text
    return text + " " if text.endswith(".") else text + ". "


def model_transcript(transcript: str) -> str:
    """What the model reads before the new text, and what the duration rule counts: the ended transcript
    with one more space when its last character is one UTF-8 byte (``infer_batch_process``,
    utils_infer.py:474-475), e.g. ``"Hello.  "``."""
    return transcript + " " if len(transcript[-1].encode("utf-8")) == 1 else transcript


def prepared_wave(clip: PcmClip, options) -> tuple[PcmClip, float]:
    """The reference F5-TTS feeds the model, as integer PCM at the clip's own rate (pause appended), and
    the seconds of speech in it.

    Raises:
        ValueError: Nothing is left after clipping (F5-TTS would then divide by an RMS of 0 and output NaN),
            or less than ``options.min_ref_seconds`` of speech.
    """

    def say(what):
        log.warning("reference audio over %g s %s, as F5-TTS does; its transcript must match", limit, what)

    limit = options.max_ref_seconds
    kept = clip_reference(clip, limit, say)
    if kept.frames == 0 or not kept.samples.any():
        raise ValueError(
            "reference audio is silent (nothing above -42 dBFS after F5-TTS's clipping; F5-TTS would output NaN)"
        )
    seconds = kept.frames / kept.rate
    if seconds < options.min_ref_seconds:
        raise ValueError(
            f"reference audio is {seconds:.2f} s long without its leading and trailing silence; "
            f"at least {options.min_ref_seconds} s of speech is needed"
        )
    # utils_infer.py:348: the pause is pydub's silence, made at 11025 Hz and converted to the clip's rate
    return kept + silence(kept, options.ref_silence * 1000), seconds


def level_and_resample(clip: PcmClip, rate: int, target_rms: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(wave, rms)``: the prepared clip as F5-TTS reads it back and levels it (utils_infer.py:403 and
    459-468): float32 samples ``int / full_scale`` (torchaudio's normalisation), channels averaged, RMS
    taken, raised to ``target_rms`` when quieter, *then* resampled to ``rate`` (the order matters for a
    clip at another rate)."""
    from flowtts.audio.resample import resample

    channels = torch.from_numpy((clip.samples / clip.full_scale).astype(np.float32).T.copy())
    wave = channels.mean(dim=0, keepdim=True) if channels.shape[0] > 1 else channels
    rms = torch.sqrt(torch.mean(torch.square(wave)))
    if rms < target_rms:
        wave = wave * target_rms / rms
    if clip.rate != rate:
        wave = resample(wave, clip.rate, rate, **RESAMPLE)
    return wave[0], rms


# ------------------------------------------------------------------------------------------------- text


def max_chars(transcript: str, seconds: float, speed: float) -> int:
    """The chunk size in UTF-8 bytes (utils_infer.py:404): the transcript's bytes (ended, without the extra
    space) per second of clip (pause included) times the seconds left of 22, times ``speed``; no floor."""
    return int(len(transcript.encode("utf-8")) / seconds * (CHUNK_SECONDS - seconds) * speed)


def fix_durations(
    fix_duration: float | None, chunks: list[str], ref_frames: int, hop: int, rate: int, cross_fade: float
) -> list[float | None]:
    """Seconds of reference + speech for each chunk (utils_infer.py:477-487, new in 1.1.22).

    One chunk takes ``fix_duration`` whole. Several share the speech time (``fix_duration`` less the
    reference's ``frames * hop / rate`` seconds, plus one cross-fade per join, which the joins take back) in
    proportion to their UTF-8 bytes, each on top of the reference's seconds.
    """
    if fix_duration is None or len(chunks) < 2:
        return [fix_duration] * len(chunks)
    ref_seconds = ref_frames * hop / rate
    weights = [len(chunk.encode("utf-8")) for chunk in chunks]
    total = sum(weights)
    shared = fix_duration - ref_seconds + cross_fade * (len(chunks) - 1)
    return [ref_seconds + shared * weight / total for weight in weights]


def chunk_frames(
    chunk: str, fixed: float | None, ref_frames: int, ref_bytes: int, speed: float, hop: int, rate: int
) -> int:
    """Frames of reference + speech asked of ``sample()`` for one chunk (utils_infer.py:490-505).

    With a fixed length: ``int(seconds * rate / hop)``. Otherwise the reference's frames per byte of what
    the model reads for it (:func:`model_transcript`) times the chunk's bytes, divided by the speed --
    0.3 for a chunk under 10 bytes -- truncated, on top of the reference's frames.
    """
    if fixed is not None:
        return int(fixed * rate / hop)
    chunk_bytes = len(chunk.encode("utf-8"))
    local_speed = SHORT_CHUNK_SPEED if chunk_bytes < SHORT_CHUNK_BYTES else speed
    return ref_frames + int(ref_frames / ref_bytes * chunk_bytes / local_speed)


def units(model, text: str):
    """What F5-TTS's inference gives the model for ``text`` (utils_infer.py:496): ``convert_char_to_pinyin``
    for every text, Chinese or not, so ``;`` reads as ``,``, curly quotes as straight ones, and jieba's word
    boundaries add spaces (``"well-known"`` reads ``"well- known"``). A model without a vocabulary
    (UTF-8 bytes, which F5-TTS's inference never builds) reads the text as it is."""
    if model.vocab_char_map is None:
        return text
    from flowtts.text.pinyin import f5tts_units

    return f5tts_units(text)


# ------------------------------------------------------------------------------------------------ output


def remove_silence(wave: torch.Tensor, rate: int) -> torch.Tensor:
    """F5-TTS's ``remove_silence_for_generated_wav`` (utils_infer.py:612-621) on a wave about to be written.

    F5-TTS writes the wave (16-bit), splits the file at pauses of >= 1 s below -50 dBFS keeping 0.5 s of
    each, and writes the parts joined. The parts are found here on the same 16-bit samples (soundfile's
    own conversion, in memory) and cut from the float wave, so that the file written is F5-TTS's.
    """
    import io

    import soundfile as sf

    from flowtts.audio.pcm import ms_range, sounding_ranges

    data = np.clip(wave.detach().float().cpu().numpy(), -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    written, _ = sf.read(buffer, dtype="int16", always_2d=True)
    clip = PcmClip(written.astype(np.int64), rate)
    pieces = []
    for start, end in sounding_ranges(clip, **OUTPUT_PAUSES):
        first, last, missing = ms_range(clip, start, end)
        pieces.append(wave[first : min(last, wave.numel())])
        if missing:
            pieces.append(wave.new_zeros(missing))
    return torch.cat(pieces) if pieces else wave[:0]
