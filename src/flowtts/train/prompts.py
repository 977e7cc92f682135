"""Distillation prompts: what the teacher and the student are both asked to generate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from flowtts.text.units import join_texts
from flowtts.train.data import MelDataset, PairLayout, item_frames, join_item, silence_frame


@dataclass
class Prompts:
    """A batch of distillation prompts."""

    cond: torch.Tensor  # (b, n_prompt_max, d)
    lens: torch.Tensor  # (b,) prompt frames
    texts: list[str]
    durations: torch.Tensor  # (b,)
    noise: torch.Tensor  # (b, max duration, d)
    data: torch.Tensor | None = None  # (b, max duration, d) the whole utterances' mels, zero-padded
    targets: list[str] | None = None  # what the generated frames should say, when known (pair, unprompted)
    kind: str = "prefix"  # which of PROMPT_KINDS drew them

    def rows(self, rows: list[int]) -> Prompts:
        lens = self.lens[rows]
        durations = self.durations[rows]
        n = int(durations.max())
        return Prompts(
            cond=self.cond[rows, : int(lens.max())],
            lens=lens,
            texts=[self.texts[r] for r in rows],
            durations=durations,
            noise=self.noise[rows, :n],
            data=None if self.data is None else self.data[rows, :n],
            targets=None if self.targets is None else [self.targets[r] for r in rows],
            kind=self.kind,
        )

    def noised(self, t: float) -> Prompts:
        """These prompts with the noise moved to time ``t`` of the data's flow path, ``(1 - t) noise + t data``."""
        if self.data is None:
            raise ValueError("these prompts carry no data mels (draw them with draw_prompts)")
        return dataclasses.replace(self, noise=(1 - t) * self.noise + t * self.data)

    def generated_mask(self) -> torch.Tensor:
        """``(b, n)`` frames the model generates: after the prompt, before the duration."""
        frames = torch.arange(self.noise.shape[1])[None, :]
        return (frames >= self.lens[:, None]) & (frames < self.durations[:, None])


def generated_distance(out: torch.Tensor, reference: torch.Tensor, prompts: Prompts) -> float:
    """Mean squared distance between two ``(b, n, d)`` mels on the frames ``prompts`` generate."""
    mask = prompts.generated_mask()[..., None].to(out.device)
    squared = (out.float() - reference.float().to(out.device)).pow(2) * mask
    return float(squared.sum() / (mask.sum() * out.shape[-1]))


def draw_prompts(dataset: MelDataset, indices: list[int], num_channels: int, config, generator) -> Prompts:
    """Prompts for ``indices``: a random leading fraction of each utterance, and one noise each."""
    lo, hi = config.prompt_fraction
    mels, texts, lens, durations = [], [], [], []
    for i in indices:
        mel, text = dataset[i]
        frac = lo + (hi - lo) * float(torch.rand((), generator=generator))
        n_prompt = max(1, min(int(frac * mel.shape[0]), mel.shape[0] - 1))
        mels.append(mel)
        lens.append(n_prompt)
        durations.append(mel.shape[0])
        texts.append(text)
    cond = torch.nn.utils.rnn.pad_sequence([m[:n] for m, n in zip(mels, lens)], batch_first=True)
    data = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True)
    durations = torch.tensor(durations)
    noise = torch.randn((len(indices), int(durations.max()), num_channels), generator=generator)
    return Prompts(cond=cond, lens=torch.tensor(lens), texts=texts, durations=durations, noise=noise, data=data)


def draw_pair_prompts(
    dataset: MelDataset, pairs: list[tuple[int, int]], num_channels: int, generator, layout: PairLayout | None = None
) -> Prompts:
    """Cross-sentence prompts, as inference uses a model: utterance ``a`` is the reference clip and
    utterance ``b``'s text is to be said after it, in ``b``'s recorded length.

    The prompts know their ``targets`` (``b``'s text), so a recogniser can score the generated frames
    alone; ``data`` holds the two recordings end to end, the first laid out by ``layout`` (as recorded
    when ``None``; :class:`flowtts.train.data.PairLayout`).
    """
    cond, texts, targets, lens, durations, data = [], [], [], [], [], []
    silence = silence_frame(dataset.info["mel"]) if layout is not None and layout.gap is not None else None
    for a, b in pairs:
        text_a, text_b = dataset.items[a].get("units", dataset.items[a]["text"]), dataset[b][1]
        if not isinstance(text_a, str) or not isinstance(text_b, str):
            raise ValueError("pair prompts need plain-text transcripts (this dataset stores pinyin units)")
        mel, _ = join_item(dataset, (a, b), layout, silence)
        n_ref = item_frames(dataset, (a, b), layout) - dataset.items[b]["frames"]
        cond.append(mel[:n_ref])
        lens.append(n_ref)
        durations.append(mel.shape[0])
        texts.append(join_texts(text_a, text_b))
        targets.append(text_b)
        data.append(mel)
    durations = torch.tensor(durations)
    noise = torch.randn((len(pairs), int(durations.max()), num_channels), generator=generator)
    return Prompts(
        cond=torch.nn.utils.rnn.pad_sequence(cond, batch_first=True),
        lens=torch.tensor(lens),
        texts=texts,
        durations=durations,
        noise=noise,
        data=torch.nn.utils.rnn.pad_sequence(data, batch_first=True),
        targets=targets,
        kind="pair",
    )


def draw_unprompted_prompts(dataset: MelDataset, indices: list[int], num_channels: int, generator) -> Prompts:
    """Whole utterances said with no audio prompt, as inference does with ``continue_reference`` off: one
    frame with no audio condition (zeros, as ``sample(no_ref_audio=True)`` gives), then the utterance's
    frames to generate, with its text alone. ``targets`` are the texts when they are plain text."""
    mels, texts = zip(*(dataset[i] for i in indices))
    data = [torch.cat([mel.new_zeros(1, mel.shape[1]), mel]) for mel in mels]
    durations = torch.tensor([m.shape[0] for m in data])
    noise = torch.randn((len(indices), int(durations.max()), num_channels), generator=generator)
    return Prompts(
        cond=torch.zeros(len(indices), 1, mels[0].shape[1]),
        lens=torch.ones(len(indices), dtype=torch.long),
        texts=list(texts),
        durations=durations,
        noise=noise,
        data=torch.nn.utils.rnn.pad_sequence(data, batch_first=True),
        targets=list(texts) if all(isinstance(t, str) for t in texts) else None,
        kind="unprompted",
    )


PROMPT_KINDS = ("prefix", "pair", "unprompted")


def check_prompt_kind(kind) -> str:
    """``kind`` if it names a kind of prompts (:data:`PROMPT_KINDS`), else ``ValueError`` naming the known ones."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompts must be one of {PROMPT_KINDS}, got {kind!r}")
    return kind


def draw_partners(dataset: MelDataset, indices: list[int], generator) -> list[tuple[int, int]]:
    """Each of ``indices`` with another row of ``dataset`` drawn uniformly from the rest, as pairs."""
    if len(dataset) < 2:
        raise ValueError(f"pair prompts need a dataset of at least 2 rows, got {len(dataset)}")
    shift = torch.randint(1, len(dataset), (len(indices),), generator=generator).tolist()
    return [(int(i), (int(i) + s) % len(dataset)) for i, s in zip(indices, shift)]


def draw_kind(
    dataset: MelDataset,
    indices: list[int],
    kind: str,
    num_channels: int,
    config,
    generator,
    layout: PairLayout | None = None,
) -> Prompts:
    """Prompts of ``kind`` for ``indices``: ``"prefix"`` (:func:`draw_prompts`), ``"pair"`` (each row as the
    reference clip of another row drawn at random, laid out by ``layout``, :func:`draw_pair_prompts`) or
    ``"unprompted"`` (each row said with no audio prompt, :func:`draw_unprompted_prompts`)."""
    kind = check_prompt_kind(kind)
    if kind == "pair":
        return draw_pair_prompts(dataset, draw_partners(dataset, indices, generator), num_channels, generator, layout)
    if kind == "unprompted":
        return draw_unprompted_prompts(dataset, indices, num_channels, generator)
    return draw_prompts(dataset, indices, num_channels, config, generator)


def fixed_prompts(
    dataset: MelDataset,
    rows: list[int],
    kind: str,
    num_channels: int,
    config,
    seed: int,
    layout: PairLayout | None = None,
) -> Prompts:
    """Reproducible evaluation prompts for ``rows``: prefixes, the rows unprompted, or pairs of each row and
    the next one's text (the last row's with the first's), so the prompts read no row outside ``rows``."""
    g = torch.Generator().manual_seed(seed)
    if check_prompt_kind(kind) == "unprompted":
        return draw_unprompted_prompts(dataset, rows, num_channels, g)
    if kind == "pair":
        if len(rows) < 2:
            raise ValueError(f"pair prompts need at least 2 held-out rows, got {len(rows)}")
        pairs = [(a, rows[(k + 1) % len(rows)]) for k, a in enumerate(rows)]
        return draw_pair_prompts(dataset, pairs, num_channels, g, layout)
    return draw_prompts(dataset, rows, num_channels, config, g)


def solve(model, prompts: Prompts, *, cache: bool, **sample_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.sample()`` on ``prompts`` (their noises, each sample computed as if alone): ``(out, trajectory)``."""
    return model.sample(
        prompts.cond.to(model.device),
        prompts.texts,
        prompts.durations,
        lens=prompts.lens,
        noise=prompts.noise.to(model.device),
        isolate_batch=True,
        cache=cache,
        **sample_kwargs,
    )


def sample_with(model, prompts: Prompts, *, cache: bool, **sample_kwargs) -> torch.Tensor:
    """The output of :func:`solve`."""
    return solve(model, prompts, cache=cache, **sample_kwargs)[0]


def velocity_field_of(model, prompts: Prompts, **field_kwargs):
    """``model.velocity_field()`` of ``prompts`` as :func:`solve` conditions them (each sample as if alone);
    ``field.solve(prompts.noise, t_grid).x`` is the last state of :func:`solve`'s trajectory with that grid.
    Runs in the caller's grad mode (a frozen teacher: under ``torch.no_grad()``, in eval mode)."""
    cond = prompts.cond.to(model.device)
    return model.velocity_field(
        cond, prompts.texts, prompts.durations, lens=prompts.lens, isolate_batch=True, **field_kwargs
    )
