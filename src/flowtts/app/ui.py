"""The web app's page (Gradio): Speak, Multi-voice, Edit, Compare and Train tabs over :mod:`flowtts.app.engine`.

Every handler turns a bad input into a message shown in the page (``gradio.Error``) and never lets an
exception reach the server; requests go through Gradio's queue with a bounded concurrency, each under the
app's :class:`~flowtts.app.limits.Limits` as a :class:`~flowtts.app.limits.Job` that stops when its time is up
or its client has gone. Paths typed in the Train tab lie in the app's workspace.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits, WorkStopped
from flowtts.app.runs import Runs
from flowtts.app.workspace import Workspace

log = logging.getLogger("flowtts")

MAX_VOICES = 4
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, ImportError, WorkStopped)
REFERENCE_LABEL = (
    "Reference audio (empty: the built-in voice). The built-in models speak in their one voice: a clip sets "
    "only the speaking rate and loudness; an F5-TTS checkpoint clones it"
)


def _message(error: BaseException) -> str:
    """The text of a user error (a ``KeyError`` without the quotes ``str()`` adds)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error)


def _guarded(fn):
    """Run a handler; a user error becomes a page message, anything else a short message and a log line."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as error:
            raise gr.Error(_message(error), print_exception=False) from None  # the user's, not a bug
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
def _job(board: JobBoard, name: str):
    """A :class:`~flowtts.app.limits.Job` for the request being handled, ended on the board however it ends."""
    job = board.start(name, _client_waiting())
    try:
        yield job
    except BaseException as error:
        board.end(job, _message(error) or type(error).__name__)
        raise
    board.end(job, "done")


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

    from flowtts.utils.dtypes import DTYPE_NAMES

    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    limits = limits or Limits()
    space = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    store = engine.ModelStore(default_model, quantize=quantize, max_models=limits.max_models)
    runs = Runs(space, limits.max_runs)
    board = JobBoard(limits)
    choices = list(store.choices())

    def model_of(choice, checkpoint, vocab, config):
        return store.get(choice, _path(checkpoint), _path(vocab), _path(config))

    with gr.Blocks(title="flowtts") as app:
        gr.Markdown(
            "# flowtts\nF5-TTS-compatible flow-matching speech, offline. "
            f"Each request: at most {limits.max_text} characters, {limits.max_steps} steps, "
            f"{limits.max_recording_seconds:g} s recordings and {limits.max_seconds:g} s of work."
        )
        with gr.Tab("Speak"):
            with gr.Row():
                with gr.Column():
                    ref_audio = gr.Audio(
                        label=REFERENCE_LABEL,
                        sources=["upload", "microphone"],
                        type="filepath",
                        elem_id="speak-ref",
                    )
                    ref_text = gr.Textbox(label="Reference text (empty: transcribed, shown here for correction)")
                    text = gr.Textbox(label="Text to say", lines=4, elem_id="speak-text")
                    text_file = gr.File(label="...or a .txt", file_types=[".txt"], type="filepath")
                    model_choice = gr.Dropdown(choices, value=default_model, label="Model", elem_id="speak-model")
                    with gr.Accordion("Checkpoint file", open=False):
                        checkpoint = gr.File(label="checkpoint (.safetensors / .pt)", type="filepath")
                        vocab = gr.File(label="vocab.txt", type="filepath")
                        model_cfg = gr.File(label="model config (.yaml)", type="filepath")
                    with gr.Accordion("Advanced", open=False):
                        steps = gr.Number(label=f"steps (empty: the model's; 1..{limits.max_steps})", precision=0)
                        cfg = gr.Number(label="guidance strength (empty: the model's)")
                        sway = gr.Number(label="sway (empty: the model's)")
                        speed = gr.Slider(0.3, 2.0, value=1.0, step=0.05, label="speed")
                        with gr.Row():
                            seed = gr.Number(value=-1, precision=0, label="seed (-1: random)")
                            randomise = gr.Button("randomise seed")
                        remove_silence = gr.Checkbox(label="remove long silences")
                        cross_fade = gr.Slider(0.0, 1.0, value=0.15, step=0.05, label="cross-fade (s)")
                        dtype = gr.Dropdown(list(DTYPE_NAMES), value="float32", label="dtype")
                        clip = gr.Radio(list(engine.CLIP_USES), value="as the model file says", label="reference clip")
                    go = gr.Button("Synthesise", variant="primary", elem_id="speak-go")
                with gr.Column():
                    audio_out = gr.Audio(label="Speech", type="filepath", elem_id="speak-audio")
                    mel_out = gr.Image(label="Mel spectrogram", type="filepath", elem_id="speak-mel")
                    info_out = gr.Textbox(label="Timing", elem_id="speak-info")
                    used_seed = gr.Number(label="seed used", precision=0)
                    model_info = gr.Textbox(label="Model", lines=8)

            randomise.click(lambda: engine.choose_seed(None), outputs=seed)

            @_guarded
            def on_speak(
                ref, rtext, txt, tfile, choice, ckpt, voc, mcfg, n, g, sw, sp, sd, silence, fade, dt, use=None,
                progress=gr.Progress(track_tqdm=True),  # noqa: B008 -- Gradio injects it
            ):  # fmt: skip
                with _job(board, "speak") as job:
                    model = model_of(choice, ckpt, voc, mcfg)
                    words = txt if (txt or "").strip() else engine.read_text_file(_path(tfile), limits)
                    name = os.path.basename(_path(ckpt)) if choice == engine.CHECKPOINT_CHOICE else choice
                    speech = engine.speak(
                        model, _path(ref), rtext, words, out_dir=engine.new_output_dir(),
                        steps=n, cfg=g, sway=sw, speed=sp, seed=sd, remove_silence=silence, cross_fade=fade,
                        dtype=dt, clip=use, model_name=name, limits=limits, job=job,
                    )  # fmt: skip
                return speech.wav, speech.mel_png, speech.summary(), speech.seed, speech.ref_text, _describe(model)

            go.click(
                on_speak,
                inputs=[ref_audio, ref_text, text, text_file, model_choice, checkpoint, vocab, model_cfg,
                        steps, cfg, sway, speed, seed, remove_silence, cross_fade, dtype, clip],
                outputs=[audio_out, mel_out, info_out, used_seed, ref_text, model_info],
                api_name="speak",
            )  # fmt: skip

        with gr.Tab("Multi-voice"):
            gr.Markdown("Name each voice; tag the text with `[name]` (text before the first tag: the first voice).")
            count = gr.State(2)
            slots = []
            for k in range(MAX_VOICES):
                with gr.Row(visible=k < 2) as row:
                    name = gr.Textbox(value=["main", "other", "", ""][k], label=f"voice {k + 1} name")
                    audio = gr.Audio(label="reference", sources=["upload", "microphone"], type="filepath")
                    rtext = gr.Textbox(label="its text")
                    vspeed = gr.Number(value=1.0, label="speed")
                    vseed = gr.Number(value=-1, precision=0, label="seed (-1: run's)")
                slots.append((row, name, audio, rtext, vspeed, vseed))
            with gr.Row():
                add = gr.Button("add voice")
                remove = gr.Button("remove last voice")
            voices_text = gr.Textbox(label="Text", lines=4, value="[main] Hello there. [other] And hello to you.")
            voices_model = gr.Dropdown(choices[:2], value=choices[0], label="Model")
            voices_go = gr.Button("Synthesise", variant="primary")
            voices_audio = gr.Audio(label="Speech", type="filepath")
            voices_mel = gr.Image(label="Mel spectrogram", type="filepath")
            voices_info = gr.Textbox(label="Timing")

            def resize(n, delta):
                n = max(1, min(MAX_VOICES, n + delta))
                return [n] + [gr.Row(visible=k < n) for k in range(MAX_VOICES)]

            rows = [s[0] for s in slots]
            add.click(lambda n: resize(n, 1), inputs=count, outputs=[count, *rows])
            remove.click(lambda n: resize(n, -1), inputs=count, outputs=[count, *rows])

            @_guarded
            def on_voices(n, choice, txt, *fields, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
                voices = []
                for k in range(int(n)):
                    name, audio, rtext, vspeed, vseed = fields[5 * k : 5 * k + 5]
                    voices.append(engine.VoiceSlot(name or "", _path(audio), rtext, vspeed, _int(vseed)))
                with _job(board, "multi-voice") as job:
                    speech = engine.speak_voices(
                        store.get(choice), voices, txt, out_dir=engine.new_output_dir(), model_name=choice,
                        limits=limits, job=job,
                    )  # fmt: skip
                return speech.wav, speech.mel_png, speech.summary()

            voices_go.click(
                on_voices,
                inputs=[count, voices_model, voices_text, *[c for s in slots for c in s[1:]]],
                outputs=[voices_audio, voices_mel, voices_info],
                api_name="voices",
            )

        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column():
                    edit_audio = gr.Audio(label="Recording", sources=["upload", "microphone"], type="filepath")
                    edit_text = gr.Textbox(label="Transcript of the whole recording after the edit", lines=3)
                    edit_parts = gr.Textbox(label="Parts to regenerate (start-end seconds, comma separated)")
                    edit_model = gr.Dropdown(choices[:2], value=choices[0], label="Model")
                    edit_seed = gr.Number(value=-1, precision=0, label="seed (-1: random)")
                    edit_go = gr.Button("Edit", variant="primary")
                with gr.Column():
                    original = gr.Audio(label="Original", type="filepath")
                    edited = gr.Audio(label="Edited", type="filepath")
                    edit_mel = gr.Image(label="Edited mel", type="filepath")
                    edit_info = gr.Textbox(label="Timing")

            @_guarded
            def on_edit(audio, txt, parts, choice, sd, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
                with _job(board, "edit") as job:
                    speech = engine.edit(
                        store.get(choice), _path(audio), txt, parts, out_dir=engine.new_output_dir(), seed=sd,
                        model_name=choice, limits=limits, job=job,
                    )  # fmt: skip
                return _path(audio), speech.wav, speech.mel_png, speech.summary()

            edit_go.click(
                on_edit,
                inputs=[edit_audio, edit_text, edit_parts, edit_model, edit_seed],
                outputs=[original, edited, edit_mel, edit_info],
                api_name="edit",
            )

        with gr.Tab("Compare"):
            gr.Markdown("One text and one seed through the teacher's samplers and the distilled student.")
            compare_text = gr.Textbox(label="Text", value="My mother lost the black umbrella in the garden.")
            compare_seed = gr.Number(value=0, precision=0, label="seed")
            compare_student = gr.File(label="student (empty: the built-in one)", type="filepath")
            compare_go = gr.Button("Compare", variant="primary")
            outputs = []
            with gr.Row():
                for k, (label, _, _) in enumerate(engine.COMPARE_SAMPLERS):
                    with gr.Column():
                        outputs.append(gr.Audio(label=label, type="filepath"))
                        outputs.append(gr.Image(label="mel", type="filepath"))
                        outputs.append(gr.Textbox(label="calls and time", elem_id=f"compare-info-{k}"))

            @_guarded
            def on_compare(txt, sd, student, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
                folder = engine.new_output_dir()
                with _job(board, "compare") as job:
                    results = engine.compare(
                        store, txt, out_dir=folder, seed=sd, student=_path(student), limits=limits, job=job
                    )
                values = []
                for _, speech in results:
                    values += [speech.wav, speech.mel_png, speech.summary()]
                return values

            compare_go.click(
                on_compare, inputs=[compare_text, compare_seed, compare_student], outputs=outputs, api_name="compare"
            )

        with gr.Tab("Train"):
            gr.Markdown(
                "Paths are relative to the app's workspace; nothing outside it is read or written. "
                "Bring data in by uploading it. The app writes only into folders it made."
            )
            gr.Markdown("### Prepare a dataset")
            with gr.Row():
                source = gr.Textbox(
                    label="folder with metadata.csv, or a metadata file (audio_file|text), in the workspace",
                    elem_id="prepare-source",
                )
                dataset_upload = gr.File(
                    label="...or upload a .zip (metadata.csv + audio) or metadata.csv and its audio files",
                    file_count="multiple",
                    type="filepath",
                )
            with gr.Row():
                prepared = gr.Textbox(label="output folder (new)", elem_id="prepare-out")
                vocab_check = gr.Textbox(
                    label="check units against (builtin or a checkpoint in the workspace; optional)"
                )
            prepare_go = gr.Button("Prepare", elem_id="prepare-go")
            prepare_report = gr.Textbox(label="Report", lines=6, elem_id="prepare-report")

            @_guarded
            def on_prepare(src, files, out, against):
                if not out:
                    raise ValueError("give the output folder (a new folder in the workspace)")
                uploads = [_path(f) for f in (files or [])]
                return engine.prepare(space, src or None, out, against or None, uploads=uploads, store=store)

            prepare_go.click(
                on_prepare, inputs=[source, dataset_upload, prepared, vocab_check], outputs=prepare_report,
                api_name="prepare",
            )  # fmt: skip
            gr.Markdown(f"### Run `flowtts train` or `flowtts distill` (at most {limits.max_runs} at once)")
            with gr.Row():
                command = gr.Dropdown(["train", "distill"], value="train", label="command")
                run_dir = gr.Textbox(label="run folder (--out; new, or made by the app)")
                run_args = gr.Textbox(label="arguments", value="--data corpus/prepared --init builtin --steps 100")
            with gr.Row():
                start = gr.Button("Start", variant="primary")
                stop = gr.Button("Stop (checkpoint, resumable)")
                refresh = gr.Button("Refresh")
            run_state = gr.Textbox(label="State")
            run_log = gr.Textbox(label="Log", lines=10)
            run_curve = gr.Image(label="Loss", type="filepath")
            run_sample = gr.Audio(label="Latest logged sample", type="filepath")

            def status_of(out):
                if not out:
                    raise ValueError("give the run folder")
                run = runs.get(out)
                if run is None:
                    return "no run started here for this folder", "", None, None
                s = run.status()
                return s["state"], s["log"], _served(s["curve"]), _served(s["sample"])

            @_guarded
            def on_start(cmd, out, args):
                runs.start(cmd, out, args)
                return status_of(out)

            @_guarded
            def on_stop(out):
                run = runs.get(out) if out else None
                if run is None or not run.running():
                    raise ValueError("no run is going in this folder")
                run.stop()
                return status_of(out)

            run_outputs = [run_state, run_log, run_curve, run_sample]
            start.click(on_start, inputs=[command, run_dir, run_args], outputs=run_outputs, api_name="start")
            stop.click(on_stop, inputs=run_dir, outputs=run_outputs, api_name="stop")
            refresh.click(_guarded(status_of), inputs=run_dir, outputs=run_outputs, api_name="refresh")

        app.queue(default_concurrency_limit=concurrency, max_size=32)
    app.flowtts_store = store  # for tests and the CLI
    app.flowtts_runs = runs
    app.flowtts_jobs = board
    app.flowtts_workspace = space
    app.flowtts_limits = limits
    return app


def _served(path: str | None) -> str | None:
    """A copy of a run's file in a fresh temporary folder, which Gradio serves (the workspace may lie
    anywhere, and is not served as a whole)."""
    if not path:
        return None
    copy = os.path.join(engine.new_output_dir(), os.path.basename(path))
    shutil.copyfile(path, copy)
    return copy


def _path(value) -> str | None:
    """A file path from a Gradio file value (a path string, a dict with ``path``, or ``None``)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "name", value) if not isinstance(value, str) else value


def _int(value) -> int | None:
    return None if value is None else int(value)


def _describe(model) -> str:
    try:
        return engine.model_summary(model)
    except Exception as error:  # the summary is informative only
        return f"(no summary: {error})"


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
        **kw,
    )


def shutdown(app) -> None:
    """Stop the app's work in flight, end the runs it started, and close the server."""
    app.flowtts_jobs.cancel_all()
    app.flowtts_runs.close()
    app.close()


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
