"""How much work one request of the web app may ask for, and how a request's work is stopped.

:class:`Limits` holds the caps (text length, solver steps, recording length, time per request, models
kept loaded, training runs at once); every page action checks its inputs against them before it touches
anything. A :class:`Job` is one request's work: it is checked between solver steps (``CFM.sample``'s
``on_step``) and stops with :class:`WorkStopped` once the request's time is up or its client has gone.
:class:`JobBoard` counts the jobs in flight and keeps how the last ones ended (for the page and tests).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flowtts.synthesis.edit import MAX_EDIT_SECONDS

# Solver steps a request may ask for: twice F5-TTS's default of 32. Past 32 Euler steps the speech no
# longer changes audibly, and every step is one more network call (two with guidance), so a larger number
# only occupies a worker.
MAX_STEPS = 64


def _positive_number(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Limits:
    """The web app's caps on one request, and on what the app holds at once.

    Attributes:
        max_text: Characters of one text to say (typed or uploaded), transcript or multi-voice text
            (``--max-text``). 2000 characters are about two minutes of speech.
        max_seconds: Wall time of one request; its work is stopped after it and the client told
            (``--max-seconds``).
        max_steps: Solver steps one request may ask for (:data:`MAX_STEPS`).
        max_recording_seconds: Length of an uploaded reference clip or recording to edit: what one
            sampling call holds (:data:`flowtts.synthesis.edit.MAX_EDIT_SECONDS`; a reference clip is
            cut to 12 s anyway, but a longer one is read and transcribed whole first).
        max_models: Models kept loaded; the least recently used is dropped (``--max-models``).
        max_runs: Training processes at once (``--max-runs``).
        max_upload_mb: Size of one uploaded file, refused by Gradio before it is stored
            (``--max-upload-mb``; 2048 MB holds an official F5TTS_v1_Base ``.safetensors``).
        keep_outputs: Result folders kept on disk; older ones are removed (the page's links to them
            stop working).
        keep_seconds: Age after which Gradio's copies of uploads and results are deleted (checked every
            10 minutes).
    """

    max_text: int = 2000
    max_seconds: float = 300.0
    max_steps: int = MAX_STEPS
    max_recording_seconds: float = MAX_EDIT_SECONDS
    max_models: int = 3
    max_runs: int = 1
    max_upload_mb: int = 2048
    keep_outputs: int = 64
    keep_seconds: int = 3600

    def __post_init__(self):
        counts = ("max_text", "max_steps", "max_models", "max_runs", "max_upload_mb", "keep_outputs", "keep_seconds")
        for name in counts:
            _positive_int(getattr(self, name), name)
        for name in ("max_seconds", "max_recording_seconds"):
            _positive_number(getattr(self, name), name)

    def check_text(self, text: str | None, what: str = "the text to say") -> None:
        """Refuse a text longer than :attr:`max_text` characters, naming the cap.

        Raises:
            ValueError: Too long.
        """
        if text is not None and len(text) > self.max_text:
            raise ValueError(
                f"{what} has {len(text)} characters; the app takes at most {self.max_text} per request "
                f"(--max-text); split it, or use `flowtts infer` for long texts"
            )

    def check_steps(self, steps) -> int | None:
        """The step count of a page field: ``None`` (empty: the model's own) or an integer in 1..max_steps.

        Raises:
            ValueError: Not a whole number, below 1 or above :attr:`max_steps`.
        """
        if steps is None or steps == "":
            return None
        if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not math.isfinite(steps):
            raise ValueError(f"steps must be a whole number, got {steps!r}")
        if steps != int(steps):
            raise ValueError(f"steps must be a whole number, got {steps!r}")
        if not 1 <= steps <= self.max_steps:
            raise ValueError(
                f"steps must be 1..{self.max_steps} (leave it empty for the model's own), got {int(steps)}; "
                f"more steps than {self.max_steps} no longer change the speech and only take longer"
            )
        return int(steps)

    def check_recording(self, path: str | None, what: str) -> None:
        """Refuse an audio file longer than :attr:`max_recording_seconds`, before it is decoded.

        Raises:
            ValueError: Too long (the message names the cap).
        """
        if not path:
            return
        seconds = audio_seconds(path)
        if seconds is not None and seconds > self.max_recording_seconds:
            raise ValueError(
                f"{what} is {seconds:.1f} s long; the app takes recordings of at most "
                f"{self.max_recording_seconds:g} s (one sampling call holds at most that much audio); "
                "cut it to the part you need"
            )


def audio_seconds(path: str) -> float | None:
    """Length in seconds of an audio file from its header, or ``None`` when the header does not say."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception:  # not a file soundfile reads: read_audio says so later with its own message
        return None
    return info.frames / info.samplerate if info.samplerate and info.frames >= 0 else None


class WorkStopped(RuntimeError):
    """A request's work was stopped: its time ran out or its client went away (the message says which)."""


class Job:
    """One request's work: a deadline and a way to learn that nobody waits for the result any more.

    Args:
        name: What the request does (``"speak"``), for the board.
        max_seconds: Wall time allowed from now.
        waiting: ``() -> bool``: whether the client still waits (default: always).
        clock: Time source (seconds; ``time.monotonic``).
    """

    def __init__(
        self,
        name: str,
        max_seconds: float,
        waiting: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        _positive_number(max_seconds, "max_seconds")
        self.name = name
        self.max_seconds = max_seconds
        self._waiting = waiting or (lambda: True)
        self._clock = clock
        self.started = clock()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the work at its next check (thread-safe)."""
        self._cancelled.set()

    def check(self, *_step) -> None:
        """Raise :class:`WorkStopped` if the time is up or the client has gone; usable as ``on_step``.

        Raises:
            WorkStopped: With the reason.
        """
        if self._cancelled.is_set() or not self._waiting():
            self._cancelled.set()
            raise WorkStopped(f"{self.name} stopped: the client has gone")
        if self._clock() - self.started > self.max_seconds:
            raise WorkStopped(
                f"{self.name} stopped after {self.max_seconds:g} s, the app's limit per request (--max-seconds)"
            )

    def seconds(self) -> float:
        """Seconds since the job started."""
        return self._clock() - self.started


class JobBoard:
    """The jobs in flight and how the last ones ended (thread-safe; one per app).

    Args:
        limits: The app's :class:`Limits` (each job gets ``max_seconds``).
        keep: How many ended jobs to remember.
    """

    def __init__(self, limits: Limits, keep: int = 50):
        self.limits = limits
        self._lock = threading.Lock()
        self._active: set[Job] = set()
        self._ended: deque[tuple[str, str, float]] = deque(maxlen=keep)

    def start(self, name: str, waiting: Callable[[], bool] | None = None) -> Job:
        """A new job, counted as in flight until :meth:`end`."""
        job = Job(name, self.limits.max_seconds, waiting)
        with self._lock:
            self._active.add(job)
        return job

    def end(self, job: Job, outcome: str) -> None:
        """Record that ``job`` ended (``"done"``, or the error message)."""
        with self._lock:
            self._active.discard(job)
            self._ended.append((job.name, outcome, job.seconds()))

    def active(self) -> int:
        """Jobs in flight."""
        with self._lock:
            return len(self._active)

    def ended(self) -> list[tuple[str, str, float]]:
        """``(name, outcome, seconds)`` of the last ended jobs, oldest first."""
        with self._lock:
            return list(self._ended)

    def cancel_all(self) -> None:
        """Stop every job in flight at its next check (the app is closing)."""
        with self._lock:
            jobs = list(self._active)
        for job in jobs:
            job.cancel()


class Watched:
    """A loaded model seen through one :class:`Job`: its ``sample`` calls check the job between solver steps.

    Everything else is the model's own; the shared model itself is not changed.
    """

    def __init__(self, model, job: Job):
        self._model = model
        self._job = job

    def sample(self, *args, **kwargs):
        """``CFM.sample`` with the job's check as ``on_step``."""
        self._job.check()
        return self._model.sample(*args, on_step=self._job.check, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)
