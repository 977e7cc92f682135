"""The web app's page (Gradio): the Speak, Multi-voice, Edit, Compare, Rate and Train tabs of
:mod:`flowtts.app.tabs` joined, over :mod:`flowtts.app.engine`.

Every handler turns a bad input into a message shown in the page (``gradio.Error``) and never lets an
exception reach the server; requests go through Gradio's queue with a bounded concurrency, each under the
app's :class:`~flowtts.app.limits.Limits` as a :class:`~flowtts.app.limits.Job` that stops when its time is up
or its client has gone. Paths typed in the Train tab lie in the app's workspace.
"""

from __future__ import annotations

import os

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits
from flowtts.app.runs import Runs
from flowtts.app.tabs.compare import compare_tab
from flowtts.app.tabs.edit import edit_tab
from flowtts.app.tabs.rate import rate_tab
from flowtts.app.tabs.speak import speak_tab
from flowtts.app.tabs.train import train_tab
from flowtts.app.tabs.voices import voices_tab
from flowtts.app.workspace import Workspace


def build_app(
    default_model: str = "builtin",
    quantize: str | None = None,
    concurrency: int = 2,
    *,
    workspace: str | os.PathLike | Workspace | None = None,
    limits: Limits | None = None,
):
    """The Gradio ``Blocks`` of the app (not launched).

    Args:
        default_model: The model choice the page starts with.
        quantize: ``"int8"``: every model loaded quantised.
        concurrency: Requests run at once (the rest wait in the queue).
        workspace: The folder the page's paths lie in (default: ``flowtts_workspace`` in the current
            directory, made on first use).
        limits: The caps on each request and on what the app holds (default: :class:`Limits`'s).

    The app carries ``flowtts_store``, ``flowtts_runs``, ``flowtts_jobs``, ``flowtts_workspace`` and
    ``flowtts_limits``; :func:`shutdown` ends its runs and work.
    """
    import gradio as gr

    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    limits = limits or Limits()
    space = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    store = engine.ModelStore(default_model, quantize=quantize, max_models=limits.max_models)
    runs = Runs(space, limits.max_runs)
    board = JobBoard(limits)
    results = engine.OutputFolders(limits.keep_outputs)
    # Gradio keeps its own copy of every upload and result: drop those older than limits.keep_seconds
    with gr.Blocks(title="flowtts", delete_cache=(600, limits.keep_seconds)) as app:
        gr.Markdown(
            "# flowtts\nF5-TTS-compatible flow-matching speech, offline. "
            f"Each request: at most {limits.max_text} characters, {limits.max_steps} steps, "
            f"{limits.max_recording_seconds:g} s recordings and {limits.max_seconds:g} s of work."
        )
        speak_tab(store, limits, board, results, default_model)
        voices_tab(store, limits, board, results)
        edit_tab(store, limits, board, results)
        compare_tab(store, limits, board, results)
        rate_tab(store, limits, board, results, space, default_model)
        train_tab(store, limits, space, runs, results)
        app.queue(default_concurrency_limit=concurrency, max_size=32)
    app.flowtts_store = store  # for tests and the CLI
    app.flowtts_runs = runs
    app.flowtts_jobs = board
    app.flowtts_workspace = space
    app.flowtts_limits = limits
    app.flowtts_outputs = results
    return app


def launch(
    app,
    host: str = "127.0.0.1",
    port: int = 7860,
    inbrowser: bool = False,
    root_path: str | None = None,
    auth: list[tuple[str, str]] | None = None,
    **kw,
):
    """Serve ``app`` (blocking unless ``prevent_thread_lock=True`` is passed).

    Args:
        auth: ``(user, password)`` logins (Gradio's login page); needed for a non-loopback ``host``.

    Raises:
        ValueError: A non-loopback ``host`` without ``auth`` (:func:`flowtts.app.access.check_exposure`).
    """
    from flowtts.app.access import check_exposure

    check_exposure(host, auth)
    return app.launch(
        server_name=host,
        server_port=port,
        inbrowser=inbrowser,
        root_path=root_path or None,
        share=False,
        auth=auth or None,
        max_file_size=app.flowtts_limits.max_upload_mb * 1024 * 1024,
        **kw,
    )


def shutdown(app) -> None:
    """Stop the app's work in flight, end the runs it started, and close the server."""
    app.flowtts_jobs.cancel_all()
    app.flowtts_runs.close()
    app.close()
    app.flowtts_outputs.close()


def serve(app, host: str, port: int, **kw) -> None:
    """:func:`launch`, blocking until the app is stopped (Ctrl-C or SIGTERM); then :func:`shutdown`."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        launch(app, host, port, **kw)
    finally:
        shutdown(app)


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)
