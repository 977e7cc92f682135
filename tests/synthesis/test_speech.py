import pytest
import torch

from flowtts.infer import InferenceOptions, chunk_text, cross_fade, prepare_reference
from flowtts.model.build import build_model


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
    with pytest.raises(ValueError, match="ref_silence must be a number of seconds >= 0, got -1"):
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
    from flowtts.infer import synthesize

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
    from flowtts.infer import synthesize
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
    from flowtts.infer import synthesize

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
    from flowtts.infer import stream, synthesize

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


@pytest.mark.parametrize("lengths", [[5000, 1000, 8000, 300, 4000], [100], [3000, 3600, 50, 50, 7000]])
def test_stream_joins_chunks_shorter_than_the_fade_as_cross_fade_does(monkeypatch, lengths):
    import flowtts.synthesis.speech as infer

    g = torch.Generator().manual_seed(len(lengths))
    waves = [torch.randn(n, generator=g) for n in lengths]
    pieces = [infer._Piece(0, j, "x", 10, j) for j in range(len(lengths))]
    monkeypatch.setattr(infer, "_plan", lambda *args: pieces)
    monkeypatch.setattr(infer, "_render", lambda m, r, batch, v, o: [(waves[batch[0].chunk_index], None)])
    model = build_model("tiny")
    options = InferenceOptions(cross_fade_seconds=3600 / 24000)
    out = list(infer.stream(model, None, "text", vocoder=None, options=options, seed=0))
    assert torch.equal(torch.cat(out), infer.cross_fade(waves, 3600))
    assert all(p.numel() > 0 for p in out)


def test_stream_refuses_what_it_cannot_stream():
    from flowtts.infer import stream

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
