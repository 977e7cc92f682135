"""The preferences file: exact round trips, no answer lost or torn by a kill, torn tails cut, bad input refused."""

import os
import random
import subprocess
import sys
import threading
import time

import pytest
import torch

from flowtts.prefs.store import (
    PreferencePair,
    append_pair,
    count_pairs,
    encode_pair,
    export_pairs,
    merge_pairs,
    pair_ids,
    read_pairs,
)
from prefs.helpers import mel, record, same

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A writer that appends records start, start+1, ... for ever, printing each index once its append returned.
WRITER = """
import sys
from flowtts.prefs.store import append_pair
from prefs.helpers import record
path, i = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:
    append_pair(path, record(i))
    print(i, flush=True)
    i += 1
"""


def test_a_record_reads_back_exactly_with_its_mels_in_float16(tmp_path):
    path = tmp_path / "p.jsonl"
    pair = record(4)
    assert append_pair(path, pair) == "record-4"
    (back,) = read_pairs(path)
    assert same(back, pair)
    assert back.mel_a.dtype == torch.float32 and back.mel_a.shape == pair.mel_a.shape
    # A mel float16 cannot hold exactly comes back rounded to float16, as the file stores it.
    odd = PreferencePair("t", "", 0, torch.full((3, 2), 0.1), torch.zeros(4, 2), "a")
    append_pair(path, odd)
    assert torch.equal(read_pairs(path)[1].mel_a, torch.full((3, 2), 0.1).half().float())
    assert read_pairs(path)[1].mel_a[0, 0] != 0.1 and count_pairs(path) == 2
    line = encode_pair(pair)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and os.path.getsize(path) > len(line)


def test_defaults_give_a_fresh_id_and_the_time_now():
    a = PreferencePair("t", "", 0, mel(0, 3), mel(1, 3), "same")
    b = PreferencePair("t", "", 0, mel(0, 3), mel(1, 3), "same")
    assert a.id != b.id and a.human is True and a.judge == "listener"
    assert a.time.endswith("+00:00") and a.time[:4].isdigit()


def _kill_round(path, start: int, delay: float) -> int:
    """Run a writer from record ``start``, SIGKILL it ``delay`` s after it is ready; the appends it reported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -9
    return len([line for line in out.split() if line.isdigit()])


def test_a_writer_killed_at_random_moments_loses_and_tears_no_answer(tmp_path):
    path = tmp_path / "p.jsonl"
    rng = random.Random(0)
    acknowledged = 0
    for _ in range(6):
        start = count_pairs(path)
        reported = _kill_round(path, start, rng.uniform(0.0, 0.5))
        pairs = read_pairs(path)
        # every answer whose append returned is there; at most one more (written, killed before it said so)
        assert start + reported <= len(pairs) <= start + reported + 1
        assert count_pairs(path) == len(pairs) == len(pair_ids(path))
        for i, pair in enumerate(pairs):
            assert same(pair, record(i)), f"record {i} differs"
        acknowledged += reported
    assert acknowledged > 0  # the rounds did write
    n = count_pairs(path)
    append_pair(path, record(n))  # the next append works, after whatever the last kill left
    pairs = read_pairs(path)
    assert len(pairs) == n + 1 and all(same(p, record(i)) for i, p in enumerate(pairs))
    assert open(path, "rb").read().endswith(b"\n")


@pytest.mark.parametrize("torn", ["half", "half+newline", "zeros"])
def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path, torn):
    path = tmp_path / "p.jsonl"
    for i in range(2):
        append_pair(path, record(i, frames=20))
    whole = open(path, "rb").read()
    line = encode_pair(record(2, frames=20))
    tail = {"half": line[: len(line) // 2], "half+newline": line[: len(line) // 2] + b"\n", "zeros": b"\0" * 100}
    with open(path, "ab") as f:
        f.write(tail[torn])
    assert [p.id for p in read_pairs(path)] == ["record-0", "record-1"]
    assert count_pairs(path) == 2
    append_pair(path, record(3, frames=20))
    assert open(path, "rb").read() == whole + encode_pair(record(3, frames=20))
    assert [p.id for p in read_pairs(path)] == ["record-0", "record-1", "record-3"]


def test_a_file_that_is_not_a_preferences_file_is_refused_and_left_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my shopping list\nmilk")  # no newline at the end: not a torn record either
    with pytest.raises(ValueError, match="not a preferences file"):
        read_pairs(notes)
    with pytest.raises(ValueError, match="not a preferences file"):
        append_pair(notes, record(0, frames=5))
    with pytest.raises(ValueError, match="not a preferences file"):
        count_pairs(notes)
    assert notes.read_text() == "my shopping list\nmilk"
    # a damaged line before the last is not a kill's doing: named, not skipped
    path = tmp_path / "p.jsonl"
    for i in range(3):
        append_pair(path, record(i, frames=5))
    lines = open(path, "rb").read().split(b"\n")
    lines[1] = lines[1][:50]
    open(path, "wb").write(b"\n".join(lines))
    with pytest.raises(ValueError, match="line 2"):
        read_pairs(path)
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "missing.jsonl")
    assert count_pairs(tmp_path / "missing.jsonl") == 0


def _bad(**changes) -> PreferencePair:
    pair = record(0, frames=10)
    for name, value in changes.items():
        setattr(pair, name, value)
    return pair


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"choice": "c"}, "choice"),
        ({"choice": "A"}, "choice"),
        ({"mel_a": torch.zeros(2, 3, 4)}, "mel_a"),
        ({"mel_b": torch.zeros(10)}, "mel_b"),
        ({"mel_b": torch.zeros(10, 80)}, "same d"),
        ({"mel_a": torch.full((10, 100), float("nan"))}, "mel_a"),
        ({"mel_a": torch.full((10, 100), 1e6)}, "mel_a"),
        ({"mel_a": torch.zeros(10, 100, dtype=torch.long)}, "mel_a"),
        ({"prompt_frames": 10}, "prompt_frames"),
        ({"prompt_frames": -1}, "prompt_frames"),
        ({"prompt_frames": True}, "prompt_frames"),
        ({"prompt_frames": 1.0}, "prompt_frames"),
        ({"text": " "}, "text"),
        ({"prompt_text": None}, "prompt_text"),
        ({"human": "yes"}, "human"),
        ({"judge": ""}, "judge"),
        ({"id": "a\nb"}, "id"),
        ({"time": "yesterday"}, "time"),
        ({"settings_a": {"seed": torch.tensor(1)}}, "settings_a"),
        ({"settings_b": []}, "settings_b"),
    ],
)
def test_bad_fields_are_refused_naming_the_field_and_nothing_is_written(tmp_path, changes, field):
    path = tmp_path / "p.jsonl"
    append_pair(path, record(1, frames=10))
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match=field):
        append_pair(path, _bad(**changes))
    assert open(path, "rb").read() == before


def test_a_record_with_a_bad_or_missing_field_in_the_file_is_named_with_its_line(tmp_path):
    import json

    path = tmp_path / "p.jsonl"
    append_pair(path, record(0, frames=5))
    good = json.loads(encode_pair(record(1, frames=5)))
    for change, field in ((lambda r: r.pop("judge"), "judge"), (lambda r: r.update(choice="x"), "choice")):
        bad = dict(good)
        change(bad)
        open(path, "ab").write(json.dumps(bad, separators=(",", ":")).encode() + b"\n")
        with pytest.raises(ValueError, match=f"line 2.*{field}"):
            read_pairs(path)
        lines = open(path, "rb").read().split(b"\n")
        open(path, "wb").write(lines[0] + b"\n")
    shape = dict(good, mel_a=dict(good["mel_a"], shape=[3, 100]))
    open(path, "ab").write(json.dumps(shape, separators=(",", ":")).encode() + b"\n")
    with pytest.raises(ValueError, match="mel_a.data"):
        read_pairs(path)


def test_merge_keeps_one_record_per_id_and_export_copies_the_valid_records(tmp_path):
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    for i in (0, 1):
        append_pair(a, record(i, frames=8))
    for i in (1, 2):
        append_pair(b, record(i, frames=8))
    changed = record(2, frames=8)
    changed.choice = "a" if changed.choice != "a" else "b"
    changed.id = "record-0"  # the same id with another answer: the first one read wins
    append_pair(b, changed)
    assert merge_pairs([a, b], out) == 3
    merged = read_pairs(out)
    assert [p.id for p in merged] == ["record-0", "record-1", "record-2"]
    assert all(same(p, record(i, frames=8)) for i, p in enumerate(merged))
    assert merge_pairs([out, out], out) == 3  # the output may be an input
    with pytest.raises(ValueError, match="inputs"):
        merge_pairs([], out)
    with open(a, "ab") as f:
        f.write(encode_pair(record(5, frames=8))[:40])  # torn
    exported = tmp_path / "export.jsonl"
    assert export_pairs(a, exported) == 2
    assert open(exported, "rb").read() == encode_pair(record(0, frames=8)) + encode_pair(record(1, frames=8))


def test_a_cap_on_the_file_size_refuses_the_answer_and_leaves_the_file(tmp_path):
    path = tmp_path / "p.jsonl"
    append_pair(path, record(0, frames=10))
    size = os.path.getsize(path)
    with pytest.raises(ValueError, match="cap"):
        append_pair(path, record(1, frames=10), max_bytes=size + 10)
    assert os.path.getsize(path) == size
    with pytest.raises(ValueError, match="max_bytes"):
        append_pair(path, record(1, frames=10), max_bytes=0)
    append_pair(path, record(1, frames=10), max_bytes=10 * size)
    assert count_pairs(path) == 2


def test_appends_from_several_threads_each_land_whole(tmp_path):
    path = tmp_path / "p.jsonl"

    def write(k):
        for j in range(5):
            append_pair(path, record(10 * k + j, frames=50))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pairs = read_pairs(path)
    assert len(pairs) == 20
    for pair in pairs:
        assert same(pair, record(int(pair.id.split("-")[1]), frames=50))


def test_copy_complete_copies_the_complete_records_byte_for_byte(tmp_path):
    from flowtts.prefs.store import append_pair, copy_complete, read_pairs

    path, out = tmp_path / "p.jsonl", tmp_path / "copy.jsonl"
    for i in range(3):
        append_pair(path, record(i))
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(whole.splitlines(keepends=True)[0][:40])  # a torn last line, as a kill leaves it
    assert copy_complete(path, out) == len(whole)
    assert out.read_bytes() == whole
    assert len(read_pairs(out)) == 3
