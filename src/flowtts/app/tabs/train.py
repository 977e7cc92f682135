"""The Train tab: prepare a dataset in the workspace, and start, stop and watch ``flowtts train`` or
``flowtts distill`` runs there."""

from __future__ import annotations

from flowtts.app import engine
from flowtts.app.limits import Limits
from flowtts.app.runs import Runs
from flowtts.app.tabs.common import file_path, guarded, served
from flowtts.app.workspace import Workspace


def train_tab(
    store: engine.ModelStore, limits: Limits, space: Workspace, runs: Runs, results: engine.OutputFolders
) -> None:
    """Lay out the Train tab and wire it (``api_name`` ``prepare``, ``start``, ``stop`` and ``refresh``)."""
    import gradio as gr

    with gr.Tab("Train"):
        gr.Markdown(
            "Paths are relative to the app's workspace; nothing outside it is read or written. "
            "Bring data in by uploading it. The app writes only into folders it made."
        )
        _prepare_section(store, space)
        _runs_section(runs, limits, results)


def _prepare_section(store: engine.ModelStore, space: Workspace) -> None:
    """Dataset preparation (``flowtts prepare``) from a folder in the workspace or an upload."""
    import gradio as gr

    gr.Markdown("### Prepare a dataset")
    with gr.Row():
        source = gr.Textbox(
            label="folder with metadata.csv, or a metadata file (audio_file|text), in the workspace",
            elem_id="prepare-source",
        )
        upload = gr.File(
            label="...or upload a .zip (metadata.csv + audio) or metadata.csv and its audio files",
            file_count="multiple",
            type="filepath",
        )
    with gr.Row():
        prepared = gr.Textbox(label="output folder (new)", elem_id="prepare-out")
        against = gr.Textbox(label="check units against (builtin or a checkpoint in the workspace; optional)")
    go = gr.Button("Prepare", elem_id="prepare-go")
    report = gr.Textbox(label="Report", lines=6, elem_id="prepare-report")

    @guarded
    def on_prepare(src, files, out, vocab_of):
        if not out:
            raise ValueError("give the output folder (a new folder in the workspace)")
        uploads = [file_path(f) for f in (files or [])]
        return engine.prepare(space, src or None, out, vocab_of or None, uploads=uploads, store=store)

    go.click(on_prepare, inputs=[source, upload, prepared, against], outputs=report, api_name="prepare")


def _runs_section(runs: Runs, limits: Limits, results: engine.OutputFolders) -> None:
    """Runs in workspace folders: start, stop (a resumable checkpoint) and refresh their state, log, loss
    curve and latest sample."""
    import gradio as gr

    gr.Markdown(f"### Run `flowtts train` or `flowtts distill` (at most {limits.max_runs} at once)")
    with gr.Row():
        command = gr.Dropdown(["train", "distill"], value="train", label="command")
        folder = gr.Textbox(label="run folder (--out; new, or made by the app)")
        arguments = gr.Textbox(label="arguments", value="--data corpus/prepared --init builtin --steps 100")
    with gr.Row():
        start = gr.Button("Start", variant="primary")
        stop = gr.Button("Stop (checkpoint, resumable)")
        refresh = gr.Button("Refresh")
    outputs = [
        gr.Textbox(label="State"),
        gr.Textbox(label="Log", lines=10),
        gr.Image(label="Loss", type="filepath"),
        gr.Audio(label="Latest logged sample", type="filepath"),
    ]

    def status_of(out):
        if not out:
            raise ValueError("give the run folder")
        run = runs.get(out)
        if run is None:
            return "no run started here for this folder", "", None, None
        s = run.status()
        return s["state"], s["log"], served(s["curve"], results), served(s["sample"], results)

    @guarded
    def on_start(cmd, out, args):
        runs.start(cmd, out, args)
        return status_of(out)

    @guarded
    def on_stop(out):
        run = runs.get(out) if out else None
        if run is None or not run.running():
            raise ValueError("no run is going in this folder")
        run.stop()
        return status_of(out)

    start.click(on_start, inputs=[command, folder, arguments], outputs=outputs, api_name="start")
    stop.click(on_stop, inputs=folder, outputs=outputs, api_name="stop")
    refresh.click(guarded(status_of), inputs=folder, outputs=outputs, api_name="refresh")
