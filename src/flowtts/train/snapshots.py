"""What a training run leaves to look at and choose from: numbered weight snapshots and audio samples.

F5-TTS's trainer keeps ``model_{update}.pt`` every ``save_per_updates`` (the last
``keep_last_n_checkpoints`` of them) and, with ``log_samples``, writes a generated and a reference
wave at each save. Here the snapshots are EMA weights in flowtts's self-describing format
(``model_{step}.safetensors``, loadable and exportable as they are), and the sample follows upstream's
recipe on one fixed utterance, so the samples of a run are comparable step to step.
"""

from __future__ import annotations

import os
import re

import torch

SNAPSHOT = re.compile(r"^model_(\d+)\.safetensors$")
SAMPLES_DIR = "samples"


def snapshot_path(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, f"model_{step}.safetensors")


def snapshots(out_dir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of the run's snapshots, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    found = [
        (int(m.group(1)), os.path.join(out_dir, name)) for name in os.listdir(out_dir) if (m := SNAPSHOT.match(name))
    ]
    return sorted(found)


def keep_snapshot(ema, out_dir: str, step: int, keep: int) -> str:
    """Write ``ema`` as ``model_{step}.safetensors`` and delete all but the newest ``keep`` (-1: keep all).

    Returns the path written.
    """
    from flowtts.checkpoints.loader import save

    path = snapshot_path(out_dir, step)
    save(ema, path, extra={"step": step})
    if keep > 0:
        for _, old in snapshots(out_dir)[:-keep]:
            os.remove(old)
    return path


def sample_prompt(mel: torch.Tensor, text):
    """Upstream's sample recipe: the utterance is its own prompt and its text is said again after it.

    Returns ``(cond (1, n, d), text batch, duration 2n)``.
    """
    again = f"{text} {text}" if isinstance(text, str) else [*text, " ", *text]
    return mel[None], [again], 2 * mel.shape[0]


@torch.no_grad()
def log_sample(model, mel: torch.Tensor, text, out_dir: str, step: int, *, seed: int = 0, steps: int = 32) -> dict:
    """Synthesise the fixed sample with ``model`` and write it under ``out_dir/samples``.

    Writes ``step_{step}_gen.wav`` (the generated half, vocoded as
    :func:`~flowtts.audio.vocoders.choose_vocoder` chooses by default: the built-in vocoder for a model of
    the built-in voice, else Griffin-Lim), ``step_{step}_gen.png`` (its mel, when matplotlib is
    installed) and, once per run, ``ref.wav`` (the utterance itself). The
    sampler draws its noise from ``seed`` with its own generator: the training run's random state is
    left as it was.

    Args:
        model: The (EMA) model; sampled in float32 with 32 steps, cfg 2, sway -1 (upstream's settings).
        mel: The utterance's log-mel ``(n, d)``.
        text: Its text as the model reads it (a string, or units).
        out_dir: The run directory.
        step: Training step (names the files).
        seed: Noise seed.
        steps: Solver steps.

    Returns:
        ``{"gen": path, "ref": path, "png": path or None, "mel": generated mel (n, d)}``.
    """
    from flowtts.audio.io import write_audio
    from flowtts.audio.vocoders import choose_vocoder
    from flowtts.utils.plotting import pyplot

    folder = os.path.join(out_dir, SAMPLES_DIR)
    os.makedirs(folder, exist_ok=True)
    device = next(model.parameters()).device
    cond, texts, duration = sample_prompt(mel.to(device=device, dtype=torch.float32), text)
    out, _ = model.sample(cond, texts, duration, steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=seed)
    generated = out[0, mel.shape[0] :].float().cpu()
    vocoder = choose_vocoder(model)  # the built-in vocoder for a model of the built-in voice, else Griffin-Lim
    rate = model.mel_spec.target_sample_rate
    paths = {"gen": os.path.join(folder, f"step_{step}_gen.wav"), "ref": os.path.join(folder, "ref.wav"), "png": None}
    with torch.no_grad():
        write_audio(paths["gen"], vocoder(generated.t())[0], rate)
        if not os.path.exists(paths["ref"]):
            write_audio(paths["ref"], vocoder(mel.float().cpu().t())[0], rate)
    if pyplot() is not None:
        from flowtts.utils.plotting import save_mel_png

        paths["png"] = os.path.join(folder, f"step_{step}_gen.png")
        save_mel_png(generated.t(), paths["png"], title=f"step {step}")
    return {**paths, "mel": generated}
