import json
import os

import pytest
import torch

from flowtts.train.data import (
    BatchCursor,
    MelDataset,
    PairLayout,
    build_vocab,
    epoch_batches,
    frame_batches,
    item_frames,
    item_text,
    join_item,
    pair_items,
    prepare_dataset,
    read_metadata,
)
from train.helpers import write_corpus


def test_prepare_keeps_good_rows_and_reports_bad_ones(tmp_path):
    meta = write_corpus(tmp_path, n=4)
    with open(meta, "a", encoding="utf-8") as f:
        f.write("wavs/missing.wav|some text\n")
        f.write("wavs/garbage.wav|some text\n")
        f.write("wavs/000.wav|\n")
        f.write("wavs/long.wav|long one\n")
        f.write("wavs/001.wav\n")
    (tmp_path / "wavs" / "garbage.wav").write_bytes(b"RIFFnonsense")
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "wavs" / "long.wav", np.zeros(24000 * 3, dtype=np.float32), 24000)
    report = prepare_dataset(meta, None, str(tmp_path / "prepared"), max_frames=200, progress=False)
    assert report.kept == 4
    reasons = {audio: reason for _, audio, reason in report.skipped}
    assert reasons["wavs/missing.wav"] == "audio file missing"
    assert reasons["wavs/garbage.wav"].startswith("unreadable audio")
    assert reasons["wavs/000.wav"] == "empty transcript"
    assert reasons["wavs/001.wav"] == "no '|' between the audio file and its text"
    assert reasons["wavs/long.wav"].startswith("too long")
    ds = MelDataset(str(tmp_path / "prepared"))
    assert len(ds) == 4
    mel, text = ds[0]
    assert mel.shape[1] == 100 and text == "a cat sat"
    info = json.loads((tmp_path / "prepared" / "dataset.json").read_text())
    assert len(info["skipped"]) == 5
    assert (tmp_path / "prepared" / "vocab.txt").read_text().startswith(" \n")


CHINESE = ["你好世界", "a cat sat", "我们回家了"]


def write_chinese_corpus(directory) -> str:
    """:func:`write_corpus`'s audio with two Chinese transcripts; returns the metadata path."""
    meta = write_corpus(directory, n=3)
    rows = [f"wavs/{i:03d}.wav|{text}" for i, text in enumerate(CHINESE)]
    with open(meta, "w", encoding="utf-8") as f:
        f.write("audio_file|text\n" + "\n".join(rows) + "\n")
    return meta


def test_a_line_that_is_not_utf8_is_named_with_its_file_and_line(tmp_path):
    from flowtts.train.data import read_metadata

    path = tmp_path / "metadata.csv"
    path.write_bytes(b"audio_file|text\nwavs/a.wav|fine\n" + b"wavs/b.wav|caf\xe9\n")
    with pytest.raises(ValueError, match=r"metadata.csv line 3 is not UTF-8 text \(byte 0xe9 at column 15\)"):
        read_metadata(str(path))


def test_chinese_text_is_prepared_as_the_pinyin_units_inference_reads(tmp_path):
    pytest.importorskip("pypinyin")
    pytest.importorskip("rjieba")
    from flowtts.model.build import build_model
    from flowtts.text import load_vocab
    from flowtts.text.pinyin import to_pinyin
    from flowtts.text.units import text_units

    meta = write_chinese_corpus(tmp_path)
    prepare_dataset(meta, None, str(tmp_path / "prepared"), progress=False)
    ds = MelDataset(str(tmp_path / "prepared"))
    assert ds[0][1] == to_pinyin([CHINESE[0]])[0] and ds[2][1] == to_pinyin([CHINESE[2]])[0]
    assert ds[1][1] == "a cat sat" and "units" not in ds.items[1]
    assert [it["text"] for it in ds.items] == CHINESE  # the transcript itself is kept too
    assert ds.texts == [ds[i][1] for i in range(3)]
    vocab = load_vocab(ds.vocab_path())
    assert "hao3" in vocab and "你" not in vocab
    assert all(unit in vocab for text in ds.texts for unit in text)
    model = build_model("tiny", vocab)
    assert text_units(model, CHINESE[0]) == ds[0][1]  # what inference feeds the model for the same text


def test_ljspeech_layout_reads_ids_and_normalised_text(tmp_path):
    meta = write_corpus(tmp_path, n=3)  # wavs/000.wav ...
    (tmp_path / "lj.csv").write_text(
        "000|Dr. Smith, 1st.|Doctor Smith, first.\n001|plain text|\n\n002|two fields only\n", encoding="utf-8"
    )
    rows = read_metadata(str(tmp_path / "lj.csv"), "ljspeech")
    wav = os.path.join("wavs", "{}.wav")
    assert rows == [
        (1, wav.format("000"), "Doctor Smith, first."),
        (2, wav.format("001"), "plain text"),
        (4, wav.format("002"), "two fields only"),
    ]
    report = prepare_dataset(str(tmp_path / "lj.csv"), None, str(tmp_path / "p"), progress=False, layout="ljspeech")
    assert report.kept == 3
    ds = MelDataset(str(tmp_path / "p"))
    prepare_dataset(meta, None, str(tmp_path / "q"), progress=False)
    reference = MelDataset(str(tmp_path / "q"))
    assert [ds[i][1] for i in range(3)] == ["Doctor Smith, first.", "plain text", "two fields only"]
    assert all(torch.equal(ds[i][0], reference[i][0]) for i in range(3))
    with pytest.raises(ValueError, match="layout must be one of"):
        read_metadata(meta, "libritts")


def test_metadata_and_vocab_helpers(tmp_path):
    (tmp_path / "m.csv").write_text("audio_file|text\na.wav|hello|world\n\nb.wav|x\n", encoding="utf-8")
    assert read_metadata(str(tmp_path / "m.csv")) == [(2, "a.wav", "hello|world"), (4, "b.wav", "x")]
    assert build_vocab(["ba", "ab c"]) == {" ": 0, "a": 1, "b": 2, "c": 3}
    with pytest.raises(FileNotFoundError):
        read_metadata(str(tmp_path / "none.csv"))
    (tmp_path / "e.csv").write_text("audio_file|text\nmissing.wav|x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no usable rows"):
        prepare_dataset(str(tmp_path / "e.csv"), None, str(tmp_path / "out"), progress=False)


def test_frame_batches_respect_budget_and_are_reproducible():
    frames = [50, 80, 20, 200, 120, 60, 90, 30, 40, 150]
    batches = frame_batches(frames, 300, 4, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(10))
    for b in batches:
        assert len(b) <= 4 and len(b) * max(frames[i] for i in b) <= 300
    assert frame_batches(frames, 300, 4, seed=1, epoch=0) == batches
    assert any(frame_batches(frames, 300, 4, seed=1, epoch=e) != batches for e in range(1, 6))
    with pytest.raises(ValueError, match="over the batch budget"):
        frame_batches(frames, 100, 4, seed=1, epoch=0)


def test_pair_items_use_each_utterance_once_within_the_budget():
    frames = [50, 80, 20, 200, 120, 60, 90, 30, 40, 150, 70, 110]
    assert pair_items(frames, 0.0, 300, seed=0, epoch=0) == [(i,) for i in range(12)]
    items = pair_items(frames, 1.0, 300, seed=0, epoch=0)
    assert sorted(i for item in items for i in item) == list(range(12))
    pairs = [item for item in items if len(item) == 2]
    assert pairs and all(frames[a] + frames[b] <= 300 for a, b in pairs)
    assert len(pairs) <= 6 and len(pair_items(frames, 0.5, 10_000, seed=0, epoch=0)) == 12 - 3
    assert pair_items(frames, 1.0, 300, seed=0, epoch=0) == items  # resume sees the same items
    assert any(pair_items(frames, 1.0, 300, seed=0, epoch=e) != items for e in range(1, 4))
    batches = epoch_batches(frames, 300, 4, seed=0, epoch=0, pair_fraction=1.0)
    assert sorted(i for b in batches for item in b for i in item) == list(range(12))
    for b in batches:
        assert len(b) * max(sum(frames[i] for i in item) for item in b) <= 300
    with pytest.raises(ValueError, match="pair fraction"):
        pair_items(frames, 1.5, 300, seed=0, epoch=0)


def test_a_pair_item_is_both_recordings_and_their_texts_as_reference_and_new_text(tmp_path):
    meta = write_corpus(str(tmp_path), n=3)
    prepare_dataset(meta, None, str(tmp_path / "p"), progress=False)
    ds = MelDataset(str(tmp_path / "p"))
    mel, text = join_item(ds, (2, 0))
    assert torch.equal(mel, torch.cat((ds[2][0], ds[0][0])))
    first = ds[2][1].strip()
    assert text == (first + " " if first.endswith(".") else first + ". ") + ds[0][1]
    assert join_item(ds, (1,))[1] == ds[1][1] == item_text(ds, (1,), plain=True)


HOP, RATE = 256, 24000
# 7680 and 11520 samples are whole mel hops (256) and whole 10 ms loudness windows (240)
LEAD, TONE, TAIL = 7680, 11520, 9000


def _padded_tone(amplitude: float, pitch: float, seed: int) -> torch.Tensor:
    """A tone with a little noise (every mel channel well above the log floor), digital silence around it."""
    t = torch.arange(TONE, dtype=torch.float64) / RATE
    noise = torch.randn(TONE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    tone = (amplitude * torch.sin(2 * torch.pi * pitch * t) + 0.01 * amplitude * noise).float()
    return torch.cat((torch.zeros(LEAD), tone, torch.zeros(TAIL)))


@pytest.fixture()
def padded(tmp_path):
    """A prepared corpus of three tones with digital silence before and after; returns (dataset, waves)."""
    import soundfile as sf

    os.makedirs(tmp_path / "wavs")
    waves = [_padded_tone(0.02 * (k + 1), 200.0 + 70 * k, k) for k in range(3)]
    for k, wave in enumerate(waves):
        sf.write(tmp_path / "wavs" / f"{k}.wav", wave.numpy(), RATE, subtype="FLOAT")
    (tmp_path / "metadata.csv").write_text("".join(f"wavs/{k}.wav|tone {k}\n" for k in range(3)))
    prepare_dataset(str(tmp_path / "metadata.csv"), None, str(tmp_path / "p"), progress=False)
    return MelDataset(str(tmp_path / "p")), waves


def test_prepared_rows_record_where_the_speech_is_and_its_level(padded):
    ds, _ = padded
    for k, row in enumerate(ds.items):
        assert row["speech"] == [LEAD, LEAD + TONE]
        assert row["rms"] == pytest.approx(0.02 * (k + 1) / 2**0.5, rel=2e-3)  # a sine's RMS (and 1% noise)


def test_a_pair_laid_out_as_inference_prepares_a_reference_clip(padded):
    """The pair's mel is what inference makes of the first clip as its reference -- the very function,
    :func:`flowtts.synthesis.prepare_reference`: cut to its speech, gap seconds of silence appended, raised to
    target_rms -- followed by the second clip whole at the same gain."""
    from flowtts.model.build import build_model
    from flowtts.model.mel import MelSpec
    from flowtts.synthesis import InferenceOptions, prepare_reference

    ds, waves = padded
    layout = PairLayout(gap=(0.1, 0.4), target_rms=0.1, seed=3)
    mel, text = join_item(ds, (1, 2), layout)
    gap = layout.gap_frames(1, 2, HOP / RATE)
    assert 0.1 <= gap * HOP / RATE <= 0.4 + HOP / RATE
    assert gap == layout.gap_frames(1, 2, HOP / RATE) and mel.shape[0] == item_frames(ds, (1, 2), layout)
    model = build_model("tiny")  # its mel front end is the dataset's: vocos, 24 kHz, hop 256, 100 bands
    assert {k: getattr(model.mel_spec, k) for k in ds.info["mel"]} == ds.info["mel"]
    # exactly gap hops of silence; the 0.48 s tone is under the 0.5 s inference asks of a clip by default
    options = InferenceOptions(target_rms=0.1, ref_silence=(gap * HOP + 0.5) / RATE, min_ref_seconds=0.4)
    reference = prepare_reference(model, waves[1], "tone 1", options)
    a = TONE // HOP  # frames of the first clip's speech
    assert reference.mel.shape[1] == a + gap + 1 and reference.rms < 0.1  # centred STFT: one frame more
    gain = 0.1 / reference.rms
    expected = torch.cat((reference.mel[0, : a + gap], MelSpec()(gain * waves[2][None])[0].t()))
    assert mel.shape == expected.shape
    keep = torch.ones(mel.shape[0], dtype=torch.bool)
    keep[:3] = keep[a - 3 : a + 3] = keep[a + gap - 3 : a + gap + 3] = False  # windows crossing a cut
    assert torch.allclose(mel[keep], expected[keep], atol=0.03), (mel[keep] - expected[keep]).abs().max()
    assert text == join_item(ds, (1, 2))[1]
    whole, _ = join_item(ds, (1, 2), PairLayout())
    assert torch.equal(whole, torch.cat((ds[1][0], ds[2][0])))
    assert torch.equal(join_item(ds, (0,), layout)[0], ds[0][0])  # a single utterance is left as recorded


def test_pair_layout_refuses_bad_settings_and_data_without_speech_bounds(padded):
    ds, _ = padded
    with pytest.raises(ValueError, match="pair gap"):
        PairLayout(gap=(0.5, 0.1))
    with pytest.raises(ValueError, match="target_rms"):
        PairLayout(gap=(0.1, 0.2), target_rms=-1)
    with pytest.raises(ValueError, match="give the gap too"):
        PairLayout(target_rms=0.1)
    for row in ds.items:
        del row["speech"]
    with pytest.raises(ValueError, match="prepare it again"):
        join_item(ds, (0, 1), PairLayout(gap=(0.1, 0.2)))


def test_dataset_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="flowtts data prepare"):
        MelDataset(str(tmp_path))
    assert os.path.isdir(tmp_path)


def test_a_batch_cursor_resumed_from_its_state_takes_the_same_batches():
    def batches_of(epoch):
        return [[epoch, 0], [epoch, 1], [epoch, 2]]

    cursor = BatchCursor(batches_of)
    seen = [cursor.next() for _ in range(4)]
    assert seen == [[0, 0], [0, 1], [0, 2], [1, 0]] and cursor.state() == {"epoch": 1, "batch_in_epoch": 1}
    resumed = BatchCursor(batches_of)
    resumed.restore(cursor.state())
    assert [resumed.next() for _ in range(3)] == [cursor.next() for _ in range(3)] == [[1, 1], [1, 2], [2, 0]]
