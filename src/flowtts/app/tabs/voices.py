"""The Multi-voice tab: up to :data:`MAX_VOICES` named voices, the text tagged ``[name]`` where each speaks."""

from __future__ import annotations

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits
from flowtts.app.tabs.common import file_path, guarded, optional_int, request_job

MAX_VOICES = 4
FIELDS = 5  # per voice: name, reference audio, its text, speed, seed


def voices_tab(store: engine.ModelStore, limits: Limits, board: JobBoard, results: engine.OutputFolders) -> None:
    """Lay out the Multi-voice tab and wire it (``api_name="voices"``)."""
    import gradio as gr

    choices = list(store.choices())
    with gr.Tab("Multi-voice"):
        gr.Markdown("Name each voice; tag the text with `[name]` (text before the first tag: the first voice).")
        count, fields = _voice_slots()
        text = gr.Textbox(label="Text", lines=4, value="[main] Hello there. [other] And hello to you.")
        model = gr.Dropdown(choices[:2], value=choices[0], label="Model")
        go = gr.Button("Synthesise", variant="primary")
        audio = gr.Audio(label="Speech", type="filepath")
        mel = gr.Image(label="Mel spectrogram", type="filepath")
        info = gr.Textbox(label="Timing")

        @guarded
        def on_voices(n, choice, txt, *values, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 -- Gradio's way
            voices = []
            for k in range(int(n)):
                name, ref_audio, ref_text, speed, seed = values[FIELDS * k : FIELDS * (k + 1)]
                voices.append(engine.VoiceSlot(name or "", file_path(ref_audio), ref_text, speed, optional_int(seed)))
            with request_job(board, "multi-voice") as job:
                speech = engine.speak_voices(
                    store.get(choice), voices, txt, out_dir=results.new(), model_name=choice,
                    limits=limits, job=job, vocoder=store.vocoder,
                )  # fmt: skip
            return speech.wav, speech.mel_png, speech.summary()

        go.click(on_voices, inputs=[count, model, text, *fields], outputs=[audio, mel, info], api_name="voices")


def _voice_slots() -> tuple[object, list]:
    """The voices' rows (two shown, up to :data:`MAX_VOICES`) with their add and remove buttons: the
    ``gr.State`` of how many are shown, and every row's fields in order."""
    import gradio as gr

    count = gr.State(2)
    rows, fields = [], []
    for k in range(MAX_VOICES):
        with gr.Row(visible=k < 2) as row:
            fields += [
                gr.Textbox(value=["main", "other", "", ""][k], label=f"voice {k + 1} name"),
                gr.Audio(label="reference", sources=["upload", "microphone"], type="filepath"),
                gr.Textbox(label="its text"),
                gr.Number(value=1.0, label="speed"),
                gr.Number(value=-1, precision=0, label="seed (-1: run's)"),
            ]
        rows.append(row)
    with gr.Row():
        add = gr.Button("add voice")
        remove = gr.Button("remove last voice")

    def resize(n, delta):
        n = max(1, min(MAX_VOICES, n + delta))
        return [n] + [gr.Row(visible=k < n) for k in range(MAX_VOICES)]

    add.click(lambda n: resize(n, 1), inputs=count, outputs=[count, *rows])
    remove.click(lambda n: resize(n, -1), inputs=count, outputs=[count, *rows])
    return count, fields
