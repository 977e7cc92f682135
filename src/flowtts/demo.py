"""The example the README's first command runs: sample a small model both ways and report what happened."""

from __future__ import annotations

import time

import torch

from flowtts.model.build import build_model


def run_demo(steps: int = 16, seed: int = 0, threads: int | None = None) -> dict:
    """Sample a randomly initialised ``tiny`` model with ``cache=True`` and ``cache=False``.

    Prints and returns what was observed: timings, the agreement of the two paths, grad mode and
    train/eval mode after each call, and the gradient that reached the parameters.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model("tiny")
    with torch.no_grad():  # F5-TTS zero-initialises the output: give the demo a non-trivial network
        for p in model.parameters():
            p.normal_(0, 0.02)
    text = ["Flow matching turns noise into speech, one solver step at a time."]
    prompt = torch.randn(1, 80, model.num_channels)
    frames = 250
    report = {}

    model.train()
    start = time.perf_counter()
    fast, _ = model.sample(prompt, text, frames, steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=seed)
    report["cache=True seconds"] = round(time.perf_counter() - start, 3)
    report["cache=True output grad_fn"] = fast.grad_fn
    report["cache=True leaves model in eval mode"] = not model.training

    model.train()
    start = time.perf_counter()
    with torch.no_grad():  # cache=False turns gradients on for its own duration
        slow, _ = model.sample(
            prompt, text, frames, steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=seed, cache=False
        )
        report["grad mode restored after cache=False"] = not torch.is_grad_enabled()
    report["cache=False forward seconds"] = round(time.perf_counter() - start, 3)
    report["cache=False output grad_fn"] = type(slow.grad_fn).__name__
    report["cache=False keeps train mode"] = model.training
    model.eval()
    again, _ = model.sample(
        prompt, text, frames, steps=steps, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=seed, cache=False
    )
    report["max |cache=True - cache=False| (eval)"] = float((fast - again.detach()).abs().max())
    loss = again[:, 80:].pow(2).mean()
    loss.backward()
    reached = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    report["parameters reached by the gradient"] = f"{len(reached)}/{len(list(model.parameters()))}"
    report["text-embedding gradient norm"] = float(model.transformer.text_embed.text_embed.weight.grad.norm())

    width = max(len(k) for k in report)
    print(
        f"flowtts demo: tiny model ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
        f"{steps} Euler steps, cfg 2, {frames} frames"
    )
    for key, value in report.items():
        print(f"  {key.ljust(width)}  {value}")
    return report
