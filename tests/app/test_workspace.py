"""The web app's workspace and runs, as plain Python: every path the page names lies in the workspace, the app
writes only into folders it made, one run per folder and at most ``max_runs`` at once (issue #31, 1-5)."""

import os
import zipfile

import pytest

from flowtts.app import engine
from flowtts.app.runs import Runs, check_arguments
from flowtts.app.workspace import MARKER, Workspace
from train.helpers import write_corpus


def _tree(root) -> dict:
    """Every file under ``root`` with its bytes (what "nothing changed" compares)."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


@pytest.fixture
def space(tmp_path):
    """A workspace ``ws`` beside a folder ``outside`` and a folder ``ws/foreign`` the app did not make."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0\n" * 25)
    (outside / "vocab.txt").write_text("theirs\n")
    ws = Workspace(tmp_path / "ws")
    foreign = tmp_path / "ws" / "foreign"
    foreign.mkdir()
    for name, text in (("vocab.txt", "theirs\n"), ("dataset.json", "{}"), ("STOP", "keep\n"), ("app_run.log", "x")):
        (foreign / name).write_text(text)
    os.symlink(outside, tmp_path / "ws" / "link")
    return ws


def test_paths_outside_the_workspace_are_refused_whatever_way_they_are_written(space, tmp_path):
    outside = str(tmp_path / "outside")
    for value in ("../outside", outside, "link", "link/secret.txt", "a/../../outside", "/etc/passwd"):
        with pytest.raises(ValueError, match="is outside the workspace"):
            space.resolve(value, "the source")
    inside = space.resolve("data/../data/x", "the source")
    assert inside == os.path.join(space.root, "data", "x") == space.resolve(inside, "the source")
    with pytest.raises(ValueError, match="give the source"):
        space.resolve("  ", "the source")
    with pytest.raises(ValueError, match="not made by the app"):
        space.writable_folder("foreign", "the output folder")
    with pytest.raises(ValueError, match="not the workspace itself"):
        space.writable_folder(".", "the output folder")
    assert space.writable_folder("new/run", "the run folder") == (os.path.join(space.root, "new", "run"), False)
    assert not os.path.exists(os.path.join(space.root, "new"))  # checking creates nothing


def test_prepare_refuses_outside_and_foreign_folders_before_reading_or_writing_anything(space, tmp_path):
    before = _tree(tmp_path)
    write_corpus(os.path.join(space.root, "corpus"), n=4)
    made = _tree(tmp_path)
    refusals = [  # (source, output folder, against, message)
        ("corpus", "../victim", None, "outside the workspace"),  # 1: traversal
        ("corpus", str(tmp_path / "victim"), None, "outside the workspace"),
        ("corpus", "link/victim", None, "outside the workspace"),
        ("corpus", "foreign", None, "not made by the app"),  # 1: an existing folder's files replaced
        (str(tmp_path / "outside" / "secret.txt"), "mine", None, "outside the workspace"),  # 2: any file read
        ("../outside", "mine", None, "outside the workspace"),
        ("corpus", "mine", "/etc/shadow", "outside the workspace"),  # 2: the vocabulary check
        ("corpus", "mine", "builtin:../../x", "builtin or builtin:student"),
    ]
    for source, out, against, message in refusals:
        with pytest.raises(ValueError, match=message):
            engine.prepare(space, source, out, against)
    assert _tree(tmp_path) == made and not os.path.exists(os.path.join(space.root, "mine"))
    assert {k: v for k, v in made.items() if not k.startswith("ws/corpus")} == before

    # A row naming audio outside the workspace is refused, naming its line, before anything is written.
    with open(os.path.join(space.root, "corpus", "metadata.csv"), "a") as f:
        f.write("../../outside/secret.txt|a stolen row\n")
    with pytest.raises(ValueError, match="the audio of metadata line 6 .* is outside the workspace"):
        engine.prepare(space, "corpus", "mine")
    assert not os.path.exists(os.path.join(space.root, "mine"))


def test_a_failed_preparation_leaves_no_folder_and_a_good_one_marks_its_folder(space):
    os.makedirs(os.path.join(space.root, "bad"))
    with open(os.path.join(space.root, "bad", "metadata.csv"), "w") as f:
        f.write("missing.wav|no audio here\n")
    with pytest.raises(ValueError, match="no usable rows"):
        engine.prepare(space, "bad", "out")
    assert not os.path.exists(os.path.join(space.root, "out"))  # 2: no empty folder left behind
    write_corpus(os.path.join(space.root, "corpus"), n=4)
    report = engine.prepare(space, "corpus/metadata.csv", "out", "builtin")
    assert "prepared in out" in report and "builtin's vocabulary" in report
    assert os.path.isfile(os.path.join(space.root, "out", MARKER))
    with pytest.raises(ValueError, match="already holds a prepared dataset"):
        engine.prepare(space, "corpus", "out")


def test_an_uploaded_zip_is_unpacked_into_the_new_folder_and_a_zip_slip_is_refused(space, tmp_path):
    corpus = tmp_path / "mine"
    write_corpus(str(corpus), n=4)
    good = tmp_path / "corpus.zip"
    with zipfile.ZipFile(good, "w") as z:
        for folder, _, files in os.walk(corpus):
            for name in files:
                z.write(os.path.join(folder, name), os.path.relpath(os.path.join(folder, name), corpus))
    assert "prepared in up" in engine.prepare(space, None, "up", uploads=[str(good)])
    assert os.path.isfile(os.path.join(space.root, "up", "index.jsonl"))
    assert os.path.isfile(os.path.join(space.root, "up", "source", "metadata.csv"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("metadata.csv", "a.wav|hi\n")
        z.writestr("../../outside/owned.txt", "owned")
    before = _tree(tmp_path / "outside")
    with pytest.raises(ValueError, match="would land outside its folder"):
        engine.prepare(space, None, "evil", uploads=[str(evil)])
    assert _tree(tmp_path / "outside") == before and not os.path.exists(os.path.join(space.root, "evil"))
    with pytest.raises(ValueError, match="either a source in the workspace or uploaded files"):
        engine.prepare(space, "corpus", "both", uploads=[str(good)])


class FakeRun:
    """Stands for a training process (no process is started)."""

    started: list = []

    def __init__(self, command, args, out_dir, *, cwd=None):
        self.out_dir, self.cwd, self.alive = out_dir, cwd, True
        os.makedirs(out_dir, exist_ok=True)
        FakeRun.started.append(self)

    def running(self):
        return self.alive


def test_run_arguments_are_read_as_the_command_reads_them_and_paths_stay_inside(space, tmp_path):
    os.makedirs(os.path.join(space.root, "corpus", "prepared"))
    check_arguments("train", ["--data", "corpus/prepared", "--init", "builtin", "--steps", "5"], space)
    refused = [
        (["--data", "corpus/prepared", "--init", "/etc/passwd"], "--init '/etc/passwd' is outside"),  # 2: --init
        (["--data", "../outside"], "--data '../outside' is outside"),
        (["--data=link"], "--data 'link' is outside"),
        (["--steps", "5", "--data", "../outside"], "--data '../outside' is outside"),
        (["--da", "../outside"], "write --data in full, not --da"),  # argparse reads abbreviations
        (["--data", "corpus/prepared", "--init", "builtin:../../x"], "built-in names"),
        (["--data", "corpus/prepared", "--out", "elsewhere"], "not --out in the arguments"),
        (["--data", "corpus/prepared", "--ou=elsewhere"], "not --out in the arguments"),
        (["--data"], "--data needs a value"),
    ]
    for args, message in refused:
        with pytest.raises(ValueError, match=message):
            check_arguments("train", args, space)
    with pytest.raises(ValueError, match="--teacher '/etc/shadow' is outside"):
        check_arguments("distill", ["--teacher", "/etc/shadow", "--data", "corpus/prepared"], space)
    with pytest.raises(FileNotFoundError, match="no such file or folder in the workspace"):
        check_arguments("train", ["--data", "nothing/here"], space)


def test_every_argument_of_train_and_distill_that_names_a_file_is_checked():
    import argparse

    from flowtts.app.runs import PATH_ARGUMENTS
    from flowtts.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "distill"):
        strings = {
            a.dest
            for a in sub.choices[command]._actions
            if a.option_strings and a.nargs is None and a.type is None and a.choices is None and a.const is None
        }
        # --preset/--init-preset are preset names; --out is the page's run folder
        assert strings - {"out", "preset", "init_preset"} <= set(PATH_ARGUMENTS), command


def test_one_run_per_folder_by_resolved_path_at_most_max_runs_and_never_in_a_foreign_folder(space, tmp_path):
    os.makedirs(os.path.join(space.root, "corpus", "prepared"))
    FakeRun.started = []
    runs = Runs(space, max_runs=1, launch=FakeRun)
    args = "--data corpus/prepared --preset tiny"
    foreign = _tree(os.path.join(space.root, "foreign"))
    with pytest.raises(ValueError, match="not made by the app"):  # 3: STOP deleted, log overwritten
        runs.start("train", "foreign", args)
    assert _tree(os.path.join(space.root, "foreign")) == foreign
    with pytest.raises(ValueError, match="outside the workspace"):
        runs.start("train", "../victim", args)
    run = runs.start("train", "run0", args)
    assert run.cwd == space.root and os.path.isfile(os.path.join(space.root, "run0", MARKER))
    for same in ("run0/", "./run0", os.path.join(space.root, "run0"), "x/../run0"):  # 5: strings compared
        with pytest.raises(ValueError, match="a run is already going in run0"):
            runs.start("train", same, args)
    with pytest.raises(ValueError, match=r"1 run\(s\) going \(run0\); the app runs at most 1 at once \(--max-runs\)"):
        runs.start("train", "run1", args)  # 4: no cap
    assert len(FakeRun.started) == 1 and runs.running() == 1 and runs.get("./run0/") is run
    run.alive = False
    assert runs.start("train", "run1", args) is not run  # the slot is free again
    with pytest.raises(ValueError, match="'train' or 'distill'"):
        runs.start("serve", "run2", args)
