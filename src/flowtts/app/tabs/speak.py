"""The Speak tab: one text in one voice, with every sampling option of ``flowtts infer``."""

from __future__ import annotations

import os

from flowtts.app import engine
from flowtts.app.limits import JobBoard, Limits
from flowtts.app.tabs.common import file_path, guarded, request_job

REFERENCE_LABEL = (
    "Reference audio (empty: the built-in voice). The built-in models speak in their one voice: a clip sets "
    "only the speaking rate and loudness; an F5-TTS checkpoint clones it"
)


def speak_tab(
    store: engine.ModelStore, limits: Limits, board: JobBoard, results: engine.OutputFolders, default_model: str
) -> None:
    """Lay out the Speak tab and wire it (``api_name="speak"``)."""
    import gradio as gr

    with gr.Tab("Speak"):
        with gr.Row():
            with gr.Column():
                inputs = _inputs(list(store.choices()), default_model, limits)
                go = gr.Button("Synthesise", variant="primary", elem_id="speak-go")
            with gr.Column():
                outputs = _outputs(ref_text=inputs[1])

        @guarded
        def on_speak(
            ref, rtext, txt, tfile, choice, ckpt, voc, mcfg, n, g, sw, sp, sd, silence, fade, dt, use=None,
            progress=gr.Progress(track_tqdm=True),  # noqa: B008 -- Gradio injects it
        ):  # fmt: skip
            with request_job(board, "speak") as job:
                model = store.get(choice, file_path(ckpt), file_path(voc), file_path(mcfg))
                words = txt if (txt or "").strip() else engine.read_text_file(file_path(tfile), limits)
                name = os.path.basename(file_path(ckpt)) if choice == engine.CHECKPOINT_CHOICE else choice
                speech = engine.speak(
                    model, file_path(ref), rtext, words, out_dir=results.new(),
                    steps=n or None, cfg=_optional_number(g, "guidance strength"),
                    sway=_optional_number(sw, "sway"), speed=sp, seed=sd, remove_silence=silence, cross_fade=fade,
                    dtype=dt, clip=use, model_name=name, limits=limits, job=job, vocoder=store.vocoder,
                )  # fmt: skip
            return speech.wav, speech.mel_png, speech.summary(), speech.seed, speech.ref_text, _describe(model)

        go.click(on_speak, inputs=inputs, outputs=outputs, api_name="speak")


def _inputs(choices: list[str], default_model: str, limits: Limits) -> list:
    """The Speak tab's inputs, in the order of ``/speak``'s arguments (the seed with its randomise button)."""
    import gradio as gr

    from flowtts.utils.dtypes import DTYPE_NAMES

    ref_audio = gr.Audio(label=REFERENCE_LABEL, sources=["upload", "microphone"], type="filepath", elem_id="speak-ref")
    ref_text = gr.Textbox(label="Reference text (empty: transcribed, shown here for correction)")
    text = gr.Textbox(label="Text to say", lines=4, elem_id="speak-text")
    text_file = gr.File(label="...or a .txt", file_types=[".txt"], type="filepath")
    model_choice = gr.Dropdown(choices, value=default_model, label="Model", elem_id="speak-model")
    with gr.Accordion("Checkpoint file", open=False):
        checkpoint = gr.File(label="checkpoint (.safetensors / .pt)", type="filepath")
        vocab = gr.File(label="vocab.txt", type="filepath")
        model_cfg = gr.File(label="model config (.yaml)", type="filepath")
    with gr.Accordion("Advanced", open=False):
        # A shown gr.Number sends 0 when left empty (Gradio 6): 0 steps means the model's own, and guidance
        # and sway, where 0 is a real value, are text fields whose empty value stays empty.
        steps = gr.Number(label=f"steps (0 or empty: the model's; 1..{limits.max_steps})", precision=0)
        cfg = gr.Textbox(label="guidance strength (empty: the model's)", elem_id="speak-cfg")
        sway = gr.Textbox(label="sway (empty: the model's)", elem_id="speak-sway")
        speed = gr.Slider(0.3, 2.0, value=1.0, step=0.05, label="speed")
        with gr.Row():
            seed = gr.Number(value=-1, precision=0, label="seed (-1: random)")
            randomise = gr.Button("randomise seed")
        randomise.click(lambda: engine.choose_seed(None), outputs=seed)
        remove_silence = gr.Checkbox(label="remove long silences")
        cross_fade = gr.Slider(0.0, 1.0, value=0.15, step=0.05, label="cross-fade (s)")
        dtype = gr.Dropdown(list(DTYPE_NAMES), value="float32", label="dtype")
        clip = gr.Radio(list(engine.CLIP_USES), value="as the model file says", label="reference clip")
    inputs = [ref_audio, ref_text, text, text_file, model_choice, checkpoint, vocab, model_cfg,
              steps, cfg, sway, speed, seed, remove_silence, cross_fade, dtype, clip]  # fmt: skip
    return inputs


def _optional_number(value, what: str) -> float | None:
    """A number of a text field (or of an API call's number): ``None`` for empty, the model's own.

    Raises:
        ValueError: Not a finite number, naming ``what``.
    """
    import math

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a number (empty: the model's), got {value!r}")
    return number


def _outputs(ref_text) -> list:
    """The Speak tab's results: speech, mel picture, timing, seed used, the transcript used (back into the
    ``ref_text`` box, for correction) and the model's summary."""
    import gradio as gr

    audio = gr.Audio(label="Speech", type="filepath", elem_id="speak-audio")
    mel = gr.Image(label="Mel spectrogram", type="filepath", elem_id="speak-mel")
    info = gr.Textbox(label="Timing", elem_id="speak-info")
    used_seed = gr.Number(label="seed used", precision=0)
    return [audio, mel, info, used_seed, ref_text, gr.Textbox(label="Model", lines=8)]


def _describe(model) -> str:
    try:
        return engine.model_summary(model)
    except Exception as error:  # the summary is informative only
        return f"(no summary: {error})"
