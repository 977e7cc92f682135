"""Training runs started from the web app: one process per run, in folders of the workspace.

:class:`Run` is one ``flowtts train``/``distill`` process; :class:`Runs` is the app's set of them: one run
per folder (compared by resolved path), at most ``max_runs`` at once, folders and every path in the
arguments inside the workspace, and every run ended when the app ends (:meth:`Runs.close`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from flowtts.app.workspace import Workspace

COMMANDS = ("train", "distill")
BUILTIN_MODELS = ("builtin", "builtin:student")
# Arguments of train/distill that name files or folders (argparse dests), and the names that are not paths.
PATH_ARGUMENTS = ("data", "heldout", "init", "vocab", "recognizer", "teacher", "student")
NAMES = {
    "init": BUILTIN_MODELS,
    "teacher": BUILTIN_MODELS,
    "student": BUILTIN_MODELS,
    "recognizer": ("builtin",),
}
LOG_NAME = "app_run.log"


class Run:
    """A ``flowtts train`` or ``flowtts distill`` run in its own process, watched from the page.

    Stopping writes ``STOP`` into the run directory: the run checkpoints (``last.pt``, resumable) and exits.

    Args:
        command: ``"train"`` or ``"distill"``.
        args: Its arguments (without ``--out``).
        out_dir: The run folder (created).
        cwd: Working directory of the process (relative paths in ``args`` start there).
    """

    def __init__(self, command: str, args: Sequence[str], out_dir: str, *, cwd: str | None = None):
        if command not in COMMANDS:
            raise ValueError(f"command must be 'train' or 'distill', got {command!r}")
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        stop = os.path.join(out_dir, "STOP")
        if os.path.exists(stop):  # left by an earlier run: it would stop this one at once
            os.remove(stop)
        self.log_path = os.path.join(out_dir, LOG_NAME)
        cmd = [sys.executable, "-m", "flowtts.cli", command, *args, "--out", out_dir, "-q"]
        self.command = " ".join(cmd[2:])
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ flowtts {' '.join(cmd[3:])}\n")
            log.flush()
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 120) -> int | None:
        """Ask the run to checkpoint and exit; wait up to ``timeout`` seconds. Returns the exit code."""
        if self.running():
            with open(os.path.join(self.out_dir, "STOP"), "w") as f:
                f.write("stop\n")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def end(self, timeout: float = 10) -> int:
        """Stop the run for good: ``STOP`` first, then terminate, then kill. Returns the exit code."""
        code = self.stop(timeout)
        if code is None:
            self.process.terminate()
            try:
                code = self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        return code

    def status(self) -> dict:
        """Log tail, loss curve and latest sample of the run (what exists of them)."""
        tail = ""
        if os.path.exists(self.log_path):
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
        csv_tail = ""
        for name in ("train_log.csv", "distill_log.csv", "fewstep_log.csv"):  # distill --method M writes the last
            path = os.path.join(self.out_dir, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    lines = f.readlines()
                csv_tail = "".join(lines[:1] + lines[-5:])
        curve = os.path.join(self.out_dir, "loss.png")
        samples = os.path.join(self.out_dir, "samples")
        sample = None
        if os.path.isdir(samples):
            wavs = sorted((f for f in os.listdir(samples) if f.endswith("_gen.wav")), key=_step_of)
            sample = os.path.join(samples, wavs[-1]) if wavs else None
        code = self.process.poll()
        state = "running" if code is None else f"exited with code {code}"
        return {
            "state": f"{self.command}: {state}",
            "log": (csv_tail + "\n" + tail).strip(),
            "curve": curve if os.path.exists(curve) else None,
            "sample": sample,
        }


def _step_of(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else -1


def _path_values(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(flag, value)`` of every path argument in ``args``, as ``flowtts train``/``distill`` will read them.

    Every token that is exactly a path flag counts, whatever precedes it; a token that argparse could take
    for an abbreviation of a path flag (``--da``) or of ``--out`` is refused, so what is checked here is
    what the process reads.

    Raises:
        ValueError: ``--out`` or an abbreviated path flag.
    """
    flags = {"--" + dest.replace("_", "-"): dest for dest in PATH_ARGUMENTS}
    found = []
    for k, token in enumerate(args):
        if not token.startswith("--") or token == "--":
            continue
        name, equals, value = token.partition("=")
        if name == "--out" or (len(name) > 2 and "--out".startswith(name)):
            raise ValueError("give the run folder in its own field, not --out in the arguments")
        if name in flags:
            found.append((name, value if equals else (args[k + 1] if k + 1 < len(args) else None)))
        elif len(name) > 2 and any(flag.startswith(name) for flag in flags):
            full = " or ".join(flag for flag in flags if flag.startswith(name))
            raise ValueError(f"write {full} in full, not {name}")
    return found


def check_arguments(command: str, args: Sequence[str], workspace: Workspace) -> None:
    """Refuse arguments the page must not pass: ``--out`` (the run folder is its own field), or a path
    (``--data``, ``--init``, ``--teacher``, ...) outside the workspace or missing.

    Relative paths start at the workspace (the process runs there). The other arguments are the command's
    to check: a run it refuses exits at once, its message in the run's log.

    Raises:
        ValueError: The first argument refused.
        FileNotFoundError: A path that does not exist in the workspace.
    """
    if command not in COMMANDS:
        raise ValueError(f"command must be 'train' or 'distill', got {command!r}")
    for flag, value in _path_values(args):
        if value is None:
            raise ValueError(f"{flag} needs a value")
        names = NAMES.get(flag[2:], ())
        if value in names:
            continue
        if names and value.startswith("builtin"):  # the command would read it as a built-in name, not a path
            raise ValueError(f"{flag} {value!r}: the built-in names are {', '.join(names)}")
        workspace.existing(value, flag)


class Runs:
    """The runs of one app (thread-safe).

    Args:
        workspace: Where run folders and the files named in arguments must lie.
        max_runs: Training processes at once.
        launch: Starts one run, called as ``launch(command, args, folder, cwd=workspace root)``
            (default: :class:`Run`).
    """

    def __init__(self, workspace: Workspace, max_runs: int = 1, launch: Callable[..., Run] = Run):
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
            raise ValueError(f"max_runs must be an integer >= 1, got {max_runs!r}")
        self.workspace = workspace
        self.max_runs = max_runs
        self._launch = launch
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def start(self, command: str, folder: str, arguments: str) -> Run:
        """Start ``flowtts <command> <arguments> --out <folder>`` in its own process.

        Raises:
            ValueError: A bad command, folder or argument; a run already going in the folder (whatever
                way it is written); ``max_runs`` runs going.
            FileNotFoundError: A path in the arguments that does not exist.
        """
        if command not in COMMANDS:
            raise ValueError(f"command must be 'train' or 'distill', got {command!r}")
        path, exists = self.workspace.writable_folder(folder, "the run folder")
        try:
            args = shlex.split(arguments or "")
        except ValueError as error:
            raise ValueError(f"the arguments cannot be split into words: {error}") from None
        check_arguments(command, args, self.workspace)
        with self._lock:
            current = self._runs.get(path)
            if current is not None and current.running():
                raise ValueError(f"a run is already going in {self.workspace.show(path)}")
            going = [self.workspace.show(p) for p, run in self._runs.items() if run.running()]
            if len(going) >= self.max_runs:
                raise ValueError(
                    f"{len(going)} run(s) going ({', '.join(going)}); the app runs at most {self.max_runs} "
                    "at once (--max-runs): stop one first"
                )
            if not exists:
                self.workspace.make_folder(path)
            run = self._launch(command, args, path, cwd=self.workspace.root)
            self._runs[path] = run
            return run

    def get(self, folder: str) -> Run | None:
        """The run started in ``folder`` (any spelling of it), or ``None``.

        Raises:
            ValueError: ``folder`` is outside the workspace.
        """
        return self._runs.get(self.workspace.resolve(folder, "the run folder"))

    def running(self) -> int:
        """Runs whose process is alive."""
        with self._lock:
            return sum(run.running() for run in self._runs.values())

    def close(self, timeout: float = 10) -> None:
        """End every run (the app is closing): ``STOP``, then terminate, then kill."""
        with self._lock:
            runs = [run for run in self._runs.values() if run.running()]
        for run in runs:
            run.end(timeout)
