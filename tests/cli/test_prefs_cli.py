"""``flowtts prefs make|synth|export|merge`` and ``flowtts rate``: answers stored at once, rating resumed, machine
judges' records, bad input refused in one line."""

import io
import os

import pytest
import torch

from flowtts.cli import main
from flowtts.prefs.store import append_pair, read_pairs
from prefs.helpers import record
from train.helpers import prepared_corpus, write_corpus

TEXTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.", "A bird sang."]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    texts = root / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n\n")
    out = root / "pairs"
    assert main(["prefs", "make", "--out", str(out), "--texts", str(texts), "--seed", "3", "-q"]) == 0
    return out


def _rate(monkeypatch, capsys, folder, prefs, answers: str) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(answers))
    assert main(["rate", str(folder), "--prefs", str(prefs)]) == 0
    return capsys.readouterr().out


def test_make_writes_a_pair_per_text_with_two_seeds(pairs):
    from flowtts.prefs.pairs import list_pairs

    made = list_pairs(str(pairs))
    assert [p.text for p in made] == TEXTS
    assert [(p.settings_a["seed"], p.settings_b["seed"]) for p in made] == [(3, 4), (5, 6), (7, 8)]
    assert all(os.path.isfile(p.wav(side)) for p in made for side in "ab")


def test_rate_stores_each_answer_at_once_and_resumes_with_the_unanswered_pairs(pairs, tmp_path, monkeypatch, capsys):
    from flowtts.prefs.pairs import list_pairs

    ids = [p.id for p in list_pairs(str(pairs))]
    prefs = tmp_path / "prefs.jsonl"
    out = _rate(monkeypatch, capsys, pairs, prefs, "maybe\na\nk\n")  # a bad answer is asked again; then end of input
    assert "answer a, b, s, k or q" in out and TEXTS[0] in out and os.path.join(str(pairs), "0000", "a.wav") in out
    (first,) = read_pairs(prefs)
    assert first.choice == "a" and first.human and first.judge == "listener" and first.id.startswith(ids[0] + ":")
    assert first.text == TEXTS[0]

    out = _rate(monkeypatch, capsys, pairs, prefs, "S\nq\n")  # resumes at the skipped pair; quits at the next
    assert "1 answered" in out and f"[1/2] {TEXTS[1]}" in out and f"[2/2] {TEXTS[2]}" in out and TEXTS[0] not in out
    assert len(read_pairs(prefs)) == 2
    out = _rate(monkeypatch, capsys, pairs, prefs, "b\n")
    assert f"[1/1] {TEXTS[2]}" in out
    answers = read_pairs(prefs)
    assert [a.choice for a in answers] == ["a", "same", "b"]
    assert [a.id.split(":")[0] for a in answers] == ids
    out = _rate(monkeypatch, capsys, pairs, prefs, "")
    assert "3 answered" in out and "0 to go" in out and len(read_pairs(prefs)) == 3


def test_synth_with_the_recording_judge_prefers_each_recording_in_records_of_no_listener(tmp_path):
    import flowtts
    from flowtts.audio.io import read_audio
    from flowtts.train.data import MelDataset

    metadata = write_corpus(str(tmp_path / "corpus"), n=3)
    out = tmp_path / "synth.jsonl"
    assert main(["prefs", "synth", "--out", str(out), "--judge", "recording", "--data", metadata, "-q"]) == 0
    records = read_pairs(out)
    assert len(records) == 3 and {r.choice for r in records} <= {"a", "b"}
    model = flowtts.load("builtin:student")
    for i, r in enumerate(records):
        assert r.human is False and r.judge == "recording"
        recording, generated = (r.mel_a, r.mel_b) if r.choice == "a" else (r.mel_b, r.mel_a)
        wave, _ = read_audio(str(tmp_path / "corpus" / "wavs" / f"{i:03d}.wav"), 24_000)
        expected = model.mel_spec(wave[None])[0].t()
        assert torch.equal(recording[r.prompt_frames :], expected.half().float())
        assert torch.equal(recording[: r.prompt_frames], generated[: r.prompt_frames])
    # a prepared dataset's mels are the recordings' (appended to the same file)
    prepared = prepared_corpus(str(tmp_path / "prep"), n=2)
    assert main(["prefs", "synth", "--out", str(out), "--judge", "recording", "--data", prepared, "--n", "1"]) == 0
    records = read_pairs(out)
    assert len(records) == 4
    last = records[-1]
    recording = last.mel_a if last.choice == "a" else last.mel_b
    assert torch.equal(recording[last.prompt_frames :], MelDataset(prepared)[0][0].half().float())


@pytest.mark.parametrize(("judge", "key"), [("pocketsphinx", "wer"), ("dnsmos", "dnsmos_p808")])
def test_synth_with_a_measuring_judge_records_its_measure_of_two_seeds(tmp_path, judge, key):
    if judge == "dnsmos":
        from flowtts.eval.dnsmos import dnsmos_available

        if not dnsmos_available():
            pytest.skip("DNSMOS needs speechmos and onnxruntime")
    metadata = write_corpus(str(tmp_path / "corpus"), n=2)
    out = tmp_path / "synth.jsonl"
    assert main(["prefs", "synth", "--out", str(out), "--judge", judge, "--data", metadata, "--n", "1", "-q"]) == 0
    (r,) = read_pairs(out)
    assert r.judge == judge and r.human is False and r.text == "a cat sat"
    assert (r.settings_a["seed"], r.settings_b["seed"]) == (0, 1)
    measure = {"a": r.settings_a[key], "b": r.settings_b[key]}
    if r.choice != "same":
        loser = "b" if r.choice == "a" else "a"
        assert (measure[r.choice] < measure[loser]) if key == "wer" else (measure[r.choice] > measure[loser])


def test_export_and_merge_copy_and_join_without_doubles(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for i in (0, 1):
        append_pair(a, record(i, frames=6))
    for i in (1, 2):
        append_pair(b, record(i, frames=6))
    merged = tmp_path / "merged.jsonl"
    assert main(["prefs", "merge", str(a), str(b), "--out", str(merged)]) == 0
    assert [r.id for r in read_pairs(merged)] == ["record-0", "record-1", "record-2"]
    copy = tmp_path / "copy.jsonl"
    assert main(["prefs", "export", str(merged), "--out", str(copy)]) == 0
    assert copy.read_bytes() == merged.read_bytes()
    capsys.readouterr()
    assert main(["prefs", "export", str(merged), "--out", str(copy)]) == 2  # an existing output is not replaced
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prefs", "export", "{notes}", "--out", "{tmp}/x.jsonl"], "not a preferences file"),
        (["prefs", "merge", "{notes}", "--out", "{tmp}/x.jsonl"], "not a preferences file"),
        (["rate", "{tmp}", "--prefs", "{tmp}/p.jsonl"], "holds no pairs"),
        (["rate", "{tmp}/missing", "--prefs", "{tmp}/p.jsonl"], "pairs folder not found"),
        (["prefs", "synth", "--out", "{notes}", "--judge", "recording", "--data", "{tmp}"], "not a preferences file"),
        (["prefs", "synth", "--out", "{tmp}/s.jsonl", "--judge", "recording", "--data", "{tmp}"], "--data"),
        (
            ["prefs", "synth", "--out", "{tmp}/s.jsonl", "--judge", "pocketsphinx", "--data", "{tmp}", "--margin", "1"],
            "--margin goes with --judge dnsmos",
        ),
        (["prefs", "make", "--out", "{tmp}", "--texts", "{notes}"], "not an empty folder"),
        (["prefs", "make", "--out", "{tmp}/new", "--texts", "{tmp}/none.txt"], "not found"),
        (["prefs", "make", "--out", "{tmp}/new", "--texts", "{notes}", "--steps", "0"], "steps"),
        (["prefs", "make", "--out", "{tmp}/new", "--texts", "{notes}", "--vocoder", "nope"], "--vocoder"),
        # an output that cannot be written is refused before any work (or any question to the listener)
        (["rate", "{tmp}/missing", "--prefs", "{tmp}/none/p.jsonl"], "--prefs {tmp}/none/p.jsonl: output directory"),
        (["rate", "{tmp}/missing", "--prefs", "{notes}/p.jsonl"], "is a file, not a directory"),
        (["rate", "{tmp}/missing", "--prefs", "{tmp}"], "--prefs {tmp} is a folder"),
        (["prefs", "merge", "{notes}", "--out", "{tmp}/none/x.jsonl"], "--out {tmp}/none/x.jsonl: output directory"),
        (["prefs", "export", "{notes}", "--out", "{notes}/x.jsonl"], "is a file, not a directory"),
        (["prefs", "synth", "--out", "{tmp}/none/s.jsonl", "--judge", "recording", "--data", "{tmp}"], "--out"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_status_2(tmp_path, capsys, argv, message):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a preference\nat all")
    argv = [a.format(tmp=tmp_path, notes=notes) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path, notes=notes) in err and err.count("\n") == 1, err
    assert notes.read_text() == "not a preference\nat all"


@pytest.mark.parametrize(
    "argv",
    [
        ["prefs", "synth", "--out", "x", "--judge", "human", "--data", "d"],
        ["prefs", "synth", "--out", "x", "--judge", "dnsmos", "--data", "d", "--margin", "-1"],
        ["prefs", "make", "--out", "x", "--texts", "t", "--n", "0"],
        ["prefs", "make", "--out", "x", "--texts", "t", "--data", "d"],
    ],
)
def test_bad_flags_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2


def test_rate_asks_again_after_bytes_that_are_not_text(pairs, tmp_path, monkeypatch, capsys):
    prefs = tmp_path / "prefs.jsonl"
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe garbage\na\nq\n"), encoding="utf-8", errors="strict")
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["rate", str(pairs), "--prefs", str(prefs)]) == 0
    assert "answer a, b, s, k or q" in capsys.readouterr().out
    assert [a.choice for a in read_pairs(prefs)] == ["a"]
