"""Vocoding in pieces with context: the pieces join into the whole mel's wave; streaming synthesis uses them."""

from __future__ import annotations

import pytest
import torch

from flowtts.vocoder.files import load_vocoder_file
from flowtts.vocoder.network import MelVocoder, VocoderConfig
from flowtts.vocoder.stream import _pieces, needed_context, vocode_in_chunks
from vocoder.helpers import SMALL_MEL, small_vocoder

FRAMES = 203  # 202 hops of output: not a multiple of most chunk sizes below


@pytest.fixture(scope="module")
def builtin():
    return load_vocoder_file("builtin")


def _mel(d: int, n: int = FRAMES, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.randn(d, n, generator=g).cumsum(dim=1) * 0.1  # speech-like: correlated frames
    return (smooth - smooth.mean()).clamp(-4, 2) - 3


def test_the_context_is_the_networks_reach_plus_the_istfts():
    # 9 convolutions (embedding + 8 blocks) of kernel 7 reach 27 frames; a 1024-sample window at hop 256
    # adds the frames whose centre lies within 512 samples of a sample between two centres: 1 more
    assert needed_context(VocoderConfig()) == 27 + 1
    assert needed_context(VocoderConfig(mel=SMALL_MEL, blocks=1, kernel=3)) == 2 + 1  # n_fft 64, hop 16
    assert needed_context(VocoderConfig(blocks=2, kernel=5)) == 6 + 1


def _check_pieces(vocoder: MelVocoder, mel: torch.Tensor, chunk: int):
    hop = vocoder.config.mel.hop_length
    with torch.no_grad():
        whole = vocoder(mel)[0]
        pieces = list(vocode_in_chunks(vocoder, mel, chunk))
    assert [p.numel() for p in pieces[:-1]] == [chunk * hop] * (len(pieces) - 1)
    assert 0 < pieces[-1].numel() <= chunk * hop
    joined = torch.cat(pieces)
    assert joined.shape == whole.shape == ((mel.shape[-1] - 1) * hop,)
    assert (joined - whole).abs().max() < 1e-4
    for k in range(1, len(pieces)):  # no step at a join: the same sample-to-sample change as the whole wave's
        at = k * chunk * hop
        assert abs((joined[at] - joined[at - 1]) - (whole[at] - whole[at - 1])) < 1e-4
    return whole


@pytest.mark.parametrize("chunk", [1, 7, 50, 64, 96, FRAMES - 2, FRAMES - 1, FRAMES + 5])
def test_pieces_join_into_the_whole_mels_wave_with_the_builtin_vocoder(builtin, chunk):
    _check_pieces(builtin, _mel(100), chunk)


@pytest.mark.parametrize("chunk", [1, 3, 10, 33])
def test_pieces_join_into_the_whole_mels_wave_with_a_random_vocoder(chunk):
    vocoder = small_vocoder(seed=3).eval()
    with torch.no_grad():
        for block in vocoder.blocks:  # a layer scale that makes every frame of context matter
            block.scale.fill_(1.0)
    _check_pieces(vocoder, _mel(SMALL_MEL.n_mel_channels, 61, seed=1), chunk)


def test_too_little_context_leaves_seams_and_is_refused():
    vocoder = small_vocoder(seed=3).eval()
    with torch.no_grad():
        for block in vocoder.blocks:
            block.scale.fill_(1.0)
        mel = _mel(SMALL_MEL.n_mel_channels, 61, seed=1)
        whole = vocoder(mel[None])[0]
        needed = needed_context(vocoder.config)
        errors = {c: float((torch.cat(list(_pieces(vocoder, mel[None], 10, c))) - whole).abs().max()) for c in range(4)}
    assert errors[0] > 1e-4  # no context: seams the checks above catch
    assert errors[needed - 1] > 1e-6 > errors[needed]  # the computed context is the least that is exact
    with pytest.raises(ValueError, match=r"context_frames must be an integer >= 3"):
        vocode_in_chunks(vocoder, mel, 10, context_frames=2)
    assert len(list(vocode_in_chunks(vocoder, mel, 10, context_frames=8))) == 6  # more context is fine


def test_bad_arguments_are_refused(builtin):
    mel = _mel(100, 20)
    with pytest.raises(ValueError, match="chunk_frames must be an integer >= 1"):
        vocode_in_chunks(builtin, mel, 0)
    with pytest.raises(ValueError, match=r"log_mel must have shape \(batch, 100, frames >= 2\)"):
        vocode_in_chunks(builtin, mel[:80], 8)
    with pytest.raises(ValueError, match="one mel"):
        vocode_in_chunks(builtin, torch.stack([mel, mel]), 8)
    with pytest.raises(TypeError, match="must be a MelVocoder"):
        vocode_in_chunks(lambda m: m, mel, 8)


def test_gradients_flow_through_the_pieces(builtin):
    mel = _mel(100, 40).requires_grad_()
    sum(p.pow(2).sum() for p in vocode_in_chunks(builtin, mel, 16)).backward()
    assert mel.grad is not None and mel.grad.abs().sum() > 0


def test_streaming_synthesis_with_the_neural_vocoder_leaves_early_and_joins_to_synthesize(monkeypatch):
    """``stream`` yields a chunk's audio in pieces as they are vocoded; joined they are ``synthesize``'s wave."""
    import flowtts.synthesis.speech as speech
    from conftest import randomise
    from flowtts.model.build import build_model
    from flowtts.synthesis import InferenceOptions, prepare_reference, stream, synthesize

    model = randomise(build_model("tiny"), std=0.02).eval()
    g = torch.Generator().manual_seed(0)
    wave = torch.sin(torch.arange(24000) / 5.0) * 0.1 + 0.01 * torch.randn(24000, generator=g)
    options = InferenceOptions(steps=2)
    reference = prepare_reference(model, wave, "A clip.", options)
    vocoder = load_vocoder_file("builtin")
    monkeypatch.setattr(speech, "STREAM_FRAMES", 24)  # several pieces per chunk of this short text
    text = "A first sentence that is rather long, to make chunks. " * 3 + "End."
    pieces = list(stream(model, reference, text, vocoder=vocoder, options=options, seed=4))
    (whole,) = synthesize(model, reference, [text], vocoder=vocoder, options=options, seeds=[4], progress=False)
    assert all(p.grad_fn is None for p in pieces) and whole.wave.grad_fn is None  # no graph kept: inference
    frames = whole.mel.shape[1]
    assert len(pieces) > frames // 24 // 2  # in pieces, not one per text chunk
    joined = torch.cat(pieces)
    assert joined.shape == whole.wave.shape
    assert (joined - whole.wave).abs().max() < 1e-4


def test_streaming_does_not_leave_grad_mode_off_between_pieces():
    import flowtts.synthesis.speech as speech
    from flowtts.synthesis import InferenceOptions
    from flowtts.synthesis.reference import Reference

    vocoder = small_vocoder().eval()
    reference = Reference.__new__(Reference)
    reference.rms = 1.0
    seen = []
    for piece in speech._wave_pieces(vocoder, _mel(SMALL_MEL.n_mel_channels, 300), reference, InferenceOptions()):
        seen.append(torch.is_grad_enabled())
        assert piece.grad_fn is None
    assert len(seen) > 1 and all(seen)
