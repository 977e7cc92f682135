import os

from flowtts.cli import main
from train.helpers import write_corpus


def test_data_prepare_and_train_from_the_command_line(tmp_path, capsys):
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
        "-q",
    ]
    assert main(args) == 0
    assert "step 3" in capsys.readouterr().out
    assert {"last.pt", "model.safetensors", "train_log.csv"} <= set(os.listdir(tmp_path / "run"))
    # running again resumes and finds the schedule finished
    assert main(args) == 0


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
