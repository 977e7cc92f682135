import csv
import json
import os

from flowtts.cli import main
from train.helpers import tiny_model, write_corpus


def test_data_prepare_and_train_from_the_command_line(tmp_path, capsys, monkeypatch):
    meta = write_corpus(str(tmp_path / "corpus"), n=6)
    assert main(["data", "prepare", meta, "--out", str(tmp_path / "prepared"), "-q"]) == 0
    assert "kept 6 rows" in capsys.readouterr().out
    args = [
        "train",
        "--data",
        str(tmp_path / "prepared"),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-frames",
        "400",
        "--max-samples",
        "3",
        "--save-every",
        "3",
        "--log-every",
        "1",
        "--lr",
        "1e-3",
        "--grad-accum",
        "2",
        "-q",
    ]
    from flowtts.train.loop import TrainingLoop

    updates = []
    real_update = TrainingLoop.update
    monkeypatch.setattr(TrainingLoop, "update", lambda self, *a, **k: updates.append(1) or real_update(self, *a, **k))
    assert main(args) == 0
    assert "step 3" in capsys.readouterr().out and len(updates) == 3
    run = tmp_path / "run"
    assert {"last.pt", "model.safetensors", "train_log.csv"} <= set(os.listdir(run))
    with open(run / "train_log.csv") as f:
        logged = list(csv.DictReader(f))
    assert [row["step"] for row in logged] == ["1", "2", "3"]
    import torch

    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 3
    # running again resumes from last.pt and finds the schedule finished: no optimiser step, nothing logged
    assert main(args) == 0
    assert "step 3" in capsys.readouterr().out
    assert len(updates) == 3
    with open(run / "train_log.csv") as f:
        assert list(csv.DictReader(f)) == logged
    again = torch.load(run / "last.pt", weights_only=True)
    assert again["step"] == 3
    assert all(torch.equal(v, again["model"][k]) for k, v in state["model"].items())


def test_upstream_training_options_keep_snapshots_and_log_samples(tmp_path, capsys):
    meta = write_corpus(str(tmp_path / "corpus"), n=6)
    assert main(["data", "prepare", meta, "--out", str(tmp_path / "prepared"), "-q"]) == 0
    args = ["train", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "run"), "--steps", "3"]
    args += ["--num_warmup_updates", "1", "--batch-frames", "400", "--max_samples", "3", "--learning_rate", "1e-3"]
    args += ["--max_grad_norm", "0.5", "--last_per_updates", "5", "--save_per_updates", "1"]
    args += ["--keep_last_n_checkpoints", "2", "--log_samples", "-q"]
    assert main(args) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("model_*.safetensors")) == ["model_2.safetensors", "model_3.safetensors"]
    assert sorted(p.name for p in (run / "samples").glob("*.wav")) == ["ref.wav", "step_3_gen.wav"]  # the end
    import json

    import torch

    saved = json.loads(torch.load(run / "last.pt", weights_only=True)["train_config"])
    loop = saved["loop"]
    assert (loop["lr"], loop["warmup"], loop["grad_clip"], saved["max_samples"]) == (1e-3, 1, 0.5, 3)
    assert main([*args[:-1], "--keep_last_n_checkpoints", "0"]) == 2
    assert "keep_snapshots must be -1 (all) or >= 1" in capsys.readouterr().err


def test_train_user_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "-q"]) == 2
    assert "flowtts data prepare" in capsys.readouterr().err
    meta = write_corpus(str(tmp_path / "corpus"), n=3)
    main(["data", "prepare", meta, "--out", str(tmp_path / "prepared"), "-q"])
    capsys.readouterr()
    code = main(
        ["train", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "run"), "--batch-frames", "10", "-q"]
    )
    assert code == 2 and "batch_frames" in capsys.readouterr().err
    assert (
        main(["train", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "r2"), "--preset", "nope", "-q"])
        == 2
    )
    assert "unknown preset" in capsys.readouterr().err
    bad = ["train", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "r3"), "--grad-accum", "0", "-q"]
    assert main(bad) == 2
    assert "grad_accum must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r3").exists()
    gap = ["train", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "r4"), "--pair-fraction", "1"]
    assert main([*gap, "--pair-gap", "0.4", "0.1", "-q"]) == 2
    assert "pair gap must be two seconds 0 <= lo <= hi" in capsys.readouterr().err
    index = tmp_path / "prepared" / "index.jsonl"  # as an older flowtts prepared it: no speech bounds
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    index.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "speech"}) + "\n" for r in rows))
    assert main([*gap, "--pair-gap", "0.1", "0.4", "--batch-frames", "2000", "-q"]) == 2
    err = capsys.readouterr().err
    assert "no speech bounds" in err and "flowtts data prepare" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r4").exists()


def test_fine_tuning_with_extend_vocab_adds_the_datasets_new_units(tmp_path, capsys, caplog):
    import pytest
    import torch

    import flowtts
    from flowtts.model.build import EMBEDDING_KEY
    from train.test_data import write_chinese_corpus

    pytest.importorskip("rjieba")
    base = tmp_path / "base.safetensors"
    flowtts.save(tiny_model({c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz")}), base)
    write_chinese_corpus(str(tmp_path / "zh"))
    assert main(["data", "prepare", str(tmp_path / "zh" / "metadata.csv"), "--out", str(tmp_path / "p"), "-q"]) == 0
    args = ["train", "--data", str(tmp_path / "p"), "--init", str(base), "--steps", "1", "--warmup", "1"]
    args += ["--batch-frames", "400", "--save-every", "1"]

    assert main([*args, "--out", str(tmp_path / "plain"), "-q"]) == 0
    warned = caplog.text
    assert "outside the vocabulary" in warned and "--extend-vocab adds them" in warned and "hao3" in warned

    assert main([*args, "--out", str(tmp_path / "grown"), "--extend-vocab"]) == 0
    assert "vocabulary extended by 9 units: hao3 hui2 jia1" in capsys.readouterr().err
    grown = flowtts.load(tmp_path / "grown" / "model.safetensors")
    base_model = flowtts.load(base)
    new = [u for u in grown.vocab_char_map if u not in base_model.vocab_char_map]
    assert "hao3" in new and all(grown.vocab_char_map[u] >= 27 for u in new)
    assert all(grown.vocab_char_map[c] == i for c, i in base_model.vocab_char_map.items())
    rows = grown.state_dict()[EMBEDDING_KEY].shape[0]
    assert rows == 28 + len(new) and torch.isfinite(grown.state_dict()[EMBEDDING_KEY]).all()
    assert main([*args, "--out", str(tmp_path / "grown"), "--extend-vocab", "-q"]) == 0  # resumes: same vocabulary

    scratch = ["train", "--data", str(tmp_path / "p"), "--out", str(tmp_path / "s"), "--extend-vocab", "-q"]
    assert main(scratch) == 2
    assert "--extend-vocab extends the vocabulary of an --init checkpoint" in capsys.readouterr().err


def _train_args(tmp_path, out, *extra):
    return [
        "train",
        "--data",
        str(tmp_path / "prepared"),
        "--out",
        str(tmp_path / out),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-frames",
        "400",
        "--max-samples",
        "3",
        "--save-every",
        "2",
        "--seed",
        "7",
        "-q",
        *extra,
    ]


def test_the_same_seed_and_command_give_bit_identical_runs_from_scratch(tmp_path):
    import torch

    meta = write_corpus(str(tmp_path / "corpus"), n=6)
    assert main(["data", "prepare", meta, "--out", str(tmp_path / "prepared"), "-q"]) == 0
    torch.manual_seed(123)  # whatever the global generator holds, the seed decides
    assert main(_train_args(tmp_path, "a")) == 0
    torch.manual_seed(456)
    assert main(_train_args(tmp_path, "b")) == 0
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(_train_args(tmp_path, "c", "--seed", "8")) == 0
    c = torch.load(tmp_path / "c" / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_a_damaged_resume_state_is_named_with_what_to_do_and_left_alone(tmp_path, capsys):
    meta = write_corpus(str(tmp_path / "corpus"), n=6)
    assert main(["data", "prepare", meta, "--out", str(tmp_path / "prepared"), "-q"]) == 0
    assert main(_train_args(tmp_path, "run")) == 0
    last = tmp_path / "run" / "last.pt"
    for damage in (last.read_bytes()[:500], b""):
        last.write_bytes(damage)
        assert main(_train_args(tmp_path, "run", "--steps", "4")) == 2
        err = capsys.readouterr().err
        assert f"cannot resume from {last}" in err and "delete it to start this run afresh" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert last.read_bytes() == damage  # never overwritten


def test_distill_with_an_empty_heldout_set_stops_before_training(tmp_path, capsys):
    meta = write_corpus(str(tmp_path / "corpus"), n=6)
    assert main(["data", "prepare", meta, "--out", str(tmp_path / "prepared"), "-q"]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.jsonl").write_text("")
    (empty / "dataset.json").write_text("{}")
    import numpy as np

    np.save(empty / "mels.npy", np.zeros((0, 100), dtype=np.float16))
    teacher = tmp_path / "t.safetensors"
    import flowtts
    from flowtts.text import load_vocab

    flowtts.save(tiny_model(load_vocab(str(tmp_path / "prepared" / "vocab.txt"))), teacher)
    code = main(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--data",
            str(tmp_path / "prepared"),
            "--heldout",
            str(empty),
            "--out",
            str(tmp_path / "d"),
            "--steps",
            "2",
            "-q",
        ]
    )
    assert code == 2 and f"{empty} has no usable rows" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_eval_with_an_empty_heldout_csv_says_so(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("audio_file|text\n")
    assert main(["eval", "--heldout", str(path)]) == 2
    err = capsys.readouterr().err
    assert "has no rows with an audio file and a transcript" in err and "cross-sentence" not in err
