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
    assert ref.mel.shape == (1, 24000 // 256 + 1, 100)
    long = prepare_reference(model, quiet.repeat(20), "Done.", InferenceOptions(max_ref_seconds=12))
    assert long.seconds == 12 and long.text == "Done. "
    for bad_wave, bad_text, match in ((quiet[:6000], "x", "0.25 s long"), (quiet, "  ", "empty")):
        try:
            prepare_reference(model, bad_wave, bad_text, InferenceOptions())
        except ValueError as exc:
            assert match in str(exc)
        else:
            raise AssertionError("no error")
