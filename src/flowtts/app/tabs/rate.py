"""The Rate tab: two samples of one text, and the listener's answer which is better, kept for training.

Each answer is appended at once to the preferences file in the workspace
(:func:`flowtts.app.engine.preferences_file`), one record per pair; the file can be downloaded (exported).
"""

from __future__ import annotations

import os

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits
from flowtts.app.tabs.common import guarded, request_job
from flowtts.app.workspace import Workspace

# Harvard sentences (IEEE 1969): phonetically balanced, short enough for one pair each.
EXAMPLES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
)
BUTTONS = (("A is better", "a"), ("B is better", "b"), ("Same", "same"))


def rate_tab(
    store: engine.ModelStore,
    limits: Limits,
    board: JobBoard,
    results: engine.OutputFolders,
    space: Workspace,
    default_model: str,
) -> None:
    """Lay out the Rate tab and wire it (``api_name`` ``"rate_pair"``, ``"rate_a"``, ``"rate_b"``,
    ``"rate_same"`` and ``"rate_export"``)."""
    import gradio as gr

    choices = [c for c in store.choices() if c != engine.CHECKPOINT_CHOICE]
    where = f"{engine.PREFERENCES_FOLDER}/{engine.PREFERENCES_FILE}"
    with gr.Tab("Rate"):
        gr.Markdown(
            "Two samples of one text by one model (two seeds): listen to both and say which is better. "
            f"Each answer is added at once to `{where}` in the workspace, for training a preference model."
        )
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Text to say", lines=2, elem_id="rate-text")
                example = gr.Dropdown(list(EXAMPLES), value=None, label="...or pick one", elem_id="rate-example")
                model = gr.Dropdown(
                    choices, value=default_model if default_model in choices else choices[0], label="Model"
                )
                steps = gr.Number(0, label=f"steps (0: the model's own; 1..{limits.max_steps})", precision=0)
                seed = gr.Number(value=-1, precision=0, label="seed of A (-1: random; B takes the next one)")
                go = gr.Button("Generate two samples", variant="primary", elem_id="rate-go")
            with gr.Column():
                audio_a = gr.Audio(label="A", type="filepath", elem_id="rate-audio-a")
                audio_b = gr.Audio(label="B", type="filepath", elem_id="rate-audio-b")
                with gr.Row():
                    buttons = [gr.Button(label, elem_id=f"rate-{choice}") for label, choice in BUTTONS]
                status = gr.Textbox(label="Answers", interactive=False, elem_id="rate-status")
                export = gr.Button("Download the answers", elem_id="rate-export")
                download = gr.File(label="preferences file", elem_id="rate-download")
        pending = gr.State(None)  # the pair waiting for its one answer
        answered = gr.State(0)  # answers this page has given

        example.change(lambda chosen: chosen or gr.update(), inputs=example, outputs=text)

        @guarded
        def on_generate(txt, choice, n, sd, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
            with request_job(board, "rate") as job:
                pair = engine.rate_pair(
                    store.get(choice), txt, out_dir=results.new(), seed=sd, steps=n or None, model_name=choice,
                    limits=limits, job=job, vocoder=store.vocoder,
                )  # fmt: skip
            stored = engine.count_preferences(space)
            note = f"seeds {pair.seed} and {pair.seed + 1}: listen to both, then choose ({stored} answers stored)"
            return pair.wav_a, pair.wav_b, pair, note

        go.click(on_generate, inputs=[text, model, steps, seed], outputs=[audio_a, audio_b, pending, status],
                 api_name="rate_pair")  # fmt: skip

        for button, (_, choice) in zip(buttons, BUTTONS):
            button.click(_answer(space, choice), inputs=[pending, answered], outputs=[pending, answered, status],
                         api_name=f"rate_{choice}")  # fmt: skip

        @guarded
        def on_export():
            folder = os.path.join(results.root, "preferences_export")  # one copy, replaced by the next download
            os.makedirs(folder, exist_ok=True)
            return engine.export_preferences(space, folder)

        export.click(on_export, outputs=download, api_name="rate_export")


def _answer(space: Workspace, choice: str):
    """The handler of one answer button: the answer appended, the pair cleared (one answer per pair)."""

    @guarded
    def on_answer(pair, given):
        stored = engine.record_preference(space, pair, choice, answers=int(given or 0))
        return None, int(given or 0) + 1, f"{stored} answers stored ('{choice}' for the last pair)"

    return on_answer
