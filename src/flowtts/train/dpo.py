"""Flow-DPO: Diffusion-DPO (Wallace et al., 2023) for a flow-matching model, on a preference file.

Shapes: ``p`` pairs, ``b = 2p`` rows (the winners, then the losers), ``n`` frames, ``d`` mel channels.

A preference pair holds two mels generated for the same text and prompt, and which one a judge preferred.
Each step draws some pairs, and for each pair one time ``t ~ U(0, 1)`` and one noise ``x0`` shared by
its winner ``w`` and loser ``l``. With ``x1`` a pair member's mel, the flow-matching point and target are

    x_t = (1 - t) x0 + t x1,        u = x1 - x0,

and the member's error relative to the frozen reference model (the starting model) is

    e = mean ||v_theta(x_t) - u||^2 - mean ||v_ref(x_t) - u||^2

over its generated frames (after the prompt's, before its end). The loss of the pair is

    loss = -log sigmoid(-beta (e_w - e_l)),

which pays for fitting the winner better than the reference does, and the loser worse, by more than the
other; ``margin = e_l - e_w`` (positive when the model leans to the winner more than the reference does)
flips sign when winner and loser swap, and ``beta -> 0`` gives ``log 2``. Pairs marked ``"same"`` are
skipped. The velocity is the network's conditional one, conditioned as in training
(:meth:`flowtts.model.cfm.CFM.forward`): the prompt's frames as the audio condition, the generated ones
blanked, the text the prompt's text joined with the generated one.

Randomness is derived from ``(seed, step)``, so a run resumes exactly (:class:`flowtts.train.loop.TrainingLoop`).
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from flowtts.model.cfm import FlowDraws
from flowtts.text.units import join_texts
from flowtts.train import distributed as dist_utils
from flowtts.train.loop import LoopSettings, TrainingLoop

LOG_CSV = "dpo_log.csv"
LOG_COLUMNS = ["step", "loss", "margin", "accuracy", "lr", "grad_norm", "seconds_per_step", "elapsed_s"]
DPO_LOOP = LoopSettings(
    steps=200, lr=1e-5, warmup=20, weight_decay=0.0, grad_clip=1.0, ema_decay=0.99, save_every=50, log_every=1
)
DEFAULT_BETA = 20.0  # on the built-in student, beta 1000 saturated the loss in 2 steps (zero gradient); 20 learnt
# The loss's gradient grows with beta: at 1000 a step is already clipped at once, and far beyond
# it (~1e30) the gradient overflows float32 and the run writes a model of NaNs.
MAX_BETA = 1e6


@dataclass
class DPOConfig:
    """How hard to prefer, how many pairs per step, and the loop."""

    beta: float = DEFAULT_BETA
    batch_size: int = 4  # pairs per step
    dropout: bool = False  # keep the model's dropout active
    loop: LoopSettings = DPO_LOOP
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.beta <= MAX_BETA:
            raise ValueError(f"beta must be a number > 0, at most {MAX_BETA:g}, got {self.beta}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")


def load_pairs(path: str) -> list:
    """The preference pairs of the file ``path`` (:func:`flowtts.prefs.store.read_pairs`).

    Raises:
        ValueError: No such file, or no preference store to read it with.
    """
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ValueError(f"pairs: no such preference file {path!r}")
    try:
        from flowtts.prefs.store import read_pairs
    except ImportError as error:
        raise ValueError(f"pairs {path!r}: reading preference files needs flowtts.prefs.store ({error})") from None
    return read_pairs(path)


def ranked(pairs: list, num_channels: int) -> list[tuple]:
    """``(winner, loser)`` of each pair with a preference (``"same"`` skipped), checked for the model.

    Each is ``(mel (n, d), prompt_frames, text)``, the text the prompt's joined with the generated one.

    Raises:
        ValueError: A pair with another channel count, unequal mel widths, no generated frames, an unknown
            choice, or no pair with a preference at all.
    """
    out = []
    for i, pair in enumerate(pairs):
        if pair.choice == "same":
            continue
        if pair.choice not in ("a", "b"):
            raise ValueError(f"pair {i}: choice must be 'a', 'b' or 'same', got {pair.choice!r}")
        text = join_texts(pair.prompt_text, pair.text) if pair.prompt_text else pair.text
        members = []
        for mel in (pair.mel_a, pair.mel_b):
            mel = torch.as_tensor(mel, dtype=torch.float32)
            if mel.ndim != 2 or mel.shape[1] != num_channels:
                raise ValueError(f"pair {i}: mels must be (frames, {num_channels}), got {tuple(mel.shape)}")
            if not 0 <= pair.prompt_frames < mel.shape[0]:
                raise ValueError(f"pair {i}: {pair.prompt_frames} prompt frames leave none generated of {mel.shape[0]}")
            members.append((mel, int(pair.prompt_frames), text))
        out.append(tuple(members) if pair.choice == "a" else tuple(reversed(members)))
    if not pairs:
        raise ValueError("pairs: there are none (an empty preference file?)")
    if not out:
        raise ValueError("pairs: no pair has a preference (all are 'same')")
    return out


@dataclass
class PairBatch:
    """Some ranked pairs as one batch: rows ``[0, p)`` the winners, ``[p, 2p)`` the losers."""

    mels: torch.Tensor  # (b, n, d) zero-padded
    lens: torch.Tensor  # (b,) frames
    prompt_frames: torch.Tensor  # (b,)
    texts: list[str]

    @property
    def pairs(self) -> int:
        return len(self.texts) // 2

    def generated_mask(self) -> torch.Tensor:
        """``(b, n)`` frames after each row's prompt and before its end."""
        frames = torch.arange(self.mels.shape[1], device=self.mels.device)[None, :]
        return (frames >= self.prompt_frames[:, None]) & (frames < self.lens[:, None])


def pair_batch(ranked_pairs: list[tuple]) -> PairBatch:
    """The :class:`PairBatch` of ``(winner, loser)`` pairs (:func:`ranked`)."""
    rows = [pair[0] for pair in ranked_pairs] + [pair[1] for pair in ranked_pairs]
    mels = torch.nn.utils.rnn.pad_sequence([mel for mel, _, _ in rows], batch_first=True)
    lens = torch.tensor([mel.shape[0] for mel, _, _ in rows])
    prompt_frames = torch.tensor([k for _, k, _ in rows])
    return PairBatch(mels, lens, prompt_frames, [text for _, _, text in rows])


@dataclass
class PairDraws:
    """One time and one noise per pair, shared by its winner and loser."""

    time: torch.Tensor  # (p,)
    noise: torch.Tensor  # (p, n, d)

    @classmethod
    def draw(cls, batch: PairBatch, generator: torch.Generator | None = None) -> PairDraws:
        p, (n, d) = batch.pairs, batch.mels.shape[1:]
        noise = torch.randn((p, n, d), generator=generator)
        return cls(torch.rand((p,), generator=generator), noise)


def flow_errors(model, batch: PairBatch, draws: PairDraws) -> torch.Tensor:
    """Mean squared error ``(b,)`` of ``model``'s velocity at ``x_t`` against ``u = x1 - x0``, per row, over its
    generated frames (each row computed as if alone; in the caller's grad mode)."""
    x1 = batch.mels.to(device=model.device, dtype=model.dtype)
    device = x1.device
    noise = torch.cat((draws.noise, draws.noise)).to(x1)
    times = torch.cat((draws.time, draws.time)).to(x1)
    span = batch.generated_mask().to(device)
    flow_draws = FlowDraws(span=span, noise=noise, time=times, drop_audio_cond=False, drop_text=False)
    _, _, pred = model(x1, batch.texts, lens=batch.lens.to(device), draws=flow_draws, isolate_batch=True)
    dtype = torch.promote_types(pred.dtype, torch.float32)  # float32 at least (a float64 model keeps its own)
    squared = (pred.to(dtype) - (x1 - noise).to(dtype)) ** 2 * span[..., None]
    return squared.sum(dim=(1, 2)) / (span.sum(dim=1) * x1.shape[-1])


@dataclass
class DPOTerms:
    """Per-pair values of the Flow-DPO loss."""

    loss: torch.Tensor  # (p,) -log sigmoid(beta * margin)
    margin: torch.Tensor  # (p,) e_l - e_w, e = model error - reference error


def dpo_terms(model_errors: torch.Tensor, reference_errors: torch.Tensor, beta: float) -> DPOTerms:
    """The loss of rows ``(b,)`` of errors laid out as in :class:`PairBatch` (winners, then losers)."""
    relative = model_errors - reference_errors.to(model_errors)
    winners, losers = relative.chunk(2)
    margin = losers - winners
    return DPOTerms(-F.logsigmoid(beta * margin), margin)


def flow_dpo_loss(model, reference, batch: PairBatch, draws: PairDraws, beta: float) -> DPOTerms:
    """Flow-DPO's per-pair terms of ``batch`` (see the module docstring); gradients reach ``model`` only."""
    errors = flow_errors(model, batch, draws)
    with torch.no_grad():
        reference_errors = flow_errors(reference, batch, draws)
    return dpo_terms(errors, reference_errors, beta)


class _DPOLoss(torch.nn.Module):
    """Wraps the model (and the frozen reference) so DistributedDataParallel sees one forward per step."""

    def __init__(self, model, reference, beta: float):
        super().__init__()
        self.model = model
        self.reference = [reference]  # not a submodule: frozen, not synchronised, not in this module's state
        self.beta = beta

    def forward(self, batch: PairBatch, draws: PairDraws) -> tuple[torch.Tensor, torch.Tensor]:
        terms = flow_dpo_loss(self.model, self.reference[0], batch, draws, self.beta)
        return terms.loss, terms.margin


def finetune_dpo(
    model,
    pairs: list,
    out_dir: str,
    config: DPOConfig,
    *,
    progress: bool = True,
    on_step=None,
    max_seconds: float | None = None,
) -> dict:
    """Fine-tune ``model`` with Flow-DPO on preference ``pairs`` against its own starting weights.

    Writes ``last.pt`` (resume state, the reference included), ``model.safetensors`` (EMA weights, the
    original metadata plus ``dpo_config``) and ``dpo_log.csv`` to ``out_dir`` (rank 0), and resumes from
    ``last.pt`` when present.

    Args:
        model: The model to fine-tune; its weights at the call are the frozen reference.
        pairs: Preference pairs (:func:`load_pairs`, or objects with their fields).
        out_dir: Run directory.
        config: :class:`DPOConfig`.
        progress: Progress bar (rank 0).
        on_step: Called with ``(step, loss)`` after every optimiser step.
        max_seconds: Stop after the first step that ends past this wall time (with a checkpoint).

    Returns:
        ``step``, last ``loss``, last mean ``margin``, ``accuracy`` (share of the last batch's pairs with a
        positive margin), ``pairs`` (used), ``human`` (of them chosen by people), ``seconds`` and ``finished``.
    """
    from flowtts.checkpoints.loader import save as save_model

    usable = ranked(pairs, model.num_channels)
    by_people = sum(bool(getattr(p, "human", False)) for p in pairs if p.choice != "same")
    env = dist_utils.setup()
    model.to(env.device)
    model.train(config.dropout)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    metadata = dict(model.metadata or {})
    recorded = json.dumps(asdict(config))

    def write_files():
        extra = {k: v for k, v in metadata.items() if k not in ("format", "format_version")}
        extra.update(dpo_step=loop.step, dpo_config=recorded)
        save_model(loop.ema, os.path.join(out_dir, "model.safetensors"), extra=extra)

    options = dict(progress=progress, max_seconds=max_seconds, on_step=on_step)
    loop = TrainingLoop(
        model,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        parts={"reference": reference},
        state=lambda: {"dpo_config": recorded},
        desc="Flow-DPO",
        env=env,
        **options,
    )
    loss_module = dist_utils.wrap(_DPOLoss(model, reference, config.beta), env)
    rank, world, size = env.rank, env.world_size, config.batch_size
    last = margin = accuracy = float("nan")
    with loop:
        while loop.running():
            g = torch.Generator().manual_seed(config.seed * 7_919 + loop.step)
            chosen = torch.randint(len(usable), (size,), generator=g).tolist()
            batch = pair_batch([usable[i] for i in chosen])
            draws = PairDraws.draw(batch, g)  # for the global batch: ranks agree
            rows = list(range(rank, size, world)) or [0]
            weight = 1.0 if rank < size else 0.0
            local = pair_batch([usable[chosen[r]] for r in rows])
            local_draws = PairDraws(draws.time[rows], draws.noise[rows, : local.mels.shape[1]])
            losses, margins = loss_module(local, local_draws)
            loss = losses.sum() / size * weight * world
            grad_norm = loop.update(loss)
            last = dist_utils.mean_over_ranks(loss.detach(), env)
            margin = dist_utils.mean_over_ranks(margins.detach().sum() * weight * world / size, env)
            accuracy = dist_utils.mean_over_ranks((margins.detach() > 0).float().sum() * weight * world / size, env)
            if loop.due_log():
                timing = [f"{time.perf_counter() - loop.step_start:.2f}", f"{loop.seconds:.1f}"]
                figures = [f"{v:.6f}" for v in (last, margin, accuracy)]
                loop.log([loop.step, *figures, f"{loop.lr:.3e}", f"{grad_norm:.4f}", *timing])
            loop.end_step(last, loss=f"{last:.4f}", margin=f"{margin:.2e}")
            loop.checkpoint_if_due()
    return {
        "step": loop.step,
        "loss": last,
        "margin": margin,
        "accuracy": accuracy,
        "pairs": len(usable),
        "human": by_people,
        "seconds": loop.seconds,
        "finished": loop.finished,
    }
