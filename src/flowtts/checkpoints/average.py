"""Weight averages of models of one architecture (a "model soup" of runs from a common start)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def average(models: Sequence, weights: Sequence[float] | None = None):
    """A model whose every floating parameter and buffer is the weighted mean of ``models``'.

    Averaging pays for runs that share a starting point (fine-tunings or distillations of one model),
    whose weights stay close enough for their mean to work as a model; it is no way to merge unrelated
    models.

    Args:
        models: Two or more :class:`flowtts.CFM` of the same configuration and vocabulary; distilled
            students must also sample the same way (step count, guidance, grid).
        weights: One positive weight per model, normalised to sum to 1 (default: equal).

    Returns:
        A new model (a copy of the first, metadata included) holding the average, in float32.

    Raises:
        ValueError: Fewer than two models, mismatched configurations, vocabularies or sampling
            settings, or bad weights.
    """
    import copy

    from flowtts.sampling.recipe import SamplingRecipe

    if len(models) < 2:
        raise ValueError(f"average needs two or more models, got {len(models)}")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise ValueError(f"weights must give one number per model ({len(models)}), got {len(weights)}")
    if not all(w > 0 for w in weights):
        raise ValueError(f"weights must be positive, got {weights}")
    first = models[0]
    for i, other in enumerate(models[1:], start=2):
        if other.config != first.config:
            raise ValueError(f"model {i} has another configuration than model 1")
        if other.vocab_char_map != first.vocab_char_map:
            raise ValueError(f"model {i} has another vocabulary than model 1")
        recipes = [SamplingRecipe.from_metadata(m.metadata) for m in (other, first)]
        if recipes[0] != recipes[1]:
            raise ValueError(f"model {i} is a student sampled otherwise than model 1 (steps, guidance or grid)")
    total = sum(weights)
    states = [m.state_dict() for m in models]
    mean = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            mean[key] = sum((w / total) * s[key].detach().to(torch.float64) for w, s in zip(weights, states))
            mean[key] = mean[key].to(torch.float32)
        else:
            mean[key] = value
    out = copy.deepcopy(first).float()
    out.load_state_dict(mean)
    return out
