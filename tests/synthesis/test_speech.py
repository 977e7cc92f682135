import pytest
import torch

from flowtts.audio.crossfade import cross_fade
from flowtts.model.build import build_model
from flowtts.synthesis import InferenceOptions, prepare_reference
from flowtts.text.chunking import chunk_text


def test_chunk_text_splits_at_sentence_ends_within_budget():
    text = "First sentence here. Second one, with a clause! Third? Fourth and last."
    chunks = chunk_text(text, 30)
    assert " ".join(chunks) == text
    assert all(len(c.encode()) <= 30 for c in chunks)
    assert chunk_text("short", 30) == ["short"]
    assert chunk_text("no breaks at all in this rather long piece of text", 10) == [
        "no breaks at all in this rather long piece of text"
    ]


def test_cross_fade_lengths_and_continuity():
    a, b = torch.ones(100), torch.zeros(50)
    out = cross_fade([a, b], 20)
    assert out.numel() == 130
    assert out[79] == 1 and out[99] == 0 and 0 < out[90] < 1
    assert cross_fade([a], 20) is a


def _upstream_join(waves, samples):
    """F5-TTS's join of chunk waves (infer_batch_process, f5-tts 1.1.22), restated in float64 numpy: each
    next wave overlaps the output so far by min(samples, len(output), len(next)), with linspace fades."""
    import numpy as np

    out = np.asarray(waves[0], dtype=np.float64)
    for wave in waves[1:]:
        nxt = np.asarray(wave, dtype=np.float64)
        n = min(samples, len(out), len(nxt))
        if n <= 0:
            out = np.concatenate([out, nxt])
            continue
        faded = out[-n:] * np.linspace(1, 0, n) + nxt[:n] * np.linspace(0, 1, n)
        out = np.concatenate([out[:-n], faded, nxt[n:]])
    return out


def test_cross_fade_by_hand_with_a_chunk_shorter_than_the_fade():
    ones, twos = torch.ones(10, dtype=torch.float64), torch.full((2,), 2.0, dtype=torch.float64)
    threes = torch.full((10,), 3.0, dtype=torch.float64)
    # join 1 overlaps 2 samples (the short chunk's length): ramp [0, 1] -> 1s then [1, 2], 10 samples; join 2
    # overlaps the last 4 of them, [1, 1, 1, 2], with 3s: ramp [0, 1/3, 2/3, 1] -> [1, 5/3, 7/3, 3]; 16 samples
    expected = [1.0] * 6 + [1.0, 5 / 3, 7 / 3, 3.0] + [3.0] * 6
    torch.testing.assert_close(cross_fade([ones, twos, threes], 4), torch.tensor(expected, dtype=torch.float64))
    assert cross_fade([ones, threes], 0).tolist() == [1.0] * 10 + [3.0] * 10


@pytest.mark.parametrize(
    "lengths, fade",
    [([5000, 1000, 8000, 300, 4000], 3600), ([100], 3600), ([3000, 3600, 50, 50, 7000], 3600), ([40, 7, 1, 90], 16)],
)
def test_cross_fade_equals_upstreams_join(lengths, fade):
    g = torch.Generator().manual_seed(len(lengths))
    waves = [torch.randn(n, generator=g, dtype=torch.float64) for n in lengths]
    ref = torch.from_numpy(_upstream_join([w.numpy() for w in waves], fade))
    out = cross_fade(waves, fade)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_reference_preparation():
    model = build_model("tiny")
    quiet = torch.sin(torch.arange(24000) / 5) * 0.01
    ref = prepare_reference(model, quiet, "Some words", InferenceOptions())
    assert ref.text == "Some words. "
    assert abs(ref.rms - 0.01 / 2**0.5) < 1e-3
    assert ref.mel.shape == (1, 25200 // 256 + 1, 100)  # 50 ms of silence appended
    long = prepare_reference(model, quiet.repeat(20), "Done.", InferenceOptions(max_ref_seconds=12))
    assert long.seconds == 12.05 and long.text == "Done. "
    padded = torch.cat((torch.zeros(12000), quiet, torch.zeros(19200)))  # leading/trailing silence is dropped
    assert torch.equal(prepare_reference(model, padded, "x", InferenceOptions()).mel, ref.mel)
    loud = quiet * 30  # above target_rms: no gain, so only the pause differs
    short, paused = (prepare_reference(model, loud, "x", InferenceOptions(ref_silence=s)) for s in (0.05, 0.5))
    assert paused.seconds == pytest.approx(1.5) and paused.mel.shape == (1, 36000 // 256 + 1, 100)
    assert torch.equal(paused.mel[:, :90], short.mel[:, :90])  # the same clip, a longer pause after it
    with pytest.raises(ValueError, match="ref_silence must be a number of seconds >= 0, at most 10, got -1"):
        prepare_reference(model, quiet, "Some words", InferenceOptions(ref_silence=-1))
    bad = ((quiet[:6000], "x", "0.25 s long"), (quiet, "  ", "empty"), (torch.zeros(48000), "x", "silent"))
    bad += ((torch.cat((torch.zeros(48000), quiet[:6000])), "x", "0.25 s long without its leading"),)
    for bad_wave, bad_text, match in bad:
        try:
            prepare_reference(model, bad_wave, bad_text, InferenceOptions())
        except ValueError as exc:
            assert match in str(exc)
        else:
            raise AssertionError("no error")


def _reference(model, seconds=1.0):
    wave = torch.sin(torch.arange(int(24000 * seconds)) / 5) * 0.2
    return prepare_reference(model, wave, "Some words", InferenceOptions())


def test_fix_duration_sets_each_texts_total_length_without_chunking():
    from flowtts.synthesis import synthesize

    model = build_model("tiny")
    reference = _reference(model)
    ref_frames = reference.mel.shape[1]
    long_text = "A first sentence that is long. " * 6  # several chunks without fix_duration
    vocoder = lambda mel: mel.new_zeros(mel.shape[0], mel.shape[2] * 256)  # noqa: E731
    free = synthesize(
        model, reference, [long_text], vocoder=vocoder, options=InferenceOptions(steps=2), seeds=[0], progress=False
    )
    fixed_options = InferenceOptions(steps=2, fix_duration=3.0)
    fixed = synthesize(
        model, reference, [long_text, "Short."], vocoder=vocoder, options=fixed_options, seeds=[0, 1], progress=False
    )
    frames = int(3.0 * 24000 / 256) - ref_frames
    assert [u.mel.shape[1] for u in fixed] == [frames, frames]
    assert [u.wave.numel() for u in fixed] == [frames * 256, frames * 256]
    assert free[0].mel.shape[1] > 2 * frames  # the estimate, chunked, is far longer
    with pytest.raises(ValueError, match=r"fix_duration \(0.9 s\) must be longer than the reference clip \(1.05 s\)"):
        synthesize(model, reference, ["Hi."], vocoder=vocoder, options=InferenceOptions(fix_duration=0.9))
    for bad, match in (
        (dict(target_rms=0), "target_rms must be a positive number"),
        (dict(cross_fade_seconds=-1), ">= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            synthesize(model, reference, ["Hi."], vocoder=vocoder, options=InferenceOptions(**bad))


def test_unprompted_synthesis_samples_the_new_text_alone_after_no_audio():
    """Unprompted, the clip sets the length (and level) but its sound and transcript do not enter the sample."""
    from conftest import randomise
    from flowtts.synthesis import synthesize
    from flowtts.text.units import text_units

    model = randomise(build_model("tiny"), std=0.02)
    reference = _reference(model)
    vocoder = lambda mel: mel.mean(dim=1).repeat_interleave(256, dim=-1)  # noqa: E731
    kwargs = dict(vocoder=vocoder, seeds=[5], progress=False)
    options = InferenceOptions(steps=3, continue_reference=False)
    (prompted,) = synthesize(model, reference, ["Hello there."], options=InferenceOptions(steps=3), **kwargs)
    (alone,) = synthesize(model, reference, ["Hello there."], options=options, **kwargs)
    frames = prompted.mel.shape[1]
    assert alone.mel.shape == prompted.mel.shape and not torch.allclose(alone.mel, prompted.mel)
    expected, _ = model.sample(
        torch.zeros(1, 1, 100),
        [text_units(model, "Hello there.")],
        frames + 1,
        steps=3,
        cfg_strength=2.0,
        sway_sampling_coef=-1.0,
        seed=5,
        no_ref_audio=True,
    )
    torch.testing.assert_close(alone.mel, expected[0, 1:].t())
    noise = torch.randn(24000, generator=torch.Generator().manual_seed(1)) * 0.2  # another sound, same length
    other = prepare_reference(model, noise, "Other word", InferenceOptions())  # as many bytes
    assert other.mel.shape == reference.mel.shape and not torch.allclose(other.mel, reference.mel)
    (again,) = synthesize(model, other, ["Hello there."], options=options, **kwargs)
    torch.testing.assert_close(again.mel, alone.mel)
    with pytest.raises(ValueError, match="continue_reference must be True or False, got 'no'"):
        synthesize(model, reference, ["Hi."], options=InferenceOptions(continue_reference="no"), **kwargs)


def test_remove_silence_shortens_the_vocoded_output():
    from flowtts.synthesis import synthesize

    model = build_model("tiny")
    reference = _reference(model)

    def vocoder(mel):  # speech, 3 s of silence, speech: whatever the mel
        tone = 0.3 * torch.sin(torch.arange(12000) / 7.0)
        return torch.cat([tone, torch.zeros(72000), tone])[None].expand(mel.shape[0], -1)

    kwargs = dict(vocoder=vocoder, seeds=[0], progress=False)
    kept = synthesize(model, reference, ["Hello."], options=InferenceOptions(steps=1), **kwargs)[0]
    cut = synthesize(model, reference, ["Hello."], options=InferenceOptions(steps=1, remove_silence=True), **kwargs)[0]
    assert kept.wave.numel() == 96000
    assert cut.wave.numel() == 48000  # the 3 s pause becomes 1 s
    assert torch.equal(cut.mel, kept.mel)


def test_stream_yields_each_chunk_when_it_is_done_and_joins_to_synthesize():
    from conftest import randomise
    from flowtts.synthesis import stream, synthesize

    model = randomise(build_model("tiny"), std=0.02)
    reference = _reference(model)
    calls = []

    def vocoder(mel):
        calls.append(mel.shape[-1])
        return (mel.exp().mean(dim=1) - 0.5).repeat_interleave(256, dim=-1)

    text = "A first sentence that is rather long, to make chunks. " * 9 + "Short. End."
    options = InferenceOptions(steps=2)
    pieces = []
    for piece in stream(model, reference, text, vocoder=vocoder, options=options, seed=4):
        pieces.append((piece, len(calls)))
    chunks = len(calls)
    assert chunks >= 3
    assert pieces[0][1] == 1  # the first audio came out before the second chunk was sampled
    calls.clear()
    (whole,) = synthesize(model, reference, [text], vocoder=vocoder, options=options, seeds=[4], progress=False)
    assert len(calls) == chunks
    joined = torch.cat([p for p, _ in pieces])
    assert joined.shape == whole.wave.shape
    torch.testing.assert_close(joined, whole.wave, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split", [10**9, 700, 1])  # a chunk's wave whole (Griffin-Lim) or in pieces (neural)
@pytest.mark.parametrize("lengths", [[5000, 1000, 8000, 300, 4000], [100], [3000, 3600, 50, 50, 7000]])
def test_stream_joins_chunks_shorter_than_the_fade_as_cross_fade_does(monkeypatch, lengths, split):
    import flowtts.synthesis.speech as infer

    g = torch.Generator().manual_seed(len(lengths))
    waves = [torch.randn(n, generator=g) for n in lengths]
    pieces = [infer._Piece(0, j, "x", 10, j) for j in range(len(lengths))]
    monkeypatch.setattr(infer, "_plan", lambda *args: pieces)
    monkeypatch.setattr(infer, "_render_mels", lambda m, r, batch, o: [batch[0].chunk_index])
    monkeypatch.setattr(infer, "_wave_pieces", lambda v, j, r, o: iter(waves[j].split(split)))
    model = build_model("tiny")
    options = InferenceOptions(cross_fade_seconds=3600 / 24000)
    out = list(infer.stream(model, None, "text", vocoder=None, options=options, seed=0))
    assert torch.equal(torch.cat(out), infer.cross_fade(waves, 3600))
    expected = torch.from_numpy(_upstream_join([w.double().numpy() for w in waves], 3600)).float()
    torch.testing.assert_close(torch.cat(out), expected, rtol=0, atol=1e-5)  # F5-TTS's join, independently
    assert all(p.numel() > 0 for p in out)


def test_stream_refuses_what_it_cannot_stream():
    from flowtts.synthesis import stream

    model = build_model("tiny")
    reference = _reference(model)
    vocoder = lambda mel: mel.new_zeros(mel.shape[0], mel.shape[2] * 256)  # noqa: E731
    for text, options, error, match in (
        ("Hi.", InferenceOptions(remove_silence=True), ValueError, "cannot be streamed"),
        ("  ", InferenceOptions(), ValueError, "text 1 is empty"),
        (["Hi."], InferenceOptions(), TypeError, "text must be a string"),
        ("Hi.", InferenceOptions(speed=0), ValueError, "speed must be a positive number"),
    ):
        with pytest.raises(error, match=match):
            next(stream(model, reference, text, vocoder=vocoder, options=options))


# ----------------------------------------------------------------- the duration rule, frame for frame


def _f5_frames(ref_frames: int, ref_text: str, gen_text: str, speed: float) -> int:
    """Generated frames by F5-TTS's rule (infer_batch_process): ``ref + int(ref / ref_bytes * gen_bytes / speed)``
    less the reference, with speed 0.3 for texts under 10 bytes, and the reference transcript as F5-TTS ends it
    (preprocess_ref_audio_text: ``". "`` appended, or ``" "`` after a final ``"."``; ``"。"`` kept).

    This is flowtts's own pipeline: unlike F5-TTS 1.1.22's infer_batch_process it counts the reference in mel
    frames (``samples // hop + 1``, the frames the model is conditioned on; F5-TTS: ``samples // hop``) and
    does not add a second space after an ASCII ending (F5-TTS's ``ref_text + " "`` when the last character
    is one byte)."""
    text = ref_text.strip()
    if not (text.endswith(". ") or text.endswith("。")):
        text = text + " " if text.endswith(".") else text + ". "
    gen_bytes = len(gen_text.encode("utf-8"))
    speed = 0.3 if gen_bytes < 10 else speed
    return int(ref_frames / len(text.encode("utf-8")) * gen_bytes / speed)


DURATION_CASES = [
    # ref text, text said, speed, the frames pinned (1.0 s sine + 50 ms: 99 reference frames)
    ("Some words", "Hello there, this is a test.", 1.0, 231),  # "Some words. ": 12 bytes, 28 bytes said
    ("Some words.", "Hello there, this is a test.", 0.8, 288),  # "Some words. " again (no second ".")
    ("Some words", "Hi.", 1.0, 82),  # under 10 bytes: speed 0.3
    ("Some words", "Café au lait, s'il vous plaît.", 1.25, 211),  # é and î are 2 bytes each: 32 bytes
    ("你好世界", "Hello there, this is a test.", 1.0, 198),  # "你好世界. ": 14 bytes
    ("你好世界。", "Hello there, this is a test.", 1.0, 184),  # "。" kept, nothing added: 15 bytes
]


@pytest.mark.parametrize("ref_text, text, speed, pinned", DURATION_CASES)
def test_generated_frames_follow_f5_tts_duration_rule_exactly(ref_text, text, speed, pinned):
    from flowtts.synthesis import synthesize

    model = build_model("tiny")
    wave = torch.sin(torch.arange(24000) / 5) * 0.2
    reference = prepare_reference(model, wave, ref_text, InferenceOptions())
    ref_frames = (24000 + 1200) // 256 + 1  # the clip and 50 ms of silence, centred STFT frames
    assert reference.mel.shape[1] == ref_frames == 99
    assert _f5_frames(ref_frames, ref_text, text, speed) == pinned
    vocoder = lambda mel: mel.new_zeros(mel.shape[0], mel.shape[2] * 256)  # noqa: E731
    options = InferenceOptions(steps=1, speed=speed)
    (utterance,) = synthesize(model, reference, [text], vocoder=vocoder, options=options, seeds=[0], progress=False)
    assert utterance.mel.shape[1] == pinned and utterance.wave.numel() == pinned * 256
