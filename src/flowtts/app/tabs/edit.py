"""The Edit tab: a recording with parts of it said anew (``flowtts edit``)."""

from __future__ import annotations

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits
from flowtts.app.tabs.common import file_path, guarded, request_job


def edit_tab(store: engine.ModelStore, limits: Limits, board: JobBoard, results: engine.OutputFolders) -> None:
    """Lay out the Edit tab and wire it (``api_name="edit"``)."""
    import gradio as gr

    choices = list(store.choices())
    with gr.Tab("Edit"):
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(label="Recording", sources=["upload", "microphone"], type="filepath")
                text = gr.Textbox(label="Transcript of the whole recording after the edit", lines=3)
                parts = gr.Textbox(label="Parts to regenerate (start-end seconds, comma separated)")
                model = gr.Dropdown(choices[:2], value=choices[0], label="Model")
                seed = gr.Number(value=-1, precision=0, label="seed (-1: random)")
                go = gr.Button("Edit", variant="primary")
            with gr.Column():
                original = gr.Audio(label="Original", type="filepath")
                edited = gr.Audio(label="Edited", type="filepath")
                mel = gr.Image(label="Edited mel", type="filepath")
                info = gr.Textbox(label="Timing")

        @guarded
        def on_edit(recording, txt, spans, choice, sd, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
            with request_job(board, "edit") as job:
                speech = engine.edit(
                    store.get(choice), file_path(recording), txt, spans, out_dir=results.new(), seed=sd,
                    model_name=choice, limits=limits, job=job, vocoder=store.vocoder,
                )  # fmt: skip
            return file_path(recording), speech.wav, speech.mel_png, speech.summary()

        go.click(
            on_edit, inputs=[audio, text, parts, model, seed], outputs=[original, edited, mel, info], api_name="edit"
        )
