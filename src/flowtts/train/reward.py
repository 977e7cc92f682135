"""Reward fine-tuning: raise a differentiable reward of the model's own samples.

Each step draws prompts (the leading 20-50 % of an utterance as the reference mel, its transcript, its
length) and one noise per prompt from a prepared dataset, samples them with ``cache=False`` so the
output carries gradients through the solver (all steps, or the last ``backprop_steps`` as in DRaFT-K;
optionally checkpointed), scores each utterance with a reward ``r(mel, prompts) -> (b,)``, and
minimises

    loss = -mean(r) + anchor_weight * (mean squared distance to the frozen starting model's sample)

where the anchor compares the generated frames with what the model produced before fine-tuning from
the same prompt and noise: the reward can only be bought with changes it pays for.

The reward reads the generated mel (``timbre``, ``speaker``, ``ctc``, a learned preference model's score
with ``preference:FILE``, or any ``module:function``) or, with ``on="wave"``, the wave a frozen
differentiable vocoder renders from it (:mod:`flowtts.train.rendering`: ``wave-stft``, ``loudness``,
``speaker``). The final report adds fixed judges no reward trains against (WER, SIM, DNSMOS), a guard
against reward hacking. Preference pairs can also be learned from directly: :mod:`flowtts.train.dpo`.

A model is sampled the way it is meant to be (:class:`flowtts.sampling.recipe.SamplingRecipe`: F5-TTS's 32
guided steps for a teacher, a distilled student's own steps, grid and guidance) unless the config says
otherwise, and the fine-tuned file keeps the original's metadata, so a fine-tuned student is still
sampled as a student.

Randomness is derived from ``(seed, step)`` and drawn for the global batch, as in
:mod:`flowtts.train.distill`, so runs resume exactly and ranks stay identical under torchrun.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from flowtts.model.mel import mel_config_of
from flowtts.sampling.recipe import SamplingRecipe
from flowtts.train import distributed as dist_utils
from flowtts.train.data import MelDataset, PairLayout
from flowtts.train.loop import LoopSettings, TrainingLoop
from flowtts.train.prompts import (
    Prompts,
    check_prompt_kind,
    draw_kind,
    fixed_prompts,
    generated_distance,
    sample_with,
)
from flowtts.utils.plotting import plot_reward_curve

Reward = Callable[[torch.Tensor, Prompts], torch.Tensor]
LOG_CSV = "reward_log.csv"
LOG_COLUMNS = ["step", "loss", "reward", "anchor", "lr", "grad_norm", "seconds_per_step", "elapsed_s"]
REWARD_LOOP = LoopSettings(
    steps=200, lr=1e-5, warmup=20, weight_decay=0.0, grad_clip=1.0, ema_decay=0.99, save_every=50, log_every=1
)


def _frame_stats(mel: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance, per-channel mean and standard deviation of the frames in ``mask`` (``b n``)."""
    weights = mask[..., None].to(mel.dtype)
    count = weights.sum(dim=1).clamp(min=1.0)
    mean = (mel * weights).sum(dim=1) / count
    var = ((mel - mean[:, None]) ** 2 * weights).sum(dim=1) / count
    return mean, (var + 1e-8).sqrt()


def timbre_reward(mel: torch.Tensor, prompts: Prompts) -> torch.Tensor:
    """How closely the generated frames' log-mel statistics match the reference's (0 at best, else negative).

    Per utterance: minus the mean over channels of the squared differences between the generated and the
    reference frames' per-channel mean and per-channel standard deviation (the long-term spectrum and
    its spread, a cheap differentiable stand-in for speaker and recording similarity).

    Args:
        mel: Generated mels ``(b, n, d)`` (prompt frames included, as ``sample()`` returns them).
        prompts: The prompts they were generated for.

    Returns:
        ``(b,)`` rewards.
    """
    frames = torch.arange(mel.shape[1], device=mel.device)[None, :]
    reference = frames < prompts.lens.to(mel.device)[:, None]
    generated = prompts.generated_mask().to(mel.device)
    ref_mean, ref_std = _frame_stats(mel, reference)
    gen_mean, gen_std = _frame_stats(mel, generated)
    return -((gen_mean - ref_mean) ** 2 + (gen_std - ref_std) ** 2).mean(dim=-1)


def _speaker_reward(model, recognizer: str) -> Reward:
    from flowtts.eval.speaker import SpeakerSimilarity

    return SpeakerSimilarity(model.mel_spec).to(model.device)


class CTCReward:
    """Minus the recogniser's CTC loss per character of what the generated frames should say.

    Only the generated frames are read (the prompt's are excluded), so the prompts must know their
    target texts (:func:`flowtts.train.prompts.draw_pair_prompts`). An utterance whose target needs more
    frames than were generated is not scored: its reward is 0 without gradient, a warning says so, and
    ``skipped`` counts it.

    Args:
        recognizer: A :class:`flowtts.eval.recognizer.CTCRecognizer` (frozen here, in eval mode).
        model: The model whose samples are scored; its mel front end must be the recogniser's.
    """

    def __init__(self, recognizer, model=None):
        if model is not None:
            recognizer.check_fits(mel_config_of(model), "the model")
            recognizer = recognizer.to(model.device)
        self.recognizer = recognizer.eval().requires_grad_(False)
        self.skipped = 0

    def __call__(self, mel: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        if prompts.targets is None:
            raise ValueError(
                "the ctc reward scores what the generated frames say, so it needs prompts that know their target "
                "texts (RewardConfig(prompts='pair') or 'unprompted')"
            )
        starts, ends = prompts.lens.tolist(), prompts.durations.tolist()
        frames = [mel[i, s:e] for i, (s, e) in enumerate(zip(starts, ends))]
        lens = torch.tensor([f.shape[0] for f in frames])
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
        loss, scored = self.recognizer.ctc_loss(padded, lens, prompts.targets)
        missed = int((~scored).sum())
        if missed:
            import warnings

            self.skipped += missed
            warnings.warn(
                f"ctc reward: {missed} utterance(s) too short for their target text were not scored", stacklevel=2
            )
        return -loss


def _ctc_reward(model, recognizer: str) -> Reward:
    from flowtts.eval.recognizer import load_recognizer

    return CTCReward(load_recognizer(recognizer), model)


class PreferenceReward:
    """A learned preference model's score of the generated frames (``--reward preference:FILE``).

    Only the generated frames are read (the prompt's are excluded, as :class:`CTCReward` does): each
    utterance's frames between its prompt and its duration, padded, with their lengths.

    Args:
        judge: A preference model (:func:`flowtts.prefs.model.load_preference_model`; frozen here, in eval
            mode): ``judge.score(mel (b, n, d), lens (b,)) -> (b,)``.
        model: The model whose samples are scored; its mel front end must be the judge's.
    """

    def __init__(self, judge, model=None):
        if model is not None:
            judge.check_fits(mel_config_of(model), "the model")
            judge = judge.to(model.device)
        self.judge = judge.eval().requires_grad_(False)

    def __call__(self, mel: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        starts, ends = prompts.lens.tolist(), prompts.durations.tolist()
        frames = [mel[i, s:e] for i, (s, e) in enumerate(zip(starts, ends))]
        lens = torch.tensor([f.shape[0] for f in frames], device=mel.device)
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
        return self.judge.score(padded, lens)


def _preference_reward(model, spec: str) -> Reward:
    path = spec.partition(":")[2]
    if not path or not os.path.isfile(path):
        raise ValueError(f"reward {spec!r}: no preference model file {path!r} (--reward preference:FILE)")
    try:
        from flowtts.prefs.model import load_preference_model
    except ImportError as error:
        raise ValueError(f"reward {spec!r}: preference models need flowtts.prefs.model ({error})") from None
    return PreferenceReward(load_preference_model(path, device=str(model.device)), model)


# Built-in rewards of mels by name: each entry builds the reward for a model (and a recogniser file, for "ctc").
REWARDS: dict[str, Callable[[object, str], Reward]] = {
    "timbre": lambda model, recognizer: timbre_reward,
    "speaker": _speaker_reward,
    "ctc": _ctc_reward,
}
ON = ("mel", "wave")  # what a reward reads: the generated mel, or the wave a vocoder renders from it


def resolve_reward(
    spec: str | Reward, model=None, recognizer: str = "builtin", *, on: str = "mel", vocoder: str = "auto"
) -> Reward:
    """A reward callable ``(mel, prompts) -> (b,)`` from a name, a path, or a callable.

    Args:
        spec: On mels: a name in :data:`REWARDS`, ``"preference:FILE"`` (a learned preference model), a
            ``"package.module:function"`` path or a callable, all taking ``(mel, prompts)``. On waves: a
            name in :data:`flowtts.train.rendering.WAVE_REWARDS` (``"loudness:DB"`` sets its target), or a
            path or callable taking ``(rendered, prompts)`` (a :class:`flowtts.train.rendering.Rendered`).
        model: The model the reward is for (built-in rewards need its mel front end).
        recognizer: The recogniser file of the ``"ctc"`` reward (``"builtin"``: the built-in voice's).
        on: ``"mel"`` or ``"wave"`` (the reward reads the wave ``vocoder`` renders from each generated mel).
        vocoder: On waves: ``"auto"`` (the built-in vocoder for models that speak the built-in voice, else
            Griffin-Lim), ``"builtin"``, ``"griffin-lim"`` or a vocoder file
            (:func:`flowtts.train.rendering.load_vocoder`).

    Raises:
        ValueError: An unknown name, a reward of mels asked for on waves or one of waves on mels, a
            preference file or vocoder that does not exist or does not fit the model, a module that cannot
            be imported, or a function that cannot be called as ``fn(mel, prompts)``.
    """
    from flowtts.train import rendering

    if on not in ON:
        raise ValueError(f"on must be one of {ON}, got {on!r}")
    if not callable(spec) and (not isinstance(spec, str) or not spec):
        raise ValueError(f"reward must be a callable, a name in {tuple(REWARDS)} or 'module:function', got {spec!r}")
    if on == "wave":
        if model is None:
            raise ValueError("a reward on waves is made for a model: pass model=")
        if rendering.wave_reward_name(spec) is not None:
            return rendering.wave_reward(spec, model, vocoder)
        if isinstance(spec, str) and (spec in REWARDS or spec.startswith("preference:")):
            raise ValueError(
                f"reward {spec!r} reads mels; --on wave takes {tuple(rendering.WAVE_REWARDS)} or 'module:function'"
            )
        return rendering.WaveReward(rendering.load_vocoder(vocoder, model), _function(spec))
    if isinstance(spec, str) and rendering.wave_reward_name(spec) not in (None, "speaker"):
        raise ValueError(
            f"reward must be one of {tuple(REWARDS)}, 'preference:FILE' or 'module:function' on mels; {spec!r} "
            "scores waves: pass --on wave (on='wave')"
        )
    if isinstance(spec, str) and (spec in REWARDS or spec.startswith("preference:")):
        if model is None:
            raise ValueError(f"the built-in reward {spec!r} is made for a model: pass model=")
        if spec.startswith("preference:"):
            return _preference_reward(model, spec)
        return REWARDS[spec](model, recognizer)
    return _function(spec)


def _function(spec: str | Callable) -> Callable:
    """A callable, or the function a ``"module:function"`` path names."""
    if callable(spec):
        return spec
    if ":" not in spec:
        choices = f"{tuple(REWARDS)}, 'preference:FILE' or 'module:function'"
        raise ValueError(f"reward must be one of {choices}, got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward {spec!r}: cannot import module {module_name!r} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {module_name} has no callable {attr!r}")
    _check_takes_mel_and_prompts(fn, spec)
    return fn


def _check_takes_mel_and_prompts(fn: Callable, spec: str) -> None:
    """Refuse a function that cannot be called as ``fn(mel, prompts)`` (``os:system`` would fail mid-run)."""
    import inspect

    try:
        inspect.signature(fn).bind(None, None)
    except TypeError as error:
        raise ValueError(
            f"reward {spec!r} must take (mel, prompts) and return one reward per row; it takes "
            f"{inspect.signature(fn)} ({error})"
        ) from None
    except ValueError:
        pass  # no signature to read (some built-in functions): its first call tells


@dataclass
class RewardConfig:
    """What to reward, how to sample, and how hard to hold the model to where it started."""

    reward: str = "speaker"  # a name in REWARDS or "module:function" (the Python API also takes a callable)
    sample_steps: int | None = None  # None: the model's recommended steps (and a student's own grid)
    cfg_strength: float | None = None  # None: the model's recommended guidance
    backprop_steps: int | None = None  # gradients through the last this many solver steps (None: all)
    grad_checkpoint: bool = False
    anchor_weight: float = 1.0  # weight of the distance to the starting model's sample (0: no anchor)
    dropout: bool = False  # keep the model's dropout active while it samples
    batch_size: int = 4
    loop: LoopSettings = REWARD_LOOP  # optimisation and bookkeeping
    prompt_fraction: tuple[float, float] = (0.2, 0.5)
    prompts: str | None = None  # "prefix" (a leading part of an utterance), "pair" (one utterance, then another's
    # text), "unprompted" (an utterance with no audio prompt); None: "pair" for the ctc reward, which must know what
    # the generated frames say, else "prefix"
    recognizer: str = "builtin"  # the ctc reward's recogniser file
    on: str = "mel"  # what the reward reads: "mel", or "wave" (the vocoder's rendering of each generated mel)
    vocoder: str = "auto"  # on waves: "auto", "builtin", "griffin-lim" or a vocoder file
    seed: int = 0
    # pair prompts' reference: None, the recording whole; (lo, hi) s, as inference prepares it (PairLayout)
    pair_gap: tuple[float, float] | None = None
    pair_rms: float = 0.0

    def __post_init__(self):
        if self.prompts is None:
            self.prompts = "pair" if self.reward == "ctc" else "prefix"
        check_prompt_kind(self.prompts)
        if self.on not in ON:
            raise ValueError(f"on must be one of {ON}, got {self.on!r}")
        self.pair_layout()  # its checks
        if self.prompts == "unprompted" and self.reward in ("speaker", "timbre"):
            raise ValueError(f"the {self.reward} reward compares with the prompt's audio; unprompted prompts have none")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sample_steps is not None and self.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1 or None, got {self.sample_steps}")
        if self.backprop_steps is not None and self.backprop_steps < 1:
            raise ValueError(f"backprop_steps must be >= 1 or None, got {self.backprop_steps}")
        if not self.anchor_weight >= 0:
            raise ValueError(f"anchor_weight must be >= 0, got {self.anchor_weight}")
        lo, hi = self.prompt_fraction
        if not 0 < lo <= hi < 1:
            raise ValueError(f"prompt_fraction must satisfy 0 < lo <= hi < 1, got {self.prompt_fraction}")
        self.prompt_fraction = (float(lo), float(hi))

    def pair_layout(self) -> PairLayout:
        """How pair prompts lay out their reference clip (:class:`flowtts.train.data.PairLayout`)."""
        return PairLayout.of(self.pair_gap, self.pair_rms, self.seed)

    def recipe(self, model) -> SamplingRecipe:
        """How ``model`` is sampled here: its own recipe with this config's overrides.

        Raises:
            ValueError: ``backprop_steps`` more than the recipe's steps.
        """
        recipe = SamplingRecipe.for_model(model, steps=self.sample_steps, cfg_strength=self.cfg_strength)
        if self.backprop_steps is not None and self.backprop_steps > recipe.steps:
            raise ValueError(f"backprop_steps ({self.backprop_steps}) exceeds the {recipe.steps} solver steps sampled")
        return recipe


class _RewardLoss(torch.nn.Module):
    """Wraps the model so DistributedDataParallel sees one forward per step."""

    def __init__(self, model, reward: Reward, sample_kwargs: dict, config: RewardConfig):
        super().__init__()
        self.model = model
        self.reward = reward
        self.sample_kwargs = sample_kwargs
        self.config = config

    def forward(self, prompts: Prompts, anchor: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum of rewards, sum of squared anchor distances)`` over this rank's prompts."""
        c = self.config
        out = sample_with(
            self.model,
            prompts,
            cache=False,
            grad_checkpoint=c.grad_checkpoint,
            backprop_steps=c.backprop_steps,
            **self.sample_kwargs,
        )
        rewards = check_rewards(self.reward(out, prompts), len(prompts.texts))
        squared = out.new_zeros(())
        if anchor is not None:
            mask = prompts.generated_mask()[..., None].to(out.device)
            squared = ((out - anchor.to(out)) ** 2 * mask).sum()
        return rewards.sum(), squared


def draw_training_prompts(dataset: MelDataset, config: RewardConfig, num_channels: int, g) -> Prompts:
    """One step's prompts (``config.batch_size`` of the kind ``config.prompts``), drawn with ``g``."""
    indices = torch.randint(len(dataset), (config.batch_size,), generator=g).tolist()
    return draw_kind(dataset, indices, config.prompts, num_channels, config, g, config.pair_layout())


def heldout_prompts(dataset: MelDataset, n: int, config: RewardConfig, num_channels: int, seed: int = 0) -> Prompts:
    """Fixed report prompts from the first ``n`` rows of ``dataset`` (pairs: each row then the next one's text,
    the ``n``-th then the first's)."""
    rows = list(range(min(n, len(dataset))))
    return fixed_prompts(dataset, rows, config.prompts, num_channels, config, seed, config.pair_layout())


def check_rewards(rewards, batch: int) -> torch.Tensor:
    """``rewards`` if it is a finite floating ``(batch,)`` tensor, else ``ValueError`` naming what came back."""
    if not torch.is_tensor(rewards) or not rewards.is_floating_point() or tuple(rewards.shape) != (batch,):
        got = tuple(rewards.shape) if torch.is_tensor(rewards) else type(rewards).__name__
        raise ValueError(f"the reward must return a floating tensor of shape ({batch},), one per utterance; got {got}")
    if not torch.isfinite(rewards.detach()).all():
        raise ValueError(f"the reward returned non-finite values: {rewards.detach().tolist()}")
    return rewards


@dataclass
class _StepValues:
    """What one step computed on this rank (``weight`` 0: a rank without a row of its own)."""

    loss: torch.Tensor
    reward_sum: torch.Tensor
    squared: torch.Tensor
    weight: float
    elements: float

    def means(self, env, batch_size: int) -> tuple[float, float, float]:
        """The loss, mean reward and anchor distance of the step's global batch."""
        weight, world = self.weight, env.world_size
        loss = dist_utils.mean_over_ranks(self.loss.detach(), env)
        reward = dist_utils.mean_over_ranks(self.reward_sum.detach() * weight * world / batch_size, env)
        anchor = dist_utils.mean_over_ranks(self.squared.detach() * weight * world / self.elements, env)
        return loss, reward, anchor


class _RewardObjective:
    """One step's loss on this rank: the step's global batch drawn from ``(seed, step)``, this rank's rows of
    it, their rewards and (with an anchor) their distance to the starting model's samples."""

    def __init__(self, model, dataset: MelDataset, config: RewardConfig, env, loss, reference, sample_kwargs: dict):
        self.num_channels, self.dataset, self.config, self.env = model.num_channels, dataset, config, env
        self.loss, self.reference, self.sample_kwargs = loss, reference, sample_kwargs

    def __call__(self, step: int) -> _StepValues:
        c, rank, world, num_channels = self.config, self.env.rank, self.env.world_size, self.num_channels
        g = torch.Generator().manual_seed(c.seed * 7_919 + step)
        prompts = draw_training_prompts(self.dataset, c, num_channels, g)
        rows = list(range(rank, c.batch_size, world)) or [0]
        weight = 1.0 if rank < c.batch_size else 0.0
        local = prompts.rows(rows)
        elements = float(prompts.generated_mask().sum()) * num_channels
        anchor = None
        if self.reference is not None:
            anchor = sample_with(self.reference, local, cache=True, **self.sample_kwargs)
        torch.manual_seed(c.seed * 104_729 + step * world + rank)  # dropout, when active
        reward_sum, squared = self.loss(local, anchor)
        loss = (-reward_sum / c.batch_size + c.anchor_weight * squared / elements) * weight * world
        return _StepValues(loss, reward_sum, squared, weight, elements)


def _training_loop(model, out_dir: str, config: RewardConfig, reference, env, **options) -> TrainingLoop:
    """The loop of ``model`` (and the frozen reference of the anchor, kept in ``last.pt``)."""
    from flowtts.checkpoints.loader import save as save_model

    metadata = dict(model.metadata or {})
    recorded = json.dumps(asdict(config))

    def write_files():  # the original's metadata (a student's recipe, its data's speed...) and this run's
        extra = {k: v for k, v in metadata.items() if k not in ("format", "format_version")}
        extra.update(reward_step=loop.step, reward_config=recorded)
        save_model(loop.ema, os.path.join(out_dir, "model.safetensors"), extra=extra)
        plot_reward_curve(os.path.join(out_dir, LOG_CSV), os.path.join(out_dir, "reward.png"))

    loop = TrainingLoop(
        model,
        out_dir,
        config.loop,
        log_file=LOG_CSV,
        log_columns=LOG_COLUMNS,
        write_files=write_files,
        parts={"reference": reference} if reference is not None else {},
        state=lambda: {"reward_config": recorded},
        desc="reward fine-tuning",
        env=env,
        **options,
    )
    return loop


def finetune(
    model,
    dataset: MelDataset,
    out_dir: str,
    config: RewardConfig,
    *,
    reward: Reward | None = None,
    progress: bool = True,
    on_step=None,
    max_seconds: float | None = None,
) -> dict:
    """Fine-tune ``model`` to raise ``reward`` on its own samples (see the module docstring).

    Writes ``last.pt`` (resume state), ``model.safetensors`` (EMA weights, the original metadata plus
    ``reward_config``), ``reward_log.csv`` and ``reward.png`` to ``out_dir`` (rank 0), and resumes from
    ``last.pt`` when present.

    Args:
        model: The model to fine-tune; its weights at the call are the anchor's frozen reference.
        dataset: Prepared data the prompts are drawn from.
        out_dir: Run directory.
        config: :class:`RewardConfig`.
        reward: A callable ``(mel (b, n, d), prompts) -> (b,)`` overriding ``config.reward``.
        progress: Progress bar (rank 0).
        on_step: Called with ``(step, loss)`` after every optimiser step.
        max_seconds: Stop after the first step that ends past this wall time (with a checkpoint).

    Returns:
        ``step``, last ``loss``, last mean ``reward``, ``seconds``, and ``finished``.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset has no usable rows")
    env = dist_utils.setup()
    model.to(env.device)
    reward_fn = resolve_reward(
        reward if reward is not None else config.reward, model, config.recognizer, on=config.on, vocoder=config.vocoder
    )
    sample_kwargs = config.recipe(model).sample_kwargs()
    if config.prompts == "pair":
        config.pair_layout().check(dataset)
    model.train(config.dropout)
    reference = None
    if config.anchor_weight > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    options = dict(progress=progress, max_seconds=max_seconds, on_step=on_step)
    loop = _training_loop(model, out_dir, config, reference, env, **options)
    loss_module = dist_utils.wrap(_RewardLoss(model, reward_fn, sample_kwargs, config), env)
    objective = _RewardObjective(model, dataset, config, env, loss_module, reference, sample_kwargs)
    last, last_reward = float("nan"), float("nan")
    with loop:
        while loop.running():
            values = objective(loop.step)
            grad_norm = loop.update(values.loss)
            last, last_reward, anchor = values.means(env, config.batch_size)
            if loop.due_log():
                timing = [f"{time.perf_counter() - loop.step_start:.2f}", f"{loop.seconds:.1f}"]
                figures = [f"{v:.6f}" for v in (last, last_reward, anchor)]
                loop.log([loop.step, *figures, f"{loop.lr:.3e}", f"{grad_norm:.4f}", *timing])
            loop.end_step(last, reward=f"{last_reward:.4f}")
            loop.checkpoint_if_due()
    return {
        "step": loop.step,
        "loss": last,
        "reward": last_reward,
        "seconds": loop.seconds,
        "finished": loop.finished,
    }


def evaluate(
    models: dict, prompts: Prompts, reward: Reward | None, reference: str, judges: Callable | None = None
) -> list[dict]:
    """Mean reward of each model's samples, their distance to the samples of ``models[reference]``, and the
    fixed judges' scores.

    Args:
        models: ``name -> (model, sample() keyword arguments)``.
        prompts: Held-out prompts with fixed noises.
        reward: The reward callable (``None``: no reward column, as after a DPO run).
        reference: The name whose samples the distances are measured to (e.g. the model before fine-tuning).
        judges: ``(mel, prompts) -> {column: score or None}``, fixed judges no reward trains against
            (:class:`flowtts.train.rendering.Judges`), or ``None``.

    Returns:
        One row per model: ``system``, ``reward`` (mean; ``None`` without a reward), ``distance`` (mean
        squared, generated frames), ``s/utt`` and the judges' columns; and a last row ``"recordings"`` for
        the prompts' own utterances when they carry them.
    """
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
    outs, rows = {}, []

    def scores(name: str, mel: torch.Tensor, seconds: float) -> dict:
        row = {"system": name, "reward": None, "s/utt": seconds}
        with torch.no_grad():
            if reward is not None:
                row["reward"] = float(check_rewards(reward(mel, prompts), len(prompts.texts)).mean())
        if judges is not None:
            row.update(judges(mel, prompts))
        return row

    for name, (model, sample_kwargs) in models.items():
        begin = time.perf_counter()
        outs[name] = sample_with(model, prompts, cache=True, **sample_kwargs)
        rows.append(scores(name, outs[name], (time.perf_counter() - begin) / len(prompts.texts)))
    if prompts.data is not None:  # what the recordings themselves score
        outs["recordings"] = prompts.data.to(outs[reference])
        rows.append(scores("recordings", outs["recordings"], float("nan")))
    for row in rows:
        row["distance"] = generated_distance(outs[row["system"]], outs[reference], prompts)
    return rows


def format_rows(rows: list[dict], reference: str) -> str:
    """The rows of :func:`evaluate` as a table (a judge's score ``n/a`` where it could not be had)."""
    from flowtts.train.rendering import format_score

    judged = [c for c in rows[0] if c not in ("system", "reward", "s/utt", "distance")]
    header = f"{'system':<40} {'reward':>10} {'dist. to ' + reference:>22} {'s/utt':>7}"
    header += "".join(f" {c:>8}" for c in judged)
    lines = [header, "-" * len(header)]
    for r in rows:
        value = "n/a" if r["reward"] is None else f"{r['reward']:.5f}"
        line = f"{r['system']:<40} {value:>10} {r['distance']:>22.5f} {r['s/utt']:>7.3f}"
        lines.append(line + "".join(f" {format_score(r[c]):>8}" for c in judged))
    return "\n".join(lines)
