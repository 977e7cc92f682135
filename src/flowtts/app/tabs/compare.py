"""The Compare tab: one text and one seed through the teacher's samplers and the distilled student."""

from __future__ import annotations

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits
from flowtts.app.tabs.common import file_path, guarded, request_job


def compare_tab(store: engine.ModelStore, limits: Limits, board: JobBoard, results: engine.OutputFolders) -> None:
    """Lay out the Compare tab and wire it (``api_name="compare"``): a column per
    :data:`~flowtts.app.engine.COMPARE_SAMPLERS` row."""
    import gradio as gr

    with gr.Tab("Compare"):
        gr.Markdown("One text and one seed through the teacher's samplers and the distilled student.")
        text = gr.Textbox(label="Text", value="My mother lost the black umbrella in the garden.")
        seed = gr.Number(value=0, precision=0, label="seed")
        student = gr.File(label="student (empty: the built-in one)", type="filepath")
        go = gr.Button("Compare", variant="primary")
        outputs = []
        with gr.Row():
            for k, (label, _, _) in enumerate(engine.COMPARE_SAMPLERS):
                with gr.Column():
                    outputs.append(gr.Audio(label=label, type="filepath"))
                    outputs.append(gr.Image(label="mel", type="filepath"))
                    outputs.append(gr.Textbox(label="calls and time", elem_id=f"compare-info-{k}"))

        @guarded
        def on_compare(txt, sd, student_file, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
            folder = results.new()
            with request_job(board, "compare") as job:
                rows = engine.compare(
                    store, txt, out_dir=folder, seed=sd, student=file_path(student_file), limits=limits, job=job
                )
            return [value for _, speech in rows for value in (speech.wav, speech.mel_png, speech.summary())]

        go.click(on_compare, inputs=[text, seed, student], outputs=outputs, api_name="compare")
