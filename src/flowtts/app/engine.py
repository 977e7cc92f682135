"""What the web app's pages do, without the page: models loaded once per choice, and one function per
action (speak, multi-voice, edit, compare, dataset preparation, runs). No Gradio here, so every action is
tested as plain Python; :mod:`flowtts.app.tabs` lays them out and turns their exceptions into messages.

Every action checks its inputs against the app's :class:`~flowtts.app.limits.Limits` before it does any
work, and samples through its request's :class:`~flowtts.app.limits.Job` (stopped between solver steps
when its time is up or its client has gone). Files named in the page lie in the
:class:`~flowtts.app.workspace.Workspace`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from flowtts.app.limits import Job, Limits, Watched
from flowtts.app.workspace import Workspace
from flowtts.synthesis.edit import parse_parts  # the Edit tab reads its parts as `flowtts edit` does
from flowtts.synthesis.seeds import choose_seed

BUILTIN_CHOICES = ("builtin", "builtin:student")
CHECKPOINT_CHOICE = "checkpoint file"
MODEL_CHOICES = (*BUILTIN_CHOICES, CHECKPOINT_CHOICE)
DEFAULT_LIMITS = Limits()


class ModelStore:
    """Models loaded for the page, shared by every request: at most ``max_models``, the least recently
    used dropped first (thread-safe; loading holds a lock).

    Args:
        default: The model the page starts with (``--model`` of ``flowtts app``: a built-in name or a file).
        quantize: ``"int8"`` to load every model quantised (CPU).
        max_models: Models kept loaded (``--max-models``).
        vocoder: The vocoder choice of every page (``--vocoder``; see
            :func:`flowtts.audio.vocoders.choose_vocoder`), read by the tabs as :attr:`vocoder`.
    """

    def __init__(
        self, default: str = "builtin", quantize: str | None = None, max_models: int = 3, vocoder: str = "auto"
    ):
        from flowtts.audio.vocoders import check_vocoder_choice

        check_vocoder_choice(vocoder)
        self.vocoder = vocoder
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ValueError(f"max_models must be an integer >= 1, got {max_models!r}")
        self.default = default
        self.quantize = quantize
        self.max_models = max_models
        self._models: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def get(self, choice: str, checkpoint: str | None = None, vocab: str | None = None, model_cfg: str | None = None):
        """The model of a page choice: a built-in name, the app's ``--model``, or ``CHECKPOINT_CHOICE`` with
        its file (+ vocab, config).

        Raises:
            ValueError: ``CHECKPOINT_CHOICE`` without a file, or an unknown choice.
            FileNotFoundError, flowtts.checkpoints.CheckpointError: As :func:`flowtts.load`.
        """
        if choice == CHECKPOINT_CHOICE:
            if not checkpoint:
                raise ValueError("choose a checkpoint file (.safetensors or .pt) for 'checkpoint file'")
            path = str(checkpoint)
        elif choice in BUILTIN_CHOICES or (choice and choice == self.default):
            path = choice
        else:
            raise ValueError(f"model must be one of {self.choices()}, got {choice!r}")
        key = (path, vocab or None, model_cfg or None)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = self._load(path, vocab, model_cfg)
            self._models[key] = model
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return model

    def choices(self) -> tuple[str, ...]:
        """The model choices of the page."""
        return MODEL_CHOICES if self.default in MODEL_CHOICES else (self.default, *MODEL_CHOICES)

    def _load(self, path: str, vocab: str | None, model_cfg: str | None):
        from flowtts.checkpoints.loader import load

        preset = None
        if model_cfg:
            from flowtts.checkpoints.loader import carries_architecture
            from flowtts.checkpoints.model_config import read_model_config

            if not carries_architecture(path):
                preset = read_model_config(str(model_cfg))
        return load(path, preset=preset, vocab=vocab or None, quantize=self.quantize)


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
    notes: tuple[str, ...] = ()  # what the user should know of this result (shown once, after the timing)

    @property
    def rtf(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)

    def summary(self) -> str:
        timing = (
            f"{self.audio_seconds:.2f} s of audio in {self.seconds:.2f} s (RTF {self.rtf:.3f}), "
            f"seed {self.seed}, {self.network_calls} network calls per chunk"
        )
        return "\n".join([timing, *(f"note: {note}" for note in self.notes)])


def read_text_file(path: str | None, limits: Limits = DEFAULT_LIMITS) -> str:
    """The text of an uploaded ``.txt`` (UTF-8), or ``""`` for none.

    Raises:
        ValueError: Not UTF-8 text, or longer than ``limits.max_text`` characters (a file of more than
            four bytes a character allowed is refused unread).
    """
    if not path:
        return ""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    if size > 4 * limits.max_text + 3:  # UTF-8 takes at most 4 bytes a character (+ a 3-byte BOM)
        raise ValueError(
            f"{name} is {size} bytes, more than the {limits.max_text} characters the app takes per request "
            "(--max-text); split it, or use `flowtts infer` for long texts"
        )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None
    limits.check_text(text, name)
    return text


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
    model,
    *,
    limits: Limits,
    steps=None,
    cfg=None,
    sway=None,
    speed=None,
    remove_silence=False,
    cross_fade=None,
    dtype=None,
    clip=None,
):
    from flowtts.synthesis import recommended_options

    return recommended_options(
        model,
        continue_reference=clip_use(clip),
        steps=limits.check_steps(steps),
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


def _watched(model, job: Job | None):
    """``model`` sampled under ``job`` (checked between solver steps), or as it is without one."""
    if job is None:
        return model
    job.check()
    return Watched(model, job)


def vocabulary_note(model, texts: Sequence[str]) -> str | None:
    """What the page says of characters ``model``'s vocabulary lacks (the model reads each as id 0)."""
    vocab = getattr(model, "vocab_char_map", None)
    if not vocab:
        return None
    from flowtts.text import unknown_characters
    from flowtts.text.units import text_units

    missing = unknown_characters([text_units(model, t) for t in texts if t], vocab)
    if not missing:
        return None
    zero = next((unit for unit, index in vocab.items() if index == 0), None)
    shown = " ".join(repr(c) for c in missing)
    return f"characters not in the model's vocabulary, read as id 0 ({zero!r}): {shown}"


def clip_notes(model, name: str | None, *, has_clip: bool, clip=None, editing: bool = False) -> tuple[str, ...]:
    """The clip note (:func:`flowtts.synthesis.clip_note.clip_note`) as a tuple of at most one sentence."""
    from flowtts.synthesis.clip_note import clip_note

    kwargs = {"editing": True} if editing else {"continue_reference": clip_use(clip)}
    note = clip_note(model, name or "this model", has_clip=has_clip, **kwargs)
    return (note,) if note else ()


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
    model_name: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    job: Job | None = None,
    vocoder: str = "auto",
) -> Speech:
    """Say ``text`` in the voice of ``ref_audio`` (the built-in clip when ``None``); writes a wav and a mel picture.

    ``clip`` is a key of :data:`CLIP_USES`: continue the clip, use it for rate and level only, or (``None``)
    as the model file says. The result's notes say what the model does with a clip of the user's when it
    does not clone it (``model_name`` is how the page names the model), and which characters it cannot read.
    ``vocoder`` is the page's vocoder choice (:func:`flowtts.audio.vocoders.choose_vocoder`).

    Raises:
        ValueError: Empty text or one over ``limits.max_text``, a bad option (steps over
            ``limits.max_steps``), unreadable, too short or too long audio, nothing recognised.
        FileNotFoundError: No such reference file.
        flowtts.app.limits.WorkStopped: ``job``'s time ran out or its client went away.
    """
    from flowtts.audio.transcribe import transcribe_reference
    from flowtts.audio.vocoders import choose_vocoder
    from flowtts.synthesis import load_reference, synthesize

    if not text or not text.strip():
        raise ValueError("the text to say is empty: type a sentence or upload a .txt")
    limits.check_text(text)
    limits.check_text(ref_text, "the reference text")
    options = _options(
        model,
        limits=limits,
        steps=steps,
        cfg=cfg,
        sway=sway,
        speed=speed,
        remove_silence=remove_silence,
        cross_fade=cross_fade,
        dtype=dtype,
        clip=clip,
    )
    limits.check_recording(ref_audio, "the reference audio")
    notes = clip_notes(model, model_name, has_clip=bool(ref_audio), clip=clip)
    seed = choose_seed(seed)
    transcript = []
    watched = _watched(model, job)
    reference = load_reference(
        watched,
        ref_audio or None,
        (ref_text or "").strip() or None,
        options,
        on_transcript=transcript.append,
        transcribe=transcribe_reference,
    )
    unknown = vocabulary_note(model, [reference.text, text])
    start = time.perf_counter()
    utterance = synthesize(
        watched, reference, [text], vocoder=choose_vocoder(model, vocoder), options=options, seeds=[seed], progress=True
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
        notes=(*notes, *([unknown] if unknown else [])),
    )


@dataclass
class VoiceSlot:
    """A named voice of the multi-voice page."""

    name: str
    ref_audio: str | None = None
    ref_text: str | None = None
    speed: float | None = None
    seed: int | None = None


def speak_voices(
    model,
    voices: Sequence[VoiceSlot],
    text: str,
    *,
    out_dir: str,
    seed=None,
    model_name: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    job: Job | None = None,
    vocoder: str = "auto",
    **options,
) -> Speech:
    """Say a text with ``[name]`` tags, each piece in its voice (text before the first tag: the first voice),
    the pieces joined as ``flowtts infer --config`` joins them (:func:`flowtts.synthesis.voices.speak_pieces`).

    Piece ``k`` uses ``seed + k``, or its voice's own seed where the slot has one; ``vocoder`` is the page's
    vocoder choice (:func:`flowtts.audio.vocoders.choose_vocoder`).

    Raises:
        ValueError: No voice, a duplicate or empty name, an unknown tag, empty text or one with tags only,
            a text over ``limits.max_text``, a reference clip over ``limits.max_recording_seconds``.
        flowtts.app.limits.WorkStopped: ``job``'s time ran out or its client went away.
    """
    from flowtts.audio.transcribe import transcribe_reference
    from flowtts.audio.vocoders import choose_vocoder
    from flowtts.synthesis import load_reference
    from flowtts.synthesis.voices import piece_seeds, speak_pieces
    from flowtts.text.voices import split_voices

    named = [v for v in voices if v.name and v.name.strip()]
    if not named:
        raise ValueError("add at least one voice (a name and, optionally, a reference clip)")
    names = [v.name.strip() for v in named]
    if len(set(names)) != len(names):
        raise ValueError(f"voice names must differ, got {names}")
    if not text or not text.strip():
        raise ValueError("the text to say is empty")
    limits.check_text(text)
    for slot in named:
        limits.check_text(slot.ref_text, f"the text of voice [{slot.name.strip()}]")
        limits.check_recording(slot.ref_audio, f"the reference of voice [{slot.name.strip()}]")
    by_name = dict(zip(names, named))
    pieces = split_voices(text, names)
    if not pieces:
        raise ValueError(
            "the text has voice tags but nothing to say: write the words after each tag, e.g. "
            f"[{names[0]}] Hello there."
        )
    pieces = [(by_name.get(voice, named[0]).name.strip(), piece) for voice, piece in pieces]  # untagged: the first
    base = choose_seed(seed)
    watched = _watched(model, job)
    references, voice_options, notes = {}, {}, {}
    for name in dict.fromkeys(voice for voice, _ in pieces):
        slot = by_name[name]
        own = {**options, **({"speed": slot.speed} if slot.speed else {})}
        voice_options[name] = _options(model, limits=limits, **own)
        notes.update(dict.fromkeys(clip_notes(model, model_name, has_clip=bool(slot.ref_audio), clip=own.get("clip"))))
        ref_text = (slot.ref_text or "").strip() or None
        references[name] = load_reference(
            watched, slot.ref_audio or None, ref_text, voice_options[name], transcribe=transcribe_reference
        )
    unknown = vocabulary_note(model, [*(r.text for r in references.values()), *(piece for _, piece in pieces)])
    own_seeds = {k: s for k, (v, _) in enumerate(pieces) if (s := by_name[v].seed) is not None and s >= 0}
    start = time.perf_counter()
    utterance = speak_pieces(
        watched,
        pieces,
        references,
        voice_options,
        vocoder=choose_vocoder(model, vocoder),
        seeds=piece_seeds(base, len(pieces), own_seeds),
        text=text,
    )
    seconds = time.perf_counter() - start
    rate = utterance.sample_rate
    wav, png = _write_outputs(out_dir, "voices", utterance.wave, utterance.mel, rate)
    calls = voice_options[pieces[-1][0]].recipe().nfe()
    notes = (*notes, *([unknown] if unknown else []))
    return Speech(wav, png, base, "", seconds, utterance.wave.numel() / rate, calls, utterance.wave, notes)


def edit(
    model,
    audio: str | None,
    text: str,
    parts: str,
    *,
    out_dir: str,
    seed=None,
    steps=None,
    cfg=None,
    model_name: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    job: Job | None = None,
    vocoder: str = "auto",
) -> Speech:
    """Regenerate ``parts`` of a recording so that the whole says ``text`` (``flowtts edit``), vocoded by the
    page's ``vocoder`` choice (:func:`flowtts.audio.vocoders.choose_vocoder`).

    Raises:
        ValueError: No recording, one over ``limits.max_recording_seconds``, empty text or one over
            ``limits.max_text``, bad parts, steps over ``limits.max_steps``.
        flowtts.app.limits.WorkStopped: ``job``'s time ran out or its client went away.
    """
    from flowtts.audio.io import read_audio
    from flowtts.audio.vocoders import choose_vocoder
    from flowtts.synthesis.edit import edit_speech

    if not audio:
        raise ValueError("load the recording to edit")
    if not text or not text.strip():
        raise ValueError("give the transcript of the whole recording after the edit")
    limits.check_text(text, "the transcript")
    spans = parse_parts(parts)
    options = _options(model, limits=limits, steps=steps, cfg=cfg)
    limits.check_recording(audio, "the recording to edit")
    notes = clip_notes(model, model_name, has_clip=True, editing=True)
    rate = model.mel_spec.target_sample_rate
    wave, _ = read_audio(audio, rate)
    start = time.perf_counter()
    result = edit_speech(
        _watched(model, job),
        wave,
        text.strip(),
        spans,
        vocoder=choose_vocoder(model, vocoder),
        options=options,
        seed=choose_seed(seed),
    )
    seconds = time.perf_counter() - start
    wav, png = _write_outputs(out_dir, "edit", result.wave, result.mel, rate)
    unknown = vocabulary_note(model, [text])
    notes = (*notes, *([unknown] if unknown else []))
    return Speech(wav, png, result.seed, "", seconds, result.wave.numel() / rate, options.recipe().nfe(), notes=notes)


COMPARE_SAMPLERS = (
    ("teacher @32, cfg 2", "builtin", dict(steps=32, cfg=2.0, sway=-1.0)),
    ("teacher, EPSS @7, cfg 2", "builtin", dict(steps=7, cfg=2.0, sway=None)),
    ("student @its own steps", "builtin:student", {}),
)


def compare(
    store: ModelStore,
    text: str,
    *,
    out_dir: str,
    seed=None,
    ref_audio=None,
    ref_text=None,
    student=None,
    limits: Limits = DEFAULT_LIMITS,
    job: Job | None = None,
):
    """One text, one seed, the teacher's samplers and a distilled student side by side.

    Returns:
        ``(label, Speech)`` per sampler; the clip note, when due, is on the first result only.

    Raises:
        ValueError, flowtts.app.limits.WorkStopped: As :func:`speak`.
    """
    if not text or not text.strip():
        raise ValueError("the text to say is empty")
    limits.check_text(text)
    seed = choose_seed(seed)
    results, notes = [], {}
    for k, (label, choice, settings) in enumerate(COMPARE_SAMPLERS):
        if choice == "builtin:student" and student:
            model, name = store.get(CHECKPOINT_CHOICE, student), os.path.basename(student)
        else:
            model, name = store.get(choice), choice
        speech = speak(
            model, ref_audio, ref_text, text, out_dir=out_dir, seed=seed, name=f"compare{k}",
            model_name=name, limits=limits, job=job, vocoder=store.vocoder, **settings,
        )  # fmt: skip
        for note in speech.notes:  # the same note of another model is said once
            notes.setdefault(note.replace(name, "{model}"), note)
        speech.notes = ()
        results.append((label, speech))
    results[0][1].notes = tuple(notes.values())
    return results


# The Rate tab's answers: one preferences file in a folder of the workspace made by the app, capped in size;
# a session (one open page) gives at most MAX_ANSWERS_PER_SESSION answers.
PREFERENCES_FOLDER = "preferences"
PREFERENCES_FILE = "preferences.jsonl"
MAX_PREFERENCES_BYTES = 512 << 20  # ~1000 answers of 10 s pairs; export and start afresh past it
MAX_ANSWERS_PER_SESSION = 500


@dataclass
class RatePair:
    """Two samples of one text for the Rate tab, waiting for one answer."""

    text: str
    a: object = field(repr=False)  # flowtts.prefs.pairs.Sample
    b: object = field(repr=False)
    wav_a: str = ""
    wav_b: str = ""
    seed: int = 0
    answered: bool = False  # set by the first answer: a second one (another button, a replay) is refused
    # The pair's one answer, taken by list.pop (atomic): two buttons clicked at once cannot both take it.
    _unclaimed: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self):
        self._unclaimed[:] = [] if self.answered else [True]

    def claim(self) -> bool:
        """Take the pair's one answer: ``False`` when it was taken already."""
        try:
            self._unclaimed.pop()
        except IndexError:
            return False
        self.answered = True
        return True

    def release(self) -> None:
        """Give the answer back (it was not stored)."""
        self.answered = False
        self._unclaimed[:] = [True]


def rate_pair(
    model,
    text: str,
    *,
    out_dir: str,
    seed=None,
    steps=None,
    model_name: str = "model",
    limits: Limits = DEFAULT_LIMITS,
    job: Job | None = None,
    vocoder: str = "auto",
) -> RatePair:
    """Two samples of ``text`` by ``model`` with seeds ``seed`` and ``seed + 1`` (:mod:`flowtts.prefs.pairs`),
    their wavs written to ``out_dir`` as ``a.wav`` and ``b.wav``; ``vocoder`` is the page's vocoder choice
    (:func:`flowtts.audio.vocoders.choose_vocoder`).

    Raises:
        ValueError: Empty text or one over ``limits.max_text``, steps over ``limits.max_steps``, a text too
            long for one pair (one chunk).
        flowtts.app.limits.WorkStopped: ``job``'s time ran out or its client went away.
    """
    from flowtts.audio.io import write_audio
    from flowtts.audio.vocoders import choose_vocoder
    from flowtts.prefs.pairs import make_pair, make_sampler

    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text to say is empty: type a sentence or pick one")
    limits.check_text(text)
    options = _options(model, limits=limits, steps=steps)
    seed = choose_seed(seed)
    sampler = make_sampler(_watched(model, job), model_name, options=options, vocoder=choose_vocoder(model, vocoder))
    try:
        a, b = make_pair(sampler, None, text.strip(), seed)
    except ValueError as error:  # the tab has no speed to change: the text is what can
        raise ValueError(f"{error} (this tab says a text at the model's own speed: give a shorter text)") from None
    wavs = [os.path.join(out_dir, f"{side}.wav") for side in ("a", "b")]
    for path, sample in zip(wavs, (a, b)):
        write_audio(path, sample.wave, sample.sample_rate)
    return RatePair(text=text.strip(), a=a, b=b, wav_a=wavs[0], wav_b=wavs[1], seed=seed)


def preferences_file(workspace: Workspace) -> str:
    """The Rate tab's preferences file in the workspace (its folder made, and marked, when missing).

    Raises:
        ValueError: The folder exists and was not made by the app, or the file lies outside the workspace
            (a link).
    """
    folder, exists = workspace.writable_folder(PREFERENCES_FOLDER, "the preferences folder")
    if not exists:
        workspace.make_folder(folder)
    return workspace.resolve(os.path.join(PREFERENCES_FOLDER, PREFERENCES_FILE), "the preferences file")


def count_preferences(workspace: Workspace) -> int:
    """How many answers the Rate tab's preferences file holds."""
    from flowtts.prefs.store import count_pairs

    return count_pairs(preferences_file(workspace))


def record_preference(
    workspace: Workspace,
    pending: RatePair | None,
    choice: str,
    *,
    answers: int = 0,
    max_answers: int = MAX_ANSWERS_PER_SESSION,
    max_bytes: int = MAX_PREFERENCES_BYTES,
) -> int:
    """Append the answer ``choice`` (``"a"``, ``"b"`` or ``"same"``) about ``pending`` to the preferences file.

    Args:
        answers: Answers this session has given (refused past ``max_answers``).

    Returns:
        The number of answers the file holds.

    Raises:
        ValueError: No pair waiting (each pair takes one answer), a bad choice, the session's or the file's
            cap reached.
    """
    from flowtts.prefs.pairs import preference
    from flowtts.prefs.store import CHOICES, append_pair

    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    if answers >= max_answers:
        raise ValueError(f"this page has given {answers} answers, the app's cap per session; reload it to go on")
    if pending is None or not pending.claim():
        raise ValueError("generate two samples first (each pair takes one answer)")
    try:
        path = preferences_file(workspace)
        append_pair(path, preference(pending.text, pending.a, pending.b, choice), max_bytes=max_bytes)
    except BaseException:
        pending.release()  # not stored: the pair may still be answered
        raise
    return count_preferences(workspace)


def export_preferences(workspace: Workspace, out_dir: str) -> str:
    """A copy of the complete answers of the preferences file in ``out_dir`` (for download), byte for byte:
    one buffer of memory whatever the file's size, and the caller reuses one ``out_dir`` so a download
    replaces the last one instead of adding a copy.

    Raises:
        ValueError: No answers stored yet.
    """
    from flowtts.prefs.store import copy_complete

    path = preferences_file(workspace)
    if not os.path.isfile(path):
        raise ValueError("no answers stored yet: rate a pair first")
    out = os.path.join(out_dir, PREFERENCES_FILE)
    copy_complete(path, out)
    return out


DATASET_FILES = ("index.jsonl", "mels.npy", "dataset.json", "vocab.txt")


def prepare(
    workspace: Workspace,
    source: str | None,
    out: str,
    against: str | None = None,
    *,
    uploads: Sequence[str] = (),
    store: ModelStore | None = None,
) -> str:
    """Prepare a dataset in the workspace from a folder with ``metadata.csv``, a metadata file, or uploads (a
    ``.zip``, or ``metadata.csv`` and its audio files); optionally check its units against a model's
    vocabulary. Returns the report.

    Every path is checked before anything is read or written: the source, the rows' audio files and the
    checkpoint of ``against`` lie in the workspace, and the output folder is new or one the app made that
    holds no dataset yet. An output folder made here is removed again when the preparation fails.

    Raises:
        ValueError: A path outside the workspace, a foreign or already prepared output folder, both a source
            and uploads, no usable rows.
        FileNotFoundError: No metadata, or a missing ``against`` checkpoint.
    """
    from flowtts.train.data import MelDataset, prepare_dataset

    out_path, exists = workspace.writable_folder(out, "the output folder")
    if exists and any(os.path.exists(os.path.join(out_path, f)) for f in DATASET_FILES):
        raise ValueError(f"{workspace.show(out_path)} already holds a prepared dataset; choose a new output folder")
    if against and against not in BUILTIN_CHOICES:
        if against.startswith("builtin"):
            raise ValueError(f"the vocabulary check takes {' or '.join(BUILTIN_CHOICES)} or a checkpoint file")
        against = workspace.existing(against, "the vocabulary check (against)", folder=False)
    uploads = [u for u in uploads if u]
    if uploads and source:
        raise ValueError("give either a source in the workspace or uploaded files, not both")
    metadata = None if uploads else _metadata_of(workspace, source)
    if metadata is not None:
        _check_rows(workspace, metadata)
    try:
        if not exists:
            workspace.make_folder(out_path)
        if uploads:
            folder = os.path.join(out_path, "source")
            os.makedirs(folder, exist_ok=True)
            metadata = _metadata_of(workspace, workspace.unpack(uploads, folder))
            _check_rows(workspace, metadata)
        report = prepare_dataset(metadata, None, out_path, progress=False).summary()
        if against:
            from flowtts.text import unknown_characters

            store = store or ModelStore()
            model = store.get(against if against in BUILTIN_CHOICES else CHECKPOINT_CHOICE, against)
            missing = unknown_characters(MelDataset(out_path).texts, model.vocab_char_map or {})
            shown = against if against in BUILTIN_CHOICES else workspace.show(against)
            report += (
                f"\nunits missing from {shown}'s vocabulary: {' '.join(missing)} (train with --extend-vocab)"
                if missing
                else f"\nevery unit is in {shown}'s vocabulary"
            )
    except BaseException:
        if not exists:
            shutil.rmtree(out_path, ignore_errors=True)
        raise
    return f"prepared in {workspace.show(out_path)}\n{report}"


def _metadata_of(workspace: Workspace, source: str | None) -> str:
    """The metadata file of a source in the workspace: ``metadata.csv`` in a folder, or the file itself."""
    if not source:
        raise ValueError("give the data to prepare: a folder in the workspace, or upload a .zip or files")
    path = workspace.existing(source, "the data to prepare")
    metadata = os.path.join(path, "metadata.csv") if os.path.isdir(path) else path
    if not os.path.isfile(metadata):
        raise FileNotFoundError(f"no metadata.csv in {workspace.show(path)} (audio_file|text rows)")
    return metadata


def _check_rows(workspace: Workspace, metadata: str) -> None:
    """Refuse a metadata file whose rows name audio outside the workspace (line named)."""
    from flowtts.train.data import read_metadata

    folder = os.path.dirname(metadata)
    for line, audio, _text in read_metadata(metadata):
        if audio:
            workspace.resolve(os.path.join(folder, audio), f"the audio of metadata line {line}")


class OutputFolders:
    """The folders of the page's results (audio, pictures, copies it serves) under one temporary root: at
    most ``keep`` of them, the oldest removed first, so a long-running app does not fill the disk
    (thread-safe).

    Args:
        keep: Result folders kept (``Limits.keep_outputs``).
        root: Where the root folder is made (default: the system's temporary folder, which Gradio serves).
    """

    def __init__(self, keep: int, root: str | None = None):
        self.root = tempfile.mkdtemp(prefix="flowtts-app-", dir=root)
        self.keep = keep
        self._made: deque[str] = deque()
        self._lock = threading.Lock()

    def new(self) -> str:
        """A fresh folder for one result; the oldest beyond :attr:`keep` are removed."""
        with self._lock:
            folder = tempfile.mkdtemp(dir=self.root)
            self._made.append(folder)
            while len(self._made) > self.keep:
                shutil.rmtree(self._made.popleft(), ignore_errors=True)
        return folder

    def close(self) -> None:
        """Remove every result folder (the app has stopped)."""
        with self._lock:
            self._made.clear()
            shutil.rmtree(self.root, ignore_errors=True)


ProgressCallback = Callable[[float, str], None]
