"""Teacher trajectories at the student's solver times, sampled once and reused by many distillation steps.

A sampler-through distillation step costs one student solve with backprop and one many-step teacher
solve; on a CPU the teacher's solve is most of it. A *pool* samples ``size`` teacher trajectories once
(prompt, noise, and the teacher's states at every time of the student's grid), saves them in the run
directory, and lets every later step draw its prompts, noises and targets from it. The states at the
intermediate times also give the student a direct target for each of its own steps (the *segment*
loss of :func:`flowtts.train.distill.distill`).

The teacher integrates on its usual grid with the student's times merged in (a teacher time within
``1e-4`` of a student time is replaced by it), so its states at the student's times are exact solver
states, not interpolations.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import torch
import torch.nn.functional as F

from flowtts.train.data import MelDataset
from flowtts.train.prompts import Prompts, draw_pair_prompts, draw_partners, draw_prompts, solve

SNAP = 1e-4


def teacher_grid(config) -> tuple[torch.Tensor, list[int]]:
    """The teacher's solver times with the student's merged in, and where the student's times sit in it.

    Args:
        config: A :class:`~flowtts.train.distill_config.DistillConfig`.

    Returns:
        ``(grid, positions)``: float32 times from 0 to 1, and for each student time its index in ``grid``.
    """
    student = config.student.times().double()
    teacher = config.teacher.times().double()
    keep = (teacher[:, None] - student[None, :]).abs().min(dim=1).values > SNAP
    grid = torch.sort(torch.cat([teacher[keep], student])).values
    positions = [int(torch.argmin((grid - t).abs())) for t in student]
    return grid.float(), positions


def teacher_states(teacher, prompts: Prompts, config) -> torch.Tensor:
    """The teacher's guided solve from ``prompts.noise``, ``(student_steps + 1, b, n, d)`` at the student's times.

    The first entry is the noise, the last the teacher's output (prompt frames not copied in).
    """
    grid, positions = teacher_grid(config)
    sample_kwargs = dict(cfg_strength=config.teacher.cfg_strength, t_grid=grid, **config.precision())
    _, trajectory = solve(teacher, prompts, cache=True, **sample_kwargs)
    return trajectory[positions].float().cpu()


def _fingerprint(teacher, dataset: MelDataset, config, size: int) -> str:
    """What the pool's contents depend on; a saved pool with another fingerprint is not reused."""
    weights = sum(float(p.detach().double().sum()) for p in teacher.parameters())
    precision = config.precision()  # named only when reduced, so float32 pools keep their fingerprint
    return json.dumps(
        {
            **precision,
            "size": size,
            "seed": config.seed,
            "chunk": config.batch_size,
            "teacher_steps": config.teacher.steps,
            "teacher_cfg": config.teacher.cfg_strength,
            "teacher_sway": config.teacher.sway_sampling_coef,
            "student_times": [round(float(t), 7) for t in config.student.times()],
            "prompt_fraction": list(config.prompt_fraction),
            "dataset_rows": len(dataset),
            "teacher_weights": f"{weights:.6e}",
            **({"prompts": config.prompts} if config.prompts != "prefix" else {}),  # prefix pools keep their print
        },
        sort_keys=True,
    )


class TeacherPool:
    """``size`` prompts with their noises and teacher states (see the module docstring)."""

    def __init__(
        self,
        index: torch.Tensor,
        n_prompt: torch.Tensor,
        states: list[torch.Tensor],
        fingerprint: str,
        partner: torch.Tensor | None = None,
    ):
        self.index = index  # (size,) dataset rows
        self.n_prompt = n_prompt  # (size,) prompt frames
        self.states = states  # size x (student_steps + 1, frames, channels)
        self.fingerprint = fingerprint
        # (size,) the row whose text follows each reference in pair prompts; -1: a prefix prompt
        self.partner = torch.full_like(index, -1) if partner is None else partner

    def __len__(self) -> int:
        return len(self.states)

    def batch(self, dataset: MelDataset, rows: list[int]) -> tuple[Prompts, torch.Tensor]:
        """Prompts (noise = the stored noise, data = the utterance or pair), states ``(k + 1, b, n, d)`` of ``rows``."""
        if any(int(self.partner[r]) >= 0 for r in rows):
            if not all(int(self.partner[r]) >= 0 for r in rows):
                raise ValueError("a pool batch mixes pair and prefix prompts")
            pairs = [(int(self.index[r]), int(self.partner[r])) for r in rows]
            states = self._stacked(rows)
            prompts = draw_pair_prompts(dataset, pairs, states.shape[-1], torch.Generator().manual_seed(0))
            if prompts.durations.tolist() != [self.states[r].shape[1] for r in rows]:
                raise ValueError("the pool's pairs do not fit this dataset (other recordings' lengths)")
            return dataclasses.replace(prompts, noise=states[0]), states
        mels, texts = [], []
        for r in rows:
            mel, text = dataset[int(self.index[r])]
            mels.append(mel)
            texts.append(text)
        lens = self.n_prompt[rows]
        durations = torch.tensor([self.states[r].shape[1] for r in rows])
        n = int(durations.max())
        states = self._stacked(rows)
        cond = torch.nn.utils.rnn.pad_sequence([m[: int(k)] for m, k in zip(mels, lens)], batch_first=True)
        data = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True)[:, :n]
        data = F.pad(data, (0, 0, 0, n - data.shape[1]))
        prompts = Prompts(cond=cond, lens=lens, texts=texts, durations=durations, noise=states[0], data=data)
        return prompts, states

    def _stacked(self, rows: list[int]) -> torch.Tensor:
        """The states of ``rows`` zero-padded to the longest, ``(k + 1, b, n, d)``."""
        n = max(self.states[r].shape[1] for r in rows)
        return torch.stack([F.pad(self.states[r], (0, 0, 0, n - self.states[r].shape[1])) for r in rows], dim=1)

    def save(self, path: str) -> None:
        from flowtts.utils.files import atomic_output

        state = {
            "index": self.index,
            "n_prompt": self.n_prompt,
            "partner": self.partner,
            "states": self.states,
            "fingerprint": self.fingerprint,
        }
        with atomic_output(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str) -> TeacherPool:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["index"], state["n_prompt"], list(state["states"]), state["fingerprint"], state.get("partner"))


def _extends(pool: TeacherPool, expected: str, rows: int, chunk: int) -> bool:
    """Whether ``pool`` holds the first draws of the pool ``expected`` describes."""
    old, new = json.loads(pool.fingerprint), json.loads(expected)
    if {k: v for k, v in old.items() if k != "size"} != {k: v for k, v in new.items() if k != "size"}:
        return False
    return (
        old["size"] < new["size"]
        and math.ceil(old["size"] / rows) == math.ceil(new["size"] / rows)
        and old["size"] >= chunk
    )


def build_pool(
    teacher,
    dataset: MelDataset,
    config,
    size: int,
    env=None,
    *,
    progress: bool = False,
    reuse: TeacherPool | None = None,
) -> TeacherPool:
    """Sample ``size`` teacher trajectories, ``config.batch_size`` prompts at a time.

    Every rank draws the same prompts and noises (from ``config.seed``); under torchrun each samples
    its share of the batches and the shares are gathered, so all ranks hold the same pool. The draws
    of a smaller pool are the first draws of a larger one (while both need the same number of passes
    over the dataset), so ``reuse`` (a smaller pool built with the same settings) supplies its
    trajectories and only the rest are sampled.
    """
    from flowtts.train.loop import progress_bar

    if size < 1:
        raise ValueError(f"pool size must be >= 1, got {size}")
    rank, world = (env.rank, env.world_size) if env is not None else (0, 1)
    g = torch.Generator().manual_seed(config.seed * 15_485_863 + 17)
    rounds = math.ceil(size / len(dataset))
    order = torch.cat([torch.randperm(len(dataset), generator=g) for _ in range(rounds)])[:size].tolist()
    chunks = [order[i : i + config.batch_size] for i in range(0, size, config.batch_size)]
    mine, kept = {}, 0
    partners = torch.full((len(order),), -1, dtype=torch.long)
    if reuse is not None:
        kept = len(reuse) // config.batch_size  # whole chunks
        if reuse.index[: kept * config.batch_size].tolist() != order[: kept * config.batch_size]:
            raise ValueError("the pool to reuse was drawn differently (other settings or dataset)")
    bar = progress_bar(progress and rank == 0, len(chunks), 0, "teacher pool")
    for c, indices in enumerate(chunks):
        if config.prompts == "pair":  # every rank: the same draws
            pairs = draw_partners(dataset, indices, g)
            partners[c * config.batch_size : c * config.batch_size + len(pairs)] = torch.tensor([b for _, b in pairs])
            prompts = draw_pair_prompts(dataset, pairs, teacher.num_channels, g)
        else:
            prompts = draw_prompts(dataset, indices, teacher.num_channels, config, g)
        if c >= kept and c % world == rank:
            states = teacher_states(teacher, prompts, config)
            mine[c] = (prompts.lens, [states[:, j, : int(d)].clone() for j, d in enumerate(prompts.durations)])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        mine = {c: part for shard in gathered for c, part in shard.items()}
    for c in range(kept):  # every rank holds the reused pool
        rows = list(range(c * config.batch_size, (c + 1) * config.batch_size))
        mine[c] = (reuse.n_prompt[rows], [reuse.states[r] for r in rows])
    n_prompt = torch.cat([mine[c][0] for c in range(len(chunks))])
    states = [s for c in range(len(chunks)) for s in mine[c][1]]
    fingerprint = _fingerprint(teacher, dataset, config, size)
    return TeacherPool(torch.tensor(order), n_prompt, states, fingerprint, partners)


def load_or_build(path: str, teacher, dataset: MelDataset, config, size: int, env=None, *, progress=False):
    """The pool saved at ``path`` when it was built for the same teacher, data and settings, else a new one
    (saved there by rank 0)."""
    expected = _fingerprint(teacher, dataset, config, size)
    reuse = None
    if os.path.exists(path):
        pool = TeacherPool.load(path)
        if pool.fingerprint == expected:
            return pool
        if _extends(pool, expected, len(dataset), config.batch_size):
            reuse = pool  # a smaller pool of the same draws: keep its trajectories, sample the rest
    pool = build_pool(teacher, dataset, config, size, env, progress=progress, reuse=reuse)
    if env is None or env.rank == 0:
        pool.save(path)
    return pool
