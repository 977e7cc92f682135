"""Training data: ``metadata.csv`` + audio folder -> precomputed mels, and frame-budget batching.

A prepared dataset is a directory with

* ``mels.npy``: all mels concatenated along frames, float16, shape ``(total_frames, n_mels)``;
* ``index.jsonl``: one JSON object per utterance: ``offset``, ``frames``, ``text``, ``audio``, and for
  text with Chinese characters ``units``, its pinyin units (F5-TTS's data preparation converts such text
  to pinyin, and inference does the same, so a model must learn from the same units); ``speech``, the
  ``[start, end)`` samples without leading and trailing silence (as inference trims a reference,
  :func:`flowtts.audio.silence.speech_bounds`), and ``rms``, the level of that part (full scale 1.0);
* ``dataset.json``: mel settings, counts, the rows that were skipped with the reason, and ``audio_dir``, the
  folder the ``audio`` paths are relative to (absolute);
* ``vocab.txt``: the character vocabulary (space first, id 0), unless one was given.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger("flowtts")


@dataclass
class PrepareReport:
    kept: int
    skipped: list[tuple[int, str, str]]  # (line number, audio file, reason)
    frames: int

    def summary(self) -> str:
        lines = [f"kept {self.kept} rows ({self.frames} frames), skipped {len(self.skipped)}"]
        lines += [f"  line {n}: {audio}: {reason}" for n, audio, reason in self.skipped]
        return "\n".join(lines)


LAYOUTS = ("f5-tts", "ljspeech")


def read_metadata(path: str, layout: str = "f5-tts") -> list[tuple[int, str, str | None]]:
    """``(line number, audio file, text)`` rows of a metadata file.

    Layouts: ``"f5-tts"``, F5-TTS's ``audio_file|text`` (a header line ``audio_file|text`` is skipped);
    ``"ljspeech"``, LJSpeech's ``id|text|normalized text`` without header, the audio being
    ``wavs/<id>.wav`` and the text the normalised one where present (as F5-TTS's LJSpeech preparation).

    A row whose line has no ``|`` has the text ``None``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: An unknown layout, or a line that is not UTF-8 (file and line named).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metadata file not found: {path}")
    rows = []
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    lines = []
    for n, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8-sig" if n == 1 else "utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path} line {n} is not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            ) from None
    for n, row in enumerate(csv.reader(lines, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
        if not row:
            continue
        if layout == "ljspeech":
            text = row[2] if len(row) > 2 and row[2].strip() else (row[1] if len(row) > 1 else "")
            rows.append((n, os.path.join("wavs", row[0].strip() + ".wav"), text.strip()))
            continue
        if n == 1 and row[0].strip() == "audio_file":
            continue
        audio = row[0].strip()
        text = "|".join(row[1:]).strip() if len(row) > 1 else None  # None: no separator on the line
        rows.append((n, audio, text))
    return rows


def build_vocab(texts: Sequence[str | Sequence[str]]) -> dict[str, int]:
    """Vocabulary of the units of ``texts`` (characters, or pinyin unit lists): space at id 0 (F5-TTS's
    unknown/filler convention), then sorted."""
    chars = sorted({c for t in texts for c in t} - {" "})
    return {c: i for i, c in enumerate([" ", *chars])}


def _read_row(audio: str, text: str | None, audio_dir: str, mel_spec, max_frames: int, min_frames: int):
    """``(item, mel (n, d) float16)`` of one metadata row (its ``offset`` still to set), or why it is skipped."""
    from flowtts.audio.io import read_audio
    from flowtts.audio.silence import speech_bounds
    from flowtts.text.pinyin import vocab_units

    if text is None:
        return "no '|' between the audio file and its text"
    if not text:
        return "empty transcript"
    path = audio if os.path.isabs(audio) else os.path.join(audio_dir, audio)
    try:
        wave, _ = read_audio(path, mel_spec.target_sample_rate)
    except FileNotFoundError:
        return "audio file missing"
    except ValueError as exc:
        return f"unreadable audio ({exc})"
    with torch.no_grad():
        mel = mel_spec(wave[None])[0].t().numpy()
    frames = mel.shape[0]
    if frames > max_frames:
        return f"too long ({frames} frames > max_frames={max_frames})"
    if frames < min_frames:
        return f"too short ({frames} frames < {min_frames})"
    units = vocab_units(text)
    if len(units) >= frames:
        return f"text longer than the audio ({len(units)} units, {frames} frames)"
    start, end = speech_bounds(wave, mel_spec.target_sample_rate)
    rms = float(wave[start:end].double().pow(2).mean().sqrt())
    item = {"frames": frames, "text": text, "audio": audio, "speech": [start, end], "rms": rms}
    if not isinstance(units, str):
        item["units"] = units
    return item, mel.astype(np.float16)


def _write_prepared(
    out_dir: str, kept: list[dict], mels: list, skipped: list, vocab: dict, mel_spec, audio_dir: str
) -> None:
    """The prepared dataset's four files (see the module docstring), each written atomically."""
    from flowtts.text import save_vocab
    from flowtts.utils.files import atomic_output

    with atomic_output(os.path.join(out_dir, "mels.npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.concatenate(mels, axis=0))
    with atomic_output(os.path.join(out_dir, "index.jsonl")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(k, ensure_ascii=False) + "\n" for k in kept)
    save_vocab(vocab, os.path.join(out_dir, "vocab.txt"))
    names = ("target_sample_rate", "n_mel_channels", "hop_length", "win_length", "n_fft", "mel_spec_type")
    info = {
        "mel": {name: getattr(mel_spec, name) for name in names},
        "utterances": len(kept),
        "frames": sum(k["frames"] for k in kept),
        "skipped": [{"line": n, "audio": a, "reason": r} for n, a, r in skipped],
        "audio_dir": os.path.abspath(audio_dir),
    }
    with atomic_output(os.path.join(out_dir, "dataset.json")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)


def prepare_dataset(
    metadata: str,
    audio_dir: str | None,
    out_dir: str,
    *,
    mel_spec=None,
    vocab: dict[str, int] | None = None,
    max_frames: int = 2048,
    min_frames: int = 16,
    progress: bool = True,
    layout: str = "f5-tts",
) -> PrepareReport:
    """Compute mels for every usable row; report and skip the others (never stop halfway).

    Args:
        metadata: ``metadata.csv`` path.
        audio_dir: Folder the audio paths are relative to (default: the metadata's folder).
        out_dir: Output directory (created).
        mel_spec: :class:`flowtts.model.mel.MelSpec` (default: F5-TTS's 24 kHz vocos mel).
        vocab: Character vocabulary to use; built from the kept texts' units when ``None``.
        max_frames: Longest utterance kept (rows over it are reported, never truncated).
        min_frames: Shortest utterance kept.
        progress: Show a progress bar.
        layout: Layout of ``metadata`` (see :func:`read_metadata`).
    """
    from flowtts.model.mel import MelSpec

    mel_spec = mel_spec or MelSpec()
    audio_dir = audio_dir or os.path.dirname(os.path.abspath(metadata))
    rows = read_metadata(metadata, layout)
    if not rows:
        raise ValueError(f"{metadata} has no rows")
    os.makedirs(out_dir, exist_ok=True)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="preparing", unit="utt")
    kept, mels, skipped = [], [], []
    offset = 0
    for n, audio, text in rows:
        read = _read_row(audio, text, audio_dir, mel_spec, max_frames, min_frames)
        if isinstance(read, str):
            skipped.append((n, audio, read))
            continue
        item, mel = read
        kept.append({"offset": offset, **item})
        mels.append(mel)
        offset += item["frames"]
    if not kept:
        raise ValueError(f"{metadata}: no usable rows ({len(skipped)} skipped)")
    if vocab is None:
        vocab = build_vocab([k.get("units", k["text"]) for k in kept])
    _write_prepared(out_dir, kept, mels, skipped, vocab, mel_spec, audio_dir)
    return PrepareReport(kept=len(kept), skipped=skipped, frames=offset)


class MelDataset(torch.utils.data.Dataset):
    """A prepared dataset: items are ``(mel (n, d) float32, text)``, the text as the model reads it (a
    string, or the pinyin unit list of a text with Chinese characters)."""

    def __init__(self, directory: str):
        index = os.path.join(directory, "index.jsonl")
        if not os.path.isfile(index):
            raise FileNotFoundError(
                f"{directory} is not a prepared dataset (no index.jsonl); run `flowtts data prepare`"
            )
        with open(index, encoding="utf-8") as f:
            self.items = [json.loads(line) for line in f if line.strip()]
        self.mels = np.load(os.path.join(directory, "mels.npy"), mmap_mode="r")
        with open(os.path.join(directory, "dataset.json"), encoding="utf-8") as f:
            self.info = json.load(f)
        self.directory = directory

    def __len__(self) -> int:
        return len(self.items)

    @property
    def frames(self) -> list[int]:
        return [it["frames"] for it in self.items]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str | list[str]]:
        it = self.items[i]
        mel = np.asarray(self.mels[it["offset"] : it["offset"] + it["frames"]], dtype=np.float32)
        return torch.from_numpy(mel), it.get("units", it["text"])

    @property
    def texts(self) -> list[str | list[str]]:
        """Every item's text as the model reads it (see ``__getitem__``)."""
        return [it.get("units", it["text"]) for it in self.items]

    def vocab_path(self) -> str:
        return os.path.join(self.directory, "vocab.txt")


def frame_batches(frames: Sequence[int], max_frames: int, max_samples: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of indices whose padded size ``len(batch) * longest`` stays within ``max_frames``.

    Utterances are sorted by length (ties and order within buckets shuffled), packed greedily, and the
    batch order is shuffled; everything depends only on ``(seed, epoch)``, so a resumed run sees the
    same batches.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    jitter = torch.rand(len(frames), generator=g).tolist()
    order = sorted(range(len(frames)), key=lambda i: (frames[i], jitter[i]))
    batches, current, longest = [], [], 0
    for i in order:
        if frames[i] > max_frames:
            raise ValueError(f"utterance {i} has {frames[i]} frames, over the batch budget of {max_frames}")
        new_longest = max(longest, frames[i])
        if current and (new_longest * (len(current) + 1) > max_frames or len(current) >= max_samples):
            batches.append(current)
            current, new_longest = [], frames[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]


@dataclass(frozen=True)
class PairLayout:
    """How the first utterance of a training pair (:func:`pair_items`) is laid out.

    ``gap=None``: as recorded, with its own leading and trailing silence. ``gap=(lo, hi)``: as inference
    prepares a reference clip (:func:`flowtts.synthesis.prepare_reference`): cut to its speech (the
    dataset's ``speech`` bounds), followed by digital silence of a length drawn uniformly from ``lo`` to
    ``hi`` seconds for each pair, and the pair raised by the gain that brings that reference to
    ``target_rms`` when it is quieter (0: never). The second utterance is kept whole, as the model
    should say it.
    """

    gap: tuple[float, float] | None = None
    target_rms: float = 0.0
    seed: int = 0

    @classmethod
    def of(cls, gap, target_rms: float, seed: int) -> PairLayout:
        """The layout a run config's ``pair_gap`` and ``pair_rms`` describe; a ``ValueError`` naming both."""
        try:
            return cls(gap, target_rms, seed)
        except ValueError as error:
            raise ValueError(f"pair_gap / pair_rms: {error}") from None

    def __post_init__(self):
        if self.gap is not None:
            object.__setattr__(self, "gap", tuple(self.gap))  # a list from JSON or the command line
            if len(self.gap) != 2 or not 0 <= self.gap[0] <= self.gap[1]:
                raise ValueError(f"the pair gap must be two seconds 0 <= lo <= hi, got {self.gap}")
        if not self.target_rms >= 0:
            raise ValueError(f"the pair target_rms must be >= 0, got {self.target_rms}")
        if self.target_rms > 0 and self.gap is None:
            raise ValueError("the pair target_rms applies to a reference laid out with a gap; give the gap too")

    def check(self, dataset) -> None:
        """``ValueError`` now, before a run writes anything, if ``dataset`` cannot be laid out this way
        (a gap needs the speech bounds that only this version's ``flowtts data prepare`` records)."""
        if self.gap is not None and len(dataset):
            _speech_frames(dataset.items[0], dataset.info["mel"]["hop_length"])

    def gap_frames(self, a: int, b: int, hop_seconds: float) -> int:
        """Frames of silence after utterance ``a`` when ``b`` follows it (drawn from ``(seed, a, b)`` alone,
        so an epoch and a resumed run lay the same pair out the same way)."""
        lo, hi = self.gap
        g = torch.Generator().manual_seed((self.seed * 1_000_037 + a * 7_919 + b) % (2**63))
        return round((lo + (hi - lo) * float(torch.rand((), generator=g))) / hop_seconds)


def _speech_frames(row: dict, hop: int) -> tuple[int, int]:
    """The frames of a row's ``speech`` bounds (samples), at least one frame."""
    if "speech" not in row:
        raise ValueError(
            "this prepared dataset has no speech bounds (prepared by an older flowtts): prepare it again "
            "with `flowtts data prepare` to train pairs with a gap"
        )
    start, end = row["speech"]
    first = min(start // hop, row["frames"] - 1)
    return first, max(first + 1, min(-(-end // hop), row["frames"]))


def item_frames(dataset, item: Sequence[int], layout: PairLayout | None = None) -> int:
    """Frames of a training item as :func:`join_item` lays it out."""
    if len(item) == 1 or layout is None or layout.gap is None:
        return sum(dataset.items[i]["frames"] for i in item)
    hop = dataset.info["mel"]["hop_length"]
    first, end = _speech_frames(dataset.items[item[0]], hop)
    gap = layout.gap_frames(item[0], item[1], hop / dataset.info["mel"]["target_sample_rate"])
    return end - first + gap + sum(dataset.items[i]["frames"] for i in item[1:])


def pair_items(
    frames: Sequence[int],
    fraction: float,
    max_frames: int,
    seed: int,
    epoch: int,
    length: Callable[[tuple[int, ...]], int] | None = None,
) -> list[tuple[int, ...]]:
    """One epoch's training items: utterances alone, or two said one after the other.

    Inference asks a model to continue a reference clip of one sentence with another sentence, over
    the length of both; a corpus of single short sentences never shows it that layout. A ``fraction``
    of the utterances (drawn from ``(seed, epoch)``) is paired up end to end, each utterance used once
    per epoch; a pair longer than ``max_frames`` (``length`` of the pair, default the sum of ``frames``)
    stays two single items.

    Returns:
        Tuples of dataset indices, singles ``(i,)`` and pairs ``(a, b)``, in dataset order of their first index.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"the pair fraction must be in [0, 1], got {fraction}")
    n = len(frames)
    count = int(round(fraction * n / 2))
    if count == 0:
        return [(i,) for i in range(n)]
    length = length or (lambda item: sum(frames[i] for i in item))
    g = torch.Generator().manual_seed(seed * 1_000_033 + epoch + 17)
    chosen = torch.randperm(n, generator=g)[: 2 * count].tolist()
    items, used = [], set()
    for a, b in zip(chosen[0::2], chosen[1::2]):
        if length((a, b)) <= max_frames:
            items.append((a, b))
            used.update((a, b))
    items += [(i,) for i in range(n) if i not in used]
    return sorted(items)


def item_text(dataset, item: Sequence[int], plain: bool = False):
    """The text of a training item (:func:`pair_items`): its utterances' texts joined as a reference
    transcript and the text said after it (:func:`flowtts.text.units.join_texts`).

    ``plain``: the texts as written, not as the model reads them (pinyin units) -- what a recogniser reads.
    """
    from flowtts.text.units import join_texts

    rows = [dataset.items[i] for i in item]
    texts = [row["text"] if plain else row.get("units", row["text"]) for row in rows]
    text = texts[0]
    for t in texts[1:]:
        text = join_texts(text, t)
    return text


def silence_frame(mel_settings: dict) -> torch.Tensor:
    """``(n_mels,)``: the mel of digital silence under ``mel_settings`` (a dataset's ``info["mel"]``)."""
    from flowtts.model.mel import MelSpec

    spec = MelSpec(**mel_settings)
    with torch.no_grad():
        return spec(torch.zeros(1, 4 * spec.win_length))[0, :, 2]


def join_item(dataset, item: Sequence[int], layout: PairLayout | None = None, silence: torch.Tensor | None = None):
    """``(mel, text)`` of a training item: its utterances' mels end to end (the first of a pair laid out
    by ``layout``, see :class:`PairLayout`) and :func:`item_text`.

    ``silence``: the dataset's :func:`silence_frame`, when the caller has it (computed here otherwise).
    """
    mels = [dataset[i][0] for i in item]
    if len(mels) > 1 and layout is not None and layout.gap is not None:
        info = dataset.info["mel"]
        hop, rate = info["hop_length"], info["target_sample_rate"]
        a, b = item[0], item[1]
        first, end = _speech_frames(dataset.items[a], hop)
        gap = layout.gap_frames(a, b, hop / rate)
        floor = silence_frame(info) if silence is None else silence
        reference = torch.cat((mels[0][first:end], floor.expand(gap, -1)))
        mels = [reference, *mels[1:]]
        row = dataset.items[a]
        start, stop = row["speech"]
        rms = row["rms"] * math.sqrt((stop - start) / max(stop - start + gap * hop, 1))
        if layout.target_rms > 0 and 0 < rms < layout.target_rms:
            # a louder wave is a louder magnitude mel: log-mel rises by the log of the gain; silence stays silent
            shift = math.log(layout.target_rms / rms)
            mels = [torch.where(m > floor + 1e-4, m + shift, m) for m in mels]
    return (mels[0] if len(mels) == 1 else torch.cat(mels)), item_text(dataset, item)


def epoch_batches(
    frames: Sequence[int],
    max_frames: int,
    max_samples: int,
    seed: int,
    epoch: int,
    pair_fraction: float = 0.0,
    length: Callable[[tuple[int, ...]], int] | None = None,
) -> list[list[tuple[int, ...]]]:
    """The batches of items (:func:`pair_items`, ``length`` an item's frames) of one epoch, packed by
    :func:`frame_batches`."""
    length = length or (lambda item: sum(frames[i] for i in item))
    items = pair_items(frames, pair_fraction, max_frames, seed, epoch, length)
    return [
        [items[k] for k in batch]
        for batch in frame_batches([length(i) for i in items], max_frames, max_samples, seed, epoch)
    ]


class BatchCursor:
    """Where a run is in its epochs of batches, ``batches_of(epoch)`` being an epoch's batches: the position
    ``(epoch, batch_in_epoch)`` a checkpoint stores (:meth:`state`) so a resumed run takes the same batches."""

    def __init__(self, batches_of: Callable[[int], list], epoch: int = 0, batch_in_epoch: int = 0):
        self.batches_of = batches_of
        self.epoch, self.batch_in_epoch = epoch, batch_in_epoch
        self._batches = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state` (e.g. the one a resumed ``last.pt`` holds)."""
        self.epoch, self.batch_in_epoch, self._batches = state["epoch"], state["batch_in_epoch"], None

    def next(self):
        """The next batch, moving on to the next epoch when this one is used up."""
        if self._batches is None:
            self._batches = self.batches_of(self.epoch)
        while self.batch_in_epoch >= len(self._batches):
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._batches = self.batches_of(self.epoch)
        self.batch_in_epoch += 1
        return self._batches[self.batch_in_epoch - 1]


def collate(items: Sequence[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Pad mels to the longest: ``(mels (b, n, d), lens (b,), texts)``."""
    lens = torch.tensor([m.shape[0] for m, _ in items])
    mels = torch.nn.utils.rnn.pad_sequence([m for m, _ in items], batch_first=True)
    return mels, lens, [t for _, t in items]
