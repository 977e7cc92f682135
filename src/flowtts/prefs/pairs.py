"""Pairs to rate: two samples of one text, from one model with two seeds or from two models or settings.

A sample keeps the log-mel ``sample()`` returned for it, prompt frames included (``(n, d)``; the first
``prompt_frames`` are the prompt: the reference clip's frames when the model continues it, the one frame of
no audio an unprompted model starts from), its wave and the settings it was made with. Samples are made by
:func:`flowtts.synthesis.synthesize`, one text per call, so that they are the speech ``flowtts infer`` gives
for the same model, text and seed.

A pairs folder holds one numbered folder per pair: ``NNNN/a.wav``, ``b.wav``, ``a.npy``, ``b.npy`` (the mels,
float32) and ``pair.json`` (id, text, prompt, settings). Each pair is written under a temporary name and
renamed when complete, so a kill leaves no half pair behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flowtts.prefs.store import LISTENER, PreferencePair, new_id

PAIR_FILE = "pair.json"
PAIR_FORMAT = "flowtts-pair/1"
SIDES = ("a", "b")


@dataclass
class Sampler:
    """One way of sampling a side of a pair.

    Attributes:
        model: A loaded :class:`flowtts.CFM` (or a wrapper with its ``sample``).
        options: The :class:`~flowtts.synthesis.InferenceOptions` it samples with.
        name: How the records name the model (``"builtin:student"``, a file name).
        reference: The prepared reference (the prompt, or the clip setting rate and level).
        vocoder: Log-mel ``(b, d, n)`` -> wave ``(b, nw)``.
    """

    model: object
    options: object
    name: str
    reference: object
    vocoder: Callable

    def settings(self, seed: int) -> dict:
        """What a record says of a sample of this sampler with ``seed`` (JSON values)."""
        o = self.options
        return {
            "model": self.name,
            "seed": int(seed),
            "steps": o.steps,
            "cfg_strength": o.cfg_strength,
            "sway_sampling_coef": o.sway_sampling_coef,
            "t_grid": None if o.t_grid is None else [float(t) for t in o.t_grid],
            "speed": o.speed,
            "continue_reference": bool(o.continue_reference),
            "dtype": o.dtype,
        }


def make_sampler(model, name: str, *, options=None, reference=None, vocoder=None) -> Sampler:
    """A :class:`Sampler` of ``model``: its recommended options, the built-in reference clip and vocoder
    unless given.

    Raises:
        ValueError: A bad option (as :func:`flowtts.synthesis.recommended_options`).
    """
    from flowtts.synthesis import load_reference, recommended_options

    options = options if options is not None else recommended_options(model)
    options = dataclasses.replace(options, remove_silence=False)  # the wave must be the mel's
    if reference is None:
        reference = load_reference(model, None, None, options)
    if vocoder is None:
        from flowtts.audio.vocoders import choose_vocoder

        vocoder = choose_vocoder(model)
    return Sampler(model=model, options=options, name=str(name), reference=reference, vocoder=vocoder)


@dataclass
class Sample:
    """One side of a pair.

    Attributes:
        mel: ``(n, d)`` float32, as ``sample()`` returned it, prompt frames included.
        prompt_frames: Leading frames of ``mel`` that are the prompt.
        prompt_text: What the prompt says (``""`` unprompted).
        wave: The generated speech ``(nw,)``.
        sample_rate: Of ``wave``.
        settings: How it was made (:meth:`Sampler.settings`).
    """

    mel: torch.Tensor
    prompt_frames: int
    prompt_text: str
    wave: torch.Tensor
    sample_rate: int
    settings: dict


class _Recorder:
    """``model`` with every ``sample()`` output and requested duration kept (everything else the model's)."""

    def __init__(self, model):
        self._model = model
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def sample(self, cond, text, duration, *args, **kwargs):
        out, trajectory = self._model.sample(cond, text, duration, *args, **kwargs)
        self.calls.append((out.detach(), torch.as_tensor(duration).reshape(-1)))
        return out, trajectory

    def __getattr__(self, name):
        return getattr(self._model, name)


def sample_text(sampler: Sampler, text: str, seed: int) -> Sample:
    """``text`` said by ``sampler`` with ``seed``, with the mel ``sample()`` returned for it.

    Raises:
        ValueError: An empty text, or one long enough to be split into several chunks (a pair holds what
            one ``sample()`` row makes: give shorter texts).
    """
    from flowtts.synthesis import synthesize

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    recorder = _Recorder(sampler.model)
    (utterance,) = synthesize(
        recorder,
        sampler.reference,
        [text],
        vocoder=sampler.vocoder,
        options=sampler.options,
        seeds=[int(seed)],
        progress=False,
    )
    rows = sum(out.shape[0] for out, _ in recorder.calls)
    if rows != 1:
        raise ValueError(
            f"text {text[:60]!r} is said in {rows} chunks; a pair takes a text of one chunk (a sentence or two)"
        )
    out, duration = recorder.calls[0]
    end = int(duration[0])
    mel = out[0, :end].float().cpu()
    generated = utterance.mel.shape[1]
    prompt_frames = end - generated
    if prompt_frames < 0 or not torch.equal(mel[prompt_frames:], utterance.mel.t().float()):
        raise RuntimeError("the synthesised mel is not the end of what sample() returned")  # a broken invariant
    prompt_text = sampler.reference.text if sampler.options.continue_reference else ""
    return Sample(
        mel=mel,
        prompt_frames=prompt_frames,
        prompt_text=prompt_text,
        wave=utterance.wave,
        sample_rate=utterance.sample_rate,
        settings=sampler.settings(seed),
    )


def pair_seeds(seed: int, index: int, same_settings: bool) -> tuple[int, int]:
    """The seeds of pair ``index``: two seeds of one sampler (``seed + 2 index`` and the next), or the same
    seed ``seed + index`` for two samplers (the settings alone differ)."""
    if same_settings:
        return seed + 2 * index, seed + 2 * index + 1
    return seed + index, seed + index


def make_pair(a: Sampler, b: Sampler | None, text: str, seed: int, index: int = 0) -> tuple[Sample, Sample]:
    """Two samples of ``text``: ``a`` with two seeds (``b`` ``None``), or ``a`` and ``b`` with one seed
    (see :func:`pair_seeds`).

    Raises:
        ValueError: As :func:`sample_text`; two samplers whose prompts differ (one continues a clip, the
            other does not, or their clips differ), which one record cannot hold.
    """
    seed_a, seed_b = pair_seeds(seed, index, b is None)
    first = sample_text(a, text, seed_a)
    second = sample_text(b or a, text, seed_b)
    if first.prompt_text != second.prompt_text or first.prompt_frames != second.prompt_frames:
        raise ValueError(
            "the two samplers prompt differently (a clip continued by one, not the other, or two clips); "
            "compare models that prompt alike"
        )
    if not torch.equal(first.mel[: first.prompt_frames], second.mel[: second.prompt_frames]):
        raise ValueError("the two samplers' prompt frames differ (two reference clips); use one clip for both")
    return first, second


def preference(
    text: str,
    a: Sample,
    b: Sample,
    choice: str,
    *,
    human: bool = True,
    judge: str = LISTENER,
    id: str | None = None,  # noqa: A002 -- the record's field
) -> PreferencePair:
    """The record of an answer about samples ``a`` and ``b`` of ``text`` (checked when written)."""
    return PreferencePair(
        text=text,
        prompt_text=a.prompt_text,
        prompt_frames=a.prompt_frames,
        mel_a=a.mel,
        mel_b=b.mel,
        choice=choice,
        settings_a=dict(a.settings),
        settings_b=dict(b.settings),
        human=human,
        judge=judge,
        id=id or new_id(),
    )


# ----------------------------------------------------------------------------- pairs folders


@dataclass
class FolderPair:
    """A pair of a pairs folder, as :func:`read_pair` reads it.

    Attributes:
        folder: Its folder (``.../NNNN``).
        id: Its id (records of answers about it have ids ``<id>:<answer>``).
        text, prompt_text, prompt_frames: As in :class:`~flowtts.prefs.store.PreferencePair`.
        settings_a, settings_b: How each side was made.
    """

    folder: str
    id: str
    text: str
    prompt_text: str
    prompt_frames: int
    settings_a: dict
    settings_b: dict

    def wav(self, side: str) -> str:
        """The wav of side ``"a"`` or ``"b"``."""
        return os.path.join(self.folder, f"{side}.wav")

    def mel(self, side: str) -> torch.Tensor:
        """The mel ``(n, d)`` of side ``"a"`` or ``"b"``."""
        import numpy as np

        return torch.from_numpy(np.load(os.path.join(self.folder, f"{side}.npy")).astype(np.float32))

    def answer(self, choice: str, *, human: bool = True, judge: str = LISTENER) -> PreferencePair:
        """The record of ``choice`` about this pair (its id ``<pair id>:<new id>``)."""
        return PreferencePair(
            text=self.text,
            prompt_text=self.prompt_text,
            prompt_frames=self.prompt_frames,
            mel_a=self.mel("a"),
            mel_b=self.mel("b"),
            choice=choice,
            settings_a=dict(self.settings_a),
            settings_b=dict(self.settings_b),
            human=human,
            judge=judge,
            id=new_id(self.id),
        )


def answered_pairs(ids: Sequence[str]) -> set[str]:
    """The pair ids that records ``ids`` answer (the part before the colon)."""
    return {record_id.split(":", 1)[0] for record_id in ids if ":" in record_id}


def write_pair(folder: str, index: int, text: str, a: Sample, b: Sample) -> str:
    """Write pair ``index`` into the pairs folder ``folder`` as ``NNNN/`` (complete or not at all).

    Returns:
        The pair's folder.

    Raises:
        FileExistsError: Pair ``index`` exists.
    """
    import numpy as np

    from flowtts.audio.io import write_audio

    final = os.path.join(folder, f"{index:04d}")
    if os.path.exists(final):
        raise FileExistsError(f"pair {final} exists")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a kill
    os.makedirs(partial)
    for side, sample in zip(SIDES, (a, b)):
        write_audio(os.path.join(partial, f"{side}.wav"), sample.wave, sample.sample_rate)
        np.save(os.path.join(partial, f"{side}.npy"), sample.mel.numpy().astype(np.float32))
    info = {
        "format": PAIR_FORMAT,
        "id": new_id(),
        "text": text,
        "prompt_text": a.prompt_text,
        "prompt_frames": a.prompt_frames,
        "settings_a": a.settings,
        "settings_b": b.settings,
    }
    with open(os.path.join(partial, PAIR_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=1)
    os.replace(partial, final)
    return final


def read_pair(folder: str) -> FolderPair:
    """The pair in ``folder`` (``NNNN/`` of a pairs folder).

    Raises:
        FileNotFoundError: No ``pair.json``, wav or mel.
        ValueError: A ``pair.json`` that is not a pair's.
    """
    path = os.path.join(folder, PAIR_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} holds no {PAIR_FILE}")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except ValueError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    if not isinstance(info, dict) or info.get("format") != PAIR_FORMAT:
        raise ValueError(f"{path} is not a pair file (format {PAIR_FORMAT!r})")
    for side in SIDES:
        for ext in ("wav", "npy"):
            if not os.path.isfile(os.path.join(folder, f"{side}.{ext}")):
                raise FileNotFoundError(f"{folder} lacks {side}.{ext}")
    try:
        return FolderPair(
            folder=folder,
            id=str(info["id"]),
            text=str(info["text"]),
            prompt_text=str(info["prompt_text"]),
            prompt_frames=int(info["prompt_frames"]),
            settings_a=dict(info["settings_a"]),
            settings_b=dict(info["settings_b"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} lacks a field or holds a bad one: {error}") from None


def list_pairs(folder: str) -> list[FolderPair]:
    """Every complete pair of a pairs folder, in order (half-written ones left out).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: It holds no pair, or a bad ``pair.json`` (named).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pairs folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder) if n.isdigit() and os.path.isdir(os.path.join(folder, n)))
    pairs = [read_pair(os.path.join(folder, n)) for n in names]
    if not pairs:
        raise ValueError(f"{folder} holds no pairs (NNNN/pair.json); make them with `flowtts prefs make`")
    return pairs


def make_pairs(
    out: str,
    texts: Sequence[str],
    a: Sampler,
    b: Sampler | None = None,
    *,
    seed: int = 0,
    on_pair: Callable[[int, str], None] | None = None,
    on_skip: Callable[[int, str, str], None] | None = None,
) -> list[str]:
    """A pairs folder ``out`` (new, or empty) with a pair per text (see :func:`make_pair`).

    Args:
        out: The folder.
        texts: The texts, one pair each.
        a: The first sampler.
        b: The second (``None``: ``a`` with another seed).
        seed: Pair ``i``'s seeds follow from it (:func:`pair_seeds`).
        on_pair: Called with ``(index, folder)`` after each pair.
        on_skip: Called as ``on_skip(index, text, reason)`` for a text that cannot be paired (too long for
            one chunk); without it such a text raises. The pairs made are numbered without gaps.

    Returns:
        The pairs' folders.

    Raises:
        ValueError: No texts, an empty one, one too long for a pair, ``out`` a file or a folder with files.
    """
    if not texts:
        raise ValueError("texts is empty: give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i + 1} is empty")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out} exists and is not an empty folder; choose a new one")
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    folders = []
    try:
        for i, text in enumerate(texts):
            try:
                first, second = make_pair(a, b, text.strip(), seed, i)
            except ValueError as error:
                if on_skip is None:
                    raise
                on_skip(i, text, str(error))
                continue
            folders.append(write_pair(out, len(folders), text.strip(), first, second))
            if on_pair is not None:
                on_pair(i, folders[-1])
    finally:
        if created and not os.listdir(out):  # no pair made: no folder left behind
            os.rmdir(out)
    return folders
