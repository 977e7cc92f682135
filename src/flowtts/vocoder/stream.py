"""Vocoding a long mel in pieces that join into exactly the wave of the whole mel.

A :class:`~flowtts.vocoder.network.MelVocoder` sees a bounded stretch of frames: each of its convolutions
(the embedding and one depthwise convolution per ConvNeXt block) widens a frame's view by ``kernel // 2``
frames on each side, everything else in the network works frame by frame, and the inverse STFT adds to
a sample only the frames whose window covers it (``n_fft / 2`` samples on either side of a frame's centre).
So the samples between two frame centres depend on a known number of frames around them
(:func:`needed_context`), and vocoding a piece with that many frames of context on each side, then
cutting the context's samples off at hop boundaries, gives the whole mel's samples: the pieces join with
no seam, and the first can be played while the rest is vocoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from flowtts.vocoder.network import MelVocoder, VocoderConfig


def needed_context(config: VocoderConfig) -> int:
    """Frames of mel on each side of a stretch of frames that its samples depend on.

    The network reaches ``kernel // 2`` frames further per convolution (the embedding's and one per
    block). The inverse STFT adds to a sample the frames whose centre lies less than ``n_fft / 2`` samples
    away (the window, of at most ``n_fft`` samples, is centred in the frame), and normalises it by those
    frames' squared windows: for the samples from frame ``s``'s centre up to frame ``e``'s, frames
    ``s - r`` to ``e + r`` with ``r = (n_fft / 2 - 1) // hop``.
    """
    network = (config.kernel // 2) * (config.blocks + 1)
    mel = config.mel
    synthesis = (mel.n_fft // 2 - 1) // mel.hop_length
    return network + synthesis


def vocode_in_chunks(
    vocoder: MelVocoder, log_mel: torch.Tensor, chunk_frames: int, context_frames: int | None = None
) -> Iterator[torch.Tensor]:
    """The wave of ``log_mel`` ``(d, n)``, ``chunk_frames`` hops at a time.

    Piece ``k`` holds the samples from frame centre ``k * chunk_frames`` up to the next piece's (the last
    piece up to the last frame's centre: ``(n - 1) * hop`` samples in all, as ``vocoder(log_mel)``); each is
    vocoded from its frames and ``context_frames`` more on each side where the mel has them. Concatenated, the
    pieces are ``vocoder(log_mel)[0]`` up to float rounding. Gradients flow as through the vocoder.

    Args:
        vocoder: The neural vocoder.
        log_mel: One log-mel ``(d, n)`` (or ``(1, d, n)``) of the vocoder's front end, ``n >= 2``.
        chunk_frames: Hops of output per piece (the last piece may be shorter).
        context_frames: Frames of context on each side; at least (and by default) :func:`needed_context`.

    Yields:
        1-D waves of ``chunk_frames * hop`` samples (the last one of what is left).

    Raises:
        TypeError: ``vocoder`` is not a :class:`~flowtts.vocoder.network.MelVocoder`.
        ValueError: A mel of another shape or a batch of several, ``chunk_frames`` not an integer >= 1, or
            ``context_frames`` under what the vocoder needs (naming it).
    """
    if not isinstance(vocoder, MelVocoder):
        raise TypeError(f"vocoder must be a MelVocoder (its reach is known), got {type(vocoder).__name__}")
    log_mel = vocoder.check_mel(log_mel)
    if log_mel.shape[0] != 1:
        raise ValueError(f"log_mel must be one mel (d, n), got a batch of {log_mel.shape[0]}")
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}")
    needed = needed_context(vocoder.config)
    context = needed if context_frames is None else context_frames
    if isinstance(context, bool) or not isinstance(context, int) or context < needed:
        raise ValueError(
            f"context_frames must be an integer >= {needed} (the frames this vocoder's samples depend on), "
            f"got {context!r}"
        )
    return _pieces(vocoder, log_mel, chunk_frames, context)


def _pieces(vocoder: MelVocoder, log_mel: torch.Tensor, chunk_frames: int, context: int) -> Iterator[torch.Tensor]:
    hop = vocoder.config.mel.hop_length
    last = log_mel.shape[2] - 1  # the output ends at the last frame's centre
    for start in range(0, last, chunk_frames):
        end = min(start + chunk_frames, last)
        lo, hi = max(0, start - context), min(last, end + context)
        wave = vocoder(log_mel[:, :, lo : hi + 1])[0]  # samples from frame lo's centre to frame hi's
        yield wave[(start - lo) * hop : (end - lo) * hop]
