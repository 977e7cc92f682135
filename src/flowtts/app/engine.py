"""What the web app's pages do, without the page: models loaded once per choice, and one function per
action (speak, multi-voice, edit, compare, dataset preparation, runs). No Gradio here, so every action is
tested as plain Python; :mod:`flowtts.app.ui` lays them out and turns their exceptions into messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

BUILTIN_CHOICES = ("builtin", "builtin:student")
CHECKPOINT_CHOICE = "checkpoint file"
MODEL_CHOICES = (*BUILTIN_CHOICES, CHECKPOINT_CHOICE)


class ModelStore:
    """Each model choice loaded once, shared by every request (thread-safe; loading holds a lock).

    Args:
        default: The model the page starts with (``--model`` of ``flowtts app``).
        quantize: ``"int8"`` to load every model quantised (CPU).
    """

    def __init__(self, default: str = "builtin", quantize: str | None = None):
        self.default = default
        self.quantize = quantize
        self._models: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def get(self, choice: str, checkpoint: str | None = None, vocab: str | None = None, model_cfg: str | None = None):
        """The model of a page choice: a built-in name, or ``CHECKPOINT_CHOICE`` with its file (+ vocab, config).

        Raises:
            ValueError: ``CHECKPOINT_CHOICE`` without a file, or an unknown choice.
            FileNotFoundError, flowtts.checkpoints.CheckpointError: As :func:`flowtts.load`.
        """
        from flowtts.checkpoints.loader import load

        if choice == CHECKPOINT_CHOICE:
            if not checkpoint:
                raise ValueError("choose a checkpoint file (.safetensors or .pt) for 'checkpoint file'")
            path = str(checkpoint)
        elif choice in BUILTIN_CHOICES or (choice and os.path.exists(choice)):
            path = choice
        else:
            raise ValueError(f"model must be one of {MODEL_CHOICES}, got {choice!r}")
        key = (path, vocab or None, model_cfg or None)
        with self._lock:
            if key not in self._models:
                preset = None
                if model_cfg:
                    from flowtts.checkpoints.model_config import carries_architecture, read_model_config

                    if not carries_architecture(path):
                        preset = read_model_config(str(model_cfg))
                self._models[key] = load(path, preset=preset, vocab=vocab or None, quantize=self.quantize)
            return self._models[key]


def model_summary(model) -> str:
    """What ``flowtts info`` says of a loaded model (architecture, vocabulary, recipe, training)."""
    from flowtts.checkpoints.inspect import format_facts, model_facts

    return format_facts(model_facts(model))


@dataclass
class Speech:
    """One synthesis for the page."""

    wav: str  # path of the 24 kHz wav
    mel_png: str  # path of the mel picture
    seed: int
    ref_text: str  # the transcript used (recognised when none was given)
    seconds: float  # wall time of the synthesis
    audio_seconds: float
    network_calls: int
    wave: torch.Tensor | None = field(default=None, repr=False)  # the samples of ``wav``, kept for joining

    @property
    def rtf(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)

    def summary(self) -> str:
        return (
            f"{self.audio_seconds:.2f} s of audio in {self.seconds:.2f} s (RTF {self.rtf:.3f}), "
            f"seed {self.seed}, {self.network_calls} network calls per chunk"
        )


def read_text_file(path: str | None) -> str:
    """The text of an uploaded ``.txt`` (UTF-8), or ``""`` for none.

    Raises:
        ValueError: Not UTF-8 text.
    """
    if not path:
        return ""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{os.path.basename(path)} is not UTF-8 text") from None


def choose_seed(seed) -> int:
    """The seed to use: ``seed`` itself, or a random one for ``None``/``-1`` (shown in the page)."""
    import random

    if seed is None or int(seed) < 0:
        return random.randrange(2**31)
    return int(seed)


# How the page's "reference clip" choice maps to InferenceOptions.continue_reference (None: the model file's).
CLIP_USES = {
    "as the model file says": None,
    "continue it (F5-TTS)": True,
    "rate and level only (unprompted)": False,
}


def clip_use(choice) -> bool | None:
    """``continue_reference`` for a "reference clip" choice of the page (empty: the model file's)."""
    if choice in (None, ""):
        return None
    if choice not in CLIP_USES:
        raise ValueError(f"reference clip use must be one of {list(CLIP_USES)}, got {choice!r}")
    return CLIP_USES[choice]


def _options(
    model, *, steps=None, cfg=None, sway=None, speed=None, remove_silence=False, cross_fade=None, dtype=None, clip=None
):
    from flowtts.synthesis import recommended_options

    return recommended_options(
        model,
        continue_reference=clip_use(clip),
        steps=int(steps) if steps else None,
        cfg_strength=cfg,
        sway_sampling_coef=sway,
        speed=speed,
        remove_silence=bool(remove_silence),
        cross_fade_seconds=cross_fade,
        dtype=None if dtype in (None, "", "float32") else dtype,
    )


def _write_outputs(folder: str, name: str, wave: torch.Tensor, mel: torch.Tensor, rate: int) -> tuple[str, str]:
    from flowtts.audio.io import write_audio
    from flowtts.utils.plotting import save_mel_png

    wav, png = os.path.join(folder, f"{name}.wav"), os.path.join(folder, f"{name}.png")
    write_audio(wav, wave.numpy(), rate)
    save_mel_png(mel, png, title=name)
    return wav, png


def speak(
    model,
    ref_audio: str | None,
    ref_text: str | None,
    text: str,
    *,
    out_dir: str,
    steps=None,
    cfg=None,
    sway=None,
    speed=None,
    seed=None,
    remove_silence: bool = False,
    cross_fade=None,
    dtype=None,
    clip=None,
    name: str = "speech",
) -> Speech:
    """Say ``text`` in the voice of ``ref_audio`` (the built-in clip when ``None``); writes a wav and a mel picture.

    ``clip`` is a key of :data:`CLIP_USES`: continue the clip, use it for rate and level only, or (``None``)
    as the model file says.

    Raises:
        ValueError: Empty text, a bad option, unreadable or too short audio, nothing recognised.
        FileNotFoundError: No such reference file.
    """
    from flowtts.audio.vocoders import load_vocoder
    from flowtts.eval.asr import transcribe_reference
    from flowtts.synthesis import load_reference, synthesize

    if not text or not text.strip():
        raise ValueError("the text to say is empty: type a sentence or upload a .txt")
    options = _options(
        model,
        steps=steps,
        cfg=cfg,
        sway=sway,
        speed=speed,
        remove_silence=remove_silence,
        cross_fade=cross_fade,
        dtype=dtype,
        clip=clip,
    )
    seed = choose_seed(seed)
    transcript = []
    reference = load_reference(
        model,
        ref_audio or None,
        (ref_text or "").strip() or None,
        options,
        on_transcript=transcript.append,
        transcribe=transcribe_reference,
    )
    start = time.perf_counter()
    utterance = synthesize(
        model, reference, [text], vocoder=load_vocoder(model.mel_spec), options=options, seeds=[seed], progress=True
    )[0]
    seconds = time.perf_counter() - start
    wav, png = _write_outputs(out_dir, name, utterance.wave, utterance.mel, utterance.sample_rate)
    return Speech(
        wav=wav,
        mel_png=png,
        seed=seed,
        ref_text=transcript[0] if transcript else reference.text.strip(),
        seconds=seconds,
        audio_seconds=utterance.wave.numel() / utterance.sample_rate,
        network_calls=options.recipe().nfe(),
        wave=utterance.wave,
    )


@dataclass
class VoiceSlot:
    """A named voice of the multi-voice page."""

    name: str
    ref_audio: str | None = None
    ref_text: str | None = None
    speed: float | None = None
    seed: int | None = None


def speak_voices(model, voices: Sequence[VoiceSlot], text: str, *, out_dir: str, seed=None, **options) -> Speech:
    """Say a text with ``[name]`` tags, each piece in its voice (text before the first tag: the first voice).

    Raises:
        ValueError: No voice, a duplicate or empty name, an unknown tag, empty text.
    """
    from flowtts.audio.crossfade import cross_fade
    from flowtts.text.voices import split_voices

    named = [v for v in voices if v.name and v.name.strip()]
    if not named:
        raise ValueError("add at least one voice (a name and, optionally, a reference clip)")
    names = [v.name.strip() for v in named]
    if len(set(names)) != len(names):
        raise ValueError(f"voice names must differ, got {names}")
    if not text or not text.strip():
        raise ValueError("the text to say is empty")
    by_name = dict(zip(names, named))
    pieces = split_voices(text, names)
    base = choose_seed(seed)
    waves, rate, seconds = [], model.mel_spec.target_sample_rate, 0.0
    calls = 0
    for k, (voice, piece) in enumerate(pieces):
        slot = by_name.get(voice, named[0])  # the text before the first tag: the first voice
        own = dict(options)
        if slot.speed:
            own["speed"] = slot.speed
        speech = speak(
            model,
            slot.ref_audio,
            slot.ref_text,
            piece,
            out_dir=out_dir,
            seed=slot.seed if slot.seed is not None and slot.seed >= 0 else base + k,
            name=f"piece{k}",
            **own,
        )
        waves.append(speech.wave)
        seconds += speech.seconds
        calls = speech.network_calls
    wave = cross_fade(waves, int(0.15 * rate))
    mel = model.mel_spec(wave[None].float())[0]
    wav, png = _write_outputs(out_dir, "voices", wave, mel, rate)
    return Speech(wav, png, base, "", seconds, wave.numel() / rate, calls)


def parse_parts(parts: str) -> list[tuple[float, float]]:
    """``"1.2-1.8, 3-3.5"`` -> ``[(1.2, 1.8), (3.0, 3.5)]``.

    Raises:
        ValueError: A part that is not ``start-end`` in seconds.
    """
    result = []
    for item in (parts or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            start, end = (float(x) for x in item.split("-"))
        except ValueError:
            raise ValueError(
                f"parts are start-end seconds separated by commas (e.g. 1.2-1.8, 3-3.5); got {item!r}"
            ) from None
        result.append((start, end))
    if not result:
        raise ValueError("mark at least one part to regenerate (start-end seconds, e.g. 1.2-1.8)")
    return result


def edit(model, audio: str | None, text: str, parts: str, *, out_dir: str, seed=None, steps=None, cfg=None) -> Speech:
    """Regenerate ``parts`` of a recording so that the whole says ``text`` (``flowtts edit``).

    Raises:
        ValueError: No recording, empty text, bad parts.
    """
    from flowtts.audio.io import read_audio
    from flowtts.audio.vocoders import load_vocoder
    from flowtts.synthesis.edit import edit_speech

    if not audio:
        raise ValueError("load the recording to edit")
    if not text or not text.strip():
        raise ValueError("give the transcript of the whole recording after the edit")
    spans = parse_parts(parts)
    rate = model.mel_spec.target_sample_rate
    wave, _ = read_audio(audio, rate)
    options = _options(model, steps=steps, cfg=cfg)
    start = time.perf_counter()
    result = edit_speech(
        model,
        wave,
        text.strip(),
        spans,
        vocoder=load_vocoder(model.mel_spec),
        options=options,
        seed=choose_seed(seed),
    )
    seconds = time.perf_counter() - start
    wav, png = _write_outputs(out_dir, "edit", result.wave, result.mel, rate)
    return Speech(wav, png, result.seed, "", seconds, result.wave.numel() / rate, options.recipe().nfe())


COMPARE_SAMPLERS = (
    ("teacher @32, cfg 2", "builtin", dict(steps=32, cfg=2.0, sway=-1.0)),
    ("teacher, EPSS @7, cfg 2", "builtin", dict(steps=7, cfg=2.0, sway=None)),
    ("student @its own steps", "builtin:student", {}),
)


def compare(store: ModelStore, text: str, *, out_dir: str, seed=None, ref_audio=None, ref_text=None, student=None):
    """One text, one seed, the teacher's samplers and a distilled student side by side.

    Returns:
        ``(label, Speech)`` per sampler.
    """
    seed = choose_seed(seed)
    results = []
    for k, (label, choice, settings) in enumerate(COMPARE_SAMPLERS):
        if choice == "builtin:student" and student:
            model = store.get(CHECKPOINT_CHOICE, student)
        else:
            model = store.get(choice)
        results.append(
            (label, speak(model, ref_audio, ref_text, text, out_dir=out_dir, seed=seed, name=f"compare{k}", **settings))
        )
    return results


def prepare(source: str, out_dir: str, vocab_of: str | None = None, store: ModelStore | None = None) -> str:
    """Prepare a dataset from a folder (with ``metadata.csv``) or a metadata file; optionally check its units
    against a checkpoint's vocabulary. Returns the report.

    Raises:
        FileNotFoundError: No metadata.
        ValueError: No usable rows.
    """
    from flowtts.train.data import MelDataset, prepare_dataset

    metadata = os.path.join(source, "metadata.csv") if os.path.isdir(source) else source
    if not os.path.isfile(metadata):
        raise FileNotFoundError(f"no metadata.csv in {source} (audio_file|text rows)")
    report = prepare_dataset(metadata, None, out_dir, progress=False).summary()
    if vocab_of:
        from flowtts.text import unknown_characters

        store = store or ModelStore()
        model = store.get(vocab_of if vocab_of in BUILTIN_CHOICES else CHECKPOINT_CHOICE, vocab_of)
        missing = unknown_characters(MelDataset(out_dir).texts, model.vocab_char_map or {})
        report += (
            f"\nunits missing from {vocab_of}'s vocabulary: {' '.join(missing)} (train with --extend-vocab)"
            if missing
            else f"\nevery unit is in {vocab_of}'s vocabulary"
        )
    return report


class Run:
    """A ``flowtts train`` or ``flowtts distill`` run in its own process, watched from the page.

    Stopping writes ``STOP`` into the run directory: the run checkpoints (``last.pt``, resumable) and exits.
    """

    def __init__(self, command: str, args: Sequence[str], out_dir: str):
        if command not in ("train", "distill"):
            raise ValueError(f"command must be 'train' or 'distill', got {command!r}")
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        stop = os.path.join(out_dir, "STOP")
        if os.path.exists(stop):
            os.remove(stop)
        self.log_path = os.path.join(out_dir, "app_run.log")
        self._log = open(self.log_path, "w", encoding="utf-8")
        cmd = [sys.executable, "-m", "flowtts.cli", command, *args, "--out", out_dir, "-q"]
        self.command = " ".join(cmd[2:])
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 120) -> int | None:
        """Ask the run to checkpoint and exit; wait up to ``timeout`` seconds. Returns the exit code."""
        with open(os.path.join(self.out_dir, "STOP"), "w") as f:
            f.write("stop\n")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def status(self) -> dict:
        """Log tail, loss curve and latest sample of the run (what exists of them)."""
        tail = ""
        if os.path.exists(self.log_path):
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
        csv_tail = ""
        for name in ("train_log.csv", "distill_log.csv"):
            path = os.path.join(self.out_dir, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    lines = f.readlines()
                csv_tail = "".join(lines[:1] + lines[-5:])
        curve = os.path.join(self.out_dir, "loss.png")
        samples = os.path.join(self.out_dir, "samples")
        sample = None
        if os.path.isdir(samples):
            wavs = sorted((f for f in os.listdir(samples) if f.endswith("_gen.wav")), key=_step_of)
            sample = os.path.join(samples, wavs[-1]) if wavs else None
        code = self.process.poll()
        state = "running" if code is None else f"exited with code {code}"
        return {
            "state": f"{self.command}: {state}",
            "log": (csv_tail + "\n" + tail).strip(),
            "curve": curve if os.path.exists(curve) else None,
            "sample": sample,
        }


def _step_of(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else -1


def new_output_dir(root: str | None = None) -> str:
    """A fresh folder for one request's files (under the app's temporary root)."""
    return tempfile.mkdtemp(prefix="flowtts-app-", dir=root)


ProgressCallback = Callable[[float, str], None]
