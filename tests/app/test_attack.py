"""The web app driven with gradio_client as an attacker would (issue #31): traversal, absolute paths, links,
foreign folders, five Starts, ``run0/`` against ``./run0``, steps 100000, a 20,000-character text, a request
that runs past its time and one whose client leaves. Nothing outside the workspace may change, at most
``max_runs`` training processes may run, and every request must be answered within its limit."""

import io
import os
import time
import zipfile

import pytest

from app.helpers import start_app
from flowtts.app.limits import Limits
from train.helpers import write_corpus

LIMITS = Limits(max_text=300, max_seconds=6, max_runs=1, max_models=2)
LOGIN = ("ann", "correct horse")
LONG = ("The red bird sang in the garden while the children played by the old stone wall. " * 4)[:290]


def _tree(root) -> dict:
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                found[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return found


def _training_processes() -> int:
    """This process's children that run ``flowtts train`` (from /proc; the app's own count elsewhere)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        count += parent == os.getpid() and b"flowtts.cli" in command and b"train" in command
    return count


def _refused(client, args, api_name, message, seconds):
    """The request is refused with ``message`` within ``seconds``."""
    start = time.perf_counter()
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=api_name)
    assert time.perf_counter() - start < seconds, (api_name, message)


def _speak(text, steps=None, model="builtin:student"):
    return [None, "", text, None, model, None, None, None, steps, None, None, 1.0, 1, False, 0.15, "float32",
            "as the model file says"]  # fmt: skip


def _zip_of(folder) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for root, _, files in os.walk(folder):
            for name in files:
                z.write(os.path.join(root, name), os.path.relpath(os.path.join(root, name), folder))
    path = os.path.join(os.path.dirname(folder), "corpus.zip")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def test_an_attacker_changes_nothing_outside_the_workspace_and_gets_only_bounded_work(tmp_path):
    client_module = pytest.importorskip("gradio_client")
    from flowtts.app.ui import shutdown

    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("vocab.txt", "dataset.json", "STOP", "app_run.log", "secret.txt"):
        (outside / name).write_text(f"theirs: {name}\n")
    ws = tmp_path / "ws"
    (ws / "foreign").mkdir(parents=True)
    for name in ("vocab.txt", "STOP", "app_run.log"):
        (ws / "foreign" / name).write_text(f"theirs: {name}\n")
    os.symlink(outside, ws / "link")
    zipped = _zip_of(os.path.dirname(write_corpus(str(tmp_path / "upload" / "corpus"), n=6)))
    before = {"outside": _tree(outside), "foreign": _tree(ws / "foreign")}

    app, url = start_app(ws, limits=LIMITS, auth=[LOGIN], concurrency=2)
    try:
        with pytest.raises(client_module.exceptions.AuthenticationError, match="Please login"):  # 6
            client_module.Client(url, verbose=False)
        client = client_module.Client(url, auth=LOGIN, verbose=False)
        app.flowtts_store.get("builtin:student")  # as `flowtts app` does before serving

        # 1, 2: prepare out of the workspace, into a foreign folder, from any file
        for source, out, against, message in [
            ("", "../victim", "", "outside the workspace"),
            ("", str(outside / "victim"), "", "outside the workspace"),
            ("", "link/victim", "", "outside the workspace"),
            ("", "foreign", "", "not made by the app"),
            (str(outside / "secret.txt"), "mine", "", "outside the workspace"),
            ("../outside", "mine", "", "outside the workspace"),
            ("link", "mine", "", "outside the workspace"),
            ("", "mine", "/etc/shadow", "outside the workspace"),
        ]:
            uploads = [] if source else [client_module.handle_file(zipped)]
            _refused(client, [source, uploads, out, against], "/prepare", message, 5)
        assert not (ws / "mine").exists() and not (tmp_path / "victim").exists()
        report = client.predict("", [client_module.handle_file(zipped)], "corpus", "", api_name="/prepare")
        assert "prepared in corpus" in report

        # 3, 4, 5: runs in foreign folders, with paths out, five Starts, one folder written three ways
        train = "--data corpus --preset tiny --steps 100000 --batch-frames 400 --save-every 100000"
        _refused(client, ["train", "foreign", train], "/start", "not made by the app", 5)
        _refused(client, ["train", "../victim", train], "/start", "outside the workspace", 5)
        _refused(client, ["train", "run9", "--data corpus --init /etc/passwd"], "/start", "--init .* outside", 5)
        _refused(client, ["train", "run9", "--data=../outside"], "/start", "--data .* outside", 5)
        state = client.predict("train", "run0", train, api_name="/start")[0]
        assert state.endswith("running"), state
        for folder in ("run0/", "./run0"):
            _refused(client, ["train", folder, train], "/start", "a run is already going in run0", 5)
        for folder in ("run1", "run2"):
            _refused(client, ["train", folder, train], "/start", r"the app runs at most 1 at once \(--max-runs\)", 5)
        assert _training_processes() == 1 == app.flowtts_runs.running()

        # 7, 8: work over the caps is refused at once; the model menu takes no path
        _refused(client, _speak("Hello.", steps=100000), "/speak", r"steps must be 1\.\.64", 5)
        _refused(client, _speak("a" * 20000), "/speak", "20000 characters; the app takes at most 300", 5)
        _refused(client, _speak("Hello.", model="/etc/passwd"), "/speak", "not in the list of choices", 5)

        # 7: a request over its time is stopped and its client told; one whose client leaves is stopped
        _refused(client, _speak(LONG, steps=64), "/speak", "stopped after 6 s", LIMITS.max_seconds + 6)
        job = client.submit(*_speak(LONG, steps=64), api_name="/speak")
        deadline = time.time() + 30
        while app.flowtts_jobs.active() == 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        job.cancel()
        left = time.perf_counter()
        while app.flowtts_jobs.active() and time.perf_counter() - left < 10:
            time.sleep(0.05)
        assert app.flowtts_jobs.active() == 0 and time.perf_counter() - left < 4
        assert app.flowtts_jobs.ended()[-1][1] == "speak stopped: the client has gone"
        assert _training_processes() <= 1
    finally:
        shutdown(app)  # runs started by the page end with it
    assert app.flowtts_runs.running() == 0 and _training_processes() == 0
    assert _tree(outside) == before["outside"] and _tree(ws / "foreign") == before["foreign"]
    assert sorted(os.listdir(tmp_path)) == ["outside", "upload", "ws"]
