"""Scoring models on held-out sentences: word error rate, speaker similarity and predicted quality.

What F5-TTS's evaluation scripts report for a test set (WER from a recogniser, SIM from a speaker
encoder), with the offline tools available here: pocketsphinx's generic English model for WER (the
``eval`` extra) and resemblyzer's GE2E encoder for SIM (:mod:`flowtts.eval.speaker`; the column is
left out when its weights are not installed); and, asked for, DNSMOS's P.808 quality prediction
(:mod:`flowtts.eval.dnsmos`; the column says how to install it when ``speechmos`` is missing). The
corpus recordings of the same sentences are scored the same way, which puts the numbers in proportion:
the recogniser and the encoder are far weaker than Whisper and WavLM, so a model is judged against what
its own training audio gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

DNSMOS_MISSING = "n/a: pip install 'flowtts[eval]'"  # the DNSMOS column without speechmos and onnxruntime


@dataclass
class SystemScore:
    """One row of an evaluation.

    Attributes:
        label: What was scored.
        wer: Corpus word error rate over the sentences.
        sim: Mean speaker-embedding cosine to the prompt, or ``None`` without the encoder.
        seconds: Synthesis wall time (``None`` for recordings).
        audio_seconds: Total audio length scored.
        transcripts: What the recogniser heard, one per sentence.
        sims: Per-sentence cosines (empty without the encoder).
        ctc_wer: Word error rate of the CTC recogniser reading the mels (``None`` without one).
        ctc_transcripts: What the CTC recogniser heard, one per sentence.
        dnsmos: Mean DNSMOS P.808 MOS over the sentences, a note saying why there is none (e.g.
            :data:`DNSMOS_MISSING`), or ``None`` when not asked for.
        dnsmos_scores: Per-sentence P.808 MOS (``None`` for a silent wave; empty when not scored).
    """

    label: str
    wer: float
    sim: float | None
    seconds: float | None
    audio_seconds: float
    transcripts: list[str] = field(default_factory=list)
    sims: list[float] = field(default_factory=list)
    ctc_wer: float | None = None
    ctc_transcripts: list[str] = field(default_factory=list)
    dnsmos: float | str | None = None
    dnsmos_scores: list[float | None] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        """The row as printed and written to CSV."""
        return {
            "system": self.label,
            "utterances": str(len(self.transcripts)),
            "WER": f"{self.wer:.3f}",
            "CTC WER": "" if self.ctc_wer is None else f"{self.ctc_wer:.3f}",
            "SIM": "" if self.sim is None else f"{self.sim:.3f}",
            "DNSMOS": _dnsmos_cell(self.dnsmos),
            "audio s": f"{self.audio_seconds:.1f}",
            "synthesis s": "" if self.seconds is None else f"{self.seconds:.1f}",
            "RTF": "" if self.seconds is None else f"{self.seconds / max(self.audio_seconds, 1e-9):.3f}",
        }


def _dnsmos_cell(value: float | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else f"{value:.2f}"


def speaker_similarity_or_none(mel_spec):
    """A :class:`flowtts.eval.speaker.SpeakerSimilarity` for ``mel_spec``, or ``None`` without resemblyzer."""
    from flowtts.eval.speaker import SpeakerSimilarity

    try:
        return SpeakerSimilarity(mel_spec).eval()
    except ImportError:
        return None


@torch.no_grad()
def _cosine(similarity, prompt_mel: torch.Tensor, mel: torch.Tensor) -> float:
    """Cosine of the speaker embeddings of two log-mels ``(n, d)``."""
    return float((similarity.embed(prompt_mel.float()) * similarity.embed(mel.float())).sum())


def score_model(
    model,
    texts: Sequence[str],
    references: Sequence,
    *,
    asr: Callable,
    options,
    vocoder: Callable,
    similarity=None,
    seeds: Sequence[int] | None = None,
    label: str = "model",
    progress: bool = False,
    on_utterance: Callable | None = None,
    recognizer=None,
    dnsmos: bool = False,
) -> SystemScore:
    """Synthesise each text in the voice of its reference and score the result.

    Args:
        model: A :class:`flowtts.CFM`.
        texts: Sentences to speak.
        references: One :class:`flowtts.synthesis.Reference` per text (the same one repeated for a
            single voice); texts sharing a reference are synthesised in batches.
        asr: ``(wave, sample_rate) -> transcript``.
        options: :class:`flowtts.synthesis.InferenceOptions`.
        vocoder: Log-mel ``(b, d, n)`` -> wave.
        similarity: A speaker-similarity module, or ``None`` to leave SIM out.
        seeds: One per text (default ``0..n-1``).
        label: Row label.
        progress: Progress bar over sampler calls.
        on_utterance: Called with ``(index, utterance)`` for each result (e.g. to save it).
        recognizer: A :class:`flowtts.eval.recognizer.CTCRecognizer` that also reads each generated mel
            (the ``CTC WER`` column), or ``None``.
        dnsmos: Also predict each wave's quality (the ``DNSMOS`` column: P.808 MOS; :data:`DNSMOS_MISSING`
            without ``speechmos`` and ``onnxruntime``).
    """
    from flowtts.synthesis import synthesize

    if len(references) != len(texts):
        raise ValueError(f"got {len(references)} references for {len(texts)} texts")
    seeds = list(range(len(texts))) if seeds is None else list(seeds)
    groups: dict[int, list[int]] = {}
    for i, ref in enumerate(references):
        groups.setdefault(id(ref), []).append(i)
    results = [None] * len(texts)
    start = time.perf_counter()
    for indices in groups.values():
        out = synthesize(
            model,
            references[indices[0]],
            [texts[i] for i in indices],
            vocoder=vocoder,
            options=options,
            seeds=[seeds[i] for i in indices],
            progress=progress,
        )
        for i, utterance in zip(indices, out):
            results[i] = utterance
    seconds = time.perf_counter() - start
    return _score(label, texts, results, references, asr, similarity, seconds, on_utterance, recognizer, dnsmos)


def score_recordings(
    waves: Sequence[torch.Tensor],
    texts: Sequence[str],
    references: Sequence,
    *,
    sample_rate: int,
    mel_spec,
    asr: Callable,
    similarity=None,
    label: str = "corpus recordings",
    recognizer=None,
    dnsmos: bool = False,
) -> SystemScore:
    """Score recordings of the texts (waves at ``sample_rate``, the model's rate) like a model's output."""
    from flowtts.synthesis import Utterance

    results = []
    with torch.no_grad():
        for wave, text in zip(waves, texts):
            mel = mel_spec(wave[None].float())[0]
            results.append(Utterance(text=text, wave=wave, mel=mel, seed=0, sample_rate=sample_rate))
    return _score(label, texts, results, references, asr, similarity, None, None, recognizer, dnsmos)


def _predicted_quality(results) -> tuple[float | str, list[float | None]]:
    """The mean DNSMOS P.808 MOS of ``results``' waves and each one's (``None``: silent), or a note."""
    from flowtts.eval.dnsmos import dnsmos, dnsmos_available

    if not dnsmos_available():
        return DNSMOS_MISSING, []
    scores = []
    for utterance in results:
        try:
            scores.append(dnsmos(utterance.wave.float(), utterance.sample_rate).p808)
        except ValueError:  # a silent or non-finite wave has no quality to predict
            scores.append(None)
    heard = [s for s in scores if s is not None]
    return (sum(heard) / len(heard) if heard else "n/a: silent"), scores


def _score(
    label, texts, results, references, asr, similarity, seconds, on_utterance, recognizer=None, dnsmos=False
) -> SystemScore:
    from flowtts.eval.wer import word_error_rate

    transcripts, sims, audio, heard = [], [], 0.0, []
    for i, (utterance, ref) in enumerate(zip(results, references)):
        transcripts.append(asr(utterance.wave, utterance.sample_rate))
        if recognizer is not None:
            heard.append(recognizer.transcribe(utterance.mel.t()[None].float())[0])
        audio += utterance.wave.numel() / utterance.sample_rate
        if similarity is not None:
            sims.append(_cosine(similarity, ref.mel[0], utterance.mel.t()))
        if on_utterance is not None:
            on_utterance(i, utterance)
    quality, quality_scores = _predicted_quality(results) if dnsmos else (None, [])
    return SystemScore(
        label=label,
        wer=word_error_rate(texts, transcripts),
        sim=sum(sims) / len(sims) if sims else None,
        seconds=seconds,
        audio_seconds=audio,
        transcripts=transcripts,
        sims=sims,
        ctc_wer=word_error_rate(texts, heard) if recognizer is not None else None,
        ctc_transcripts=heard,
        dnsmos=quality,
        dnsmos_scores=quality_scores,
    )


def format_scores(scores: Sequence[SystemScore]) -> str:
    """The scores as an aligned text table (a column is dropped when no row has a value in it)."""
    rows = [s.row() for s in scores]
    columns = [c for c in rows[0] if any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    line = "  ".join(c.ljust(widths[c]) if c == "system" else c.rjust(widths[c]) for c in columns)
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(r[c].ljust(widths[c]) if c == "system" else r[c].rjust(widths[c]) for c in columns))
    return "\n".join(out)
