"""What every tab's handlers share: errors turned into page messages, a request's job, Gradio's file values.

Every handler turns a bad input into a message shown in the page (``gradio.Error``) and never lets an
exception reach the server; each request runs as a :class:`~flowtts.app.limits.Job` that stops when its time
is up or its client has gone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil

from flowtts.app import engine
from flowtts.app.limits import JobBoard, WorkStopped

log = logging.getLogger("flowtts")

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, ImportError, WorkStopped)


def message(error: BaseException) -> str:
    """The text of a user error (a ``KeyError`` without the quotes ``str()`` adds)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error)


def guarded(fn):
    """Run a handler; a user error becomes a page message, anything else a short message and a log line."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as error:
            raise gr.Error(message(error), print_exception=False) from None  # the user's, not a bug
        except Exception as error:  # a bug must not take the app down: say so, log it, keep serving
            log.exception("request failed")
            raise gr.Error(f"internal error ({type(error).__name__}): {error}") from None

    return wrapper


def _client_waiting():
    """``() -> bool``: whether the client of the request being handled still waits for its answer.

    Gradio's queue marks an event dead when its client disconnects and drops it when the client cancels;
    Gradio has no public call for this, so the event is looked up once and, where that fails (another
    Gradio), the answer is always yes and only the time limit stops the work.
    """
    try:
        from gradio.context import LocalContext

        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        queue = blocks._queue
        event = next(e for job in queue.active_jobs if job for e in job if e._id == event_id)
    except Exception:
        return lambda: True

    def waiting() -> bool:
        return bool(event.alive) and any(job and event in job for job in list(queue.active_jobs))

    return waiting


@contextlib.contextmanager
def request_job(board: JobBoard, name: str):
    """A :class:`~flowtts.app.limits.Job` for the request being handled, ended on the board however it ends."""
    job = board.start(name, _client_waiting())
    try:
        yield job
    except BaseException as error:
        board.end(job, message(error) or type(error).__name__)
        raise
    board.end(job, "done")


def file_path(value) -> str | None:
    """A file path from a Gradio file value (a path string, a dict with ``path``, or ``None``)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "name", value) if not isinstance(value, str) else value


def optional_int(value) -> int | None:
    return None if value is None else int(value)


def served(path: str | None, results: engine.OutputFolders) -> str | None:
    """A copy of a file in a fresh result folder, which Gradio serves (the workspace may lie anywhere,
    and is not served as a whole)."""
    if not path:
        return None
    copy = os.path.join(results.new(), os.path.basename(path))
    shutil.copyfile(path, copy)
    return copy
