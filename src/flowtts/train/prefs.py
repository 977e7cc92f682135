"""Fit a :class:`flowtts.prefs.model.PreferenceModel` to preference pairs (Bradley-Terry) and report it honestly.

Each pair holds two generations of one prompt (full log-mels, prompt frames included) and a choice
``"a"``, ``"b"`` or ``"same"``. Only the generated frames (after ``prompt_frames``) are scored. The
feature network is frozen, so the pooled features of every mel are computed once; training then fits the
small head alone, full batch, with Adam on the Bradley-Terry loss (plus an L2 penalty on its weights)

    loss = -(t log sigmoid(s_a - s_b) + (1 - t) log sigmoid(s_b - s_a)),   t = 1 for "a", 0 for "b"

which is ``-log sigmoid(s_w - s_l)`` for a decided pair. A ``"same"`` pair is kept with ``t = 0.5``: it
pulls the two scores together (its loss is least when they are equal) rather than being thrown away.

The pairs are split by a seeded shuffle into training and held-out pairs; accuracy is the fraction of
decided (not ``"same"``) pairs whose preferred side scores higher (a tie counts one half). The held-out
accuracy is the number that says whether the model learnt anything: on labels it cannot explain it stays
near 0.5 however well the head fits its training pairs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from flowtts.config import MelConfig
from flowtts.prefs.model import PreferenceModel, check_features, load_feature_net, save_preference_model

CHOICE_TARGET = {"a": 1.0, "b": 0.0, "same": 0.5}


def bradley_terry_loss(score_a: torch.Tensor, score_b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pair Bradley-Terry loss: cross-entropy of ``P(a preferred) = sigmoid(s_a - s_b)`` against ``target``.

    Args:
        score_a: Scores ``(p,)`` of the first generations.
        score_b: Scores ``(p,)`` of the second.
        target: ``(p,)``: 1 where ``a`` was preferred, 0 where ``b`` was, 0.5 for "same".

    Returns:
        ``(p,)`` losses (``-log sigmoid(s_w - s_l)`` for a decided pair).
    """
    margin = score_a - score_b
    return -(target * F.logsigmoid(margin) + (1 - target) * F.logsigmoid(-margin))


def ranking_accuracy(score_a: torch.Tensor, score_b: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of decided pairs (``target`` 0 or 1) whose preferred side scores higher (a tie counts 1/2).

    Raises:
        ValueError: No decided pair.
    """
    decided = target != 0.5
    if not bool(decided.any()):
        raise ValueError("no decided pair (all 'same') to measure accuracy on")
    margin = (score_a - score_b)[decided]
    sign = torch.where(target[decided] == 1.0, margin, -margin)
    return float(((sign > 0).double() + 0.5 * (sign == 0).double()).mean())


def split_pairs(count: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out pairs: a seeded shuffle, the last ``round(fraction * count)`` held out.

    Raises:
        ValueError: ``heldout_fraction`` outside (0, 1), or too few pairs for both parts.
    """
    if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, (int, float)):
        raise ValueError(f"heldout_fraction must be a number in (0, 1), got {heldout_fraction!r}")
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
    held = round(heldout_fraction * count)
    if held < 1 or held >= count:
        raise ValueError(
            f"too few pairs for a held-out split: {count} pair(s) with heldout_fraction {heldout_fraction} leave "
            f"{held} held out and {count - held} to train on (both need at least one)"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[: count - held]), sorted(order[count - held :])


def _read(pairs) -> tuple[list, list[dict]]:
    """The pair objects and where they came from: ``pairs`` is a file, a list of files or a list of pairs."""
    if isinstance(pairs, (str, os.PathLike)):
        pairs = [pairs]
    if not isinstance(pairs, Sequence):
        raise ValueError(f"pairs must be a preferences file, a list of them or a list of pairs, got {type(pairs)}")
    if pairs and all(isinstance(p, (str, os.PathLike)) for p in pairs):
        from flowtts.prefs.store import read_pairs

        loaded, sources, seen = [], [], set()
        for path in pairs:
            found = [p for p in read_pairs(path) if p.id not in seen]  # one answer per id, as merge keeps
            seen.update(p.id for p in found)
            loaded.extend(found)
            sources.append({"file": os.path.basename(os.fspath(path)), "pairs": len(found)})
        if not loaded:
            raise ValueError(f"no preference pairs in {', '.join(os.fspath(p) for p in pairs)}")
        return loaded, sources
    if any(isinstance(p, (str, os.PathLike)) for p in pairs):
        raise ValueError("pairs must be all files or all pairs, not a mixture")
    return list(pairs), [{"file": "(in memory)", "pairs": len(pairs)}]


def _check_out_path(path: str) -> None:
    """Refuse, before any work, an ``out_path`` that is a folder or whose folder cannot take it."""
    from flowtts.utils.files import check_writable_directory

    if os.path.isdir(path):
        raise ValueError(f"out_path {path!r} is a folder; give a .safetensors file")
    try:
        check_writable_directory(os.path.dirname(os.path.abspath(path)))
    except ValueError as error:
        raise ValueError(f"out_path {path!r}: {error}") from None


def _generated(pair, side: str) -> torch.Tensor:
    mel = torch.as_tensor(getattr(pair, f"mel_{side}"), dtype=torch.float32)
    start = int(pair.prompt_frames)
    if mel.ndim != 2 or not 0 <= start < mel.shape[0]:
        raise ValueError(
            f"pair {getattr(pair, 'id', '?')}: mel_{side} of shape {tuple(mel.shape)} has no generated frames after "
            f"its {start} prompt frames"
        )
    return mel[start:]


@torch.no_grad()
def pair_features(
    model: PreferenceModel, pairs: Sequence, batch_size: int = 16, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``(p, f)`` of each pair's two generations (generated frames only, prompt frames dropped).

    Mels are batched by length, so padding is small; the features do not depend on the batching.
    """
    mels = [_generated(p, side) for p in pairs for side in ("a", "b")]
    order = sorted(range(len(mels)), key=lambda i: mels[i].shape[0])
    out = torch.empty(len(mels), model.in_dim)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = [mels[i] for i in chunk]
        lens = torch.tensor([m.shape[0] for m in batch])
        padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True).to(device)
        out[chunk] = model.pooled_features(padded, lens).float().cpu()
    return out[0::2], out[1::2]


def _check_pairs(pairs: list) -> torch.Tensor:
    if not pairs:
        raise ValueError("no preference pairs to train on")
    choices = [getattr(p, "choice", None) for p in pairs]
    wrong = sorted({repr(c) for c in choices if c not in CHOICE_TARGET})
    if wrong:
        raise ValueError(f"a pair's choice must be 'a', 'b' or 'same', got {', '.join(wrong)}")
    if all(c == "same" for c in choices):
        raise ValueError(f"all {len(pairs)} pairs are 'same': nothing says which generation is better")
    return torch.tensor([CHOICE_TARGET[c] for c in choices])


def _fit_head(
    model: PreferenceModel,
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    target: torch.Tensor,
    train_idx: list[int],
    *,
    steps: int,
    lr: float,
    l2: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set the standardisation from the training pairs' features, fit the head, and return every pair's
    scores ``(p,), (p,)`` (on the CPU, without gradients); the model is left in eval mode."""
    device = model.feature_mean.device
    seen = torch.cat([feats_a[train_idx], feats_b[train_idx]])
    std = seen.std(dim=0, unbiased=False)
    model.feature_mean.copy_(seen.mean(dim=0))
    model.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    fa, fb, t = feats_a[train_idx].to(device), feats_b[train_idx].to(device), target[train_idx].to(device)
    head = list(model.head.parameters())
    weights = [p for p in head if p.ndim == 2]
    optimizer = torch.optim.Adam(head, lr=lr)
    model.train()
    for _ in range(steps):
        loss = bradley_terry_loss(model.score_features(fa), model.score_features(fb), t).mean()
        loss = loss + l2 * sum((w**2).sum() for w in weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return model.score_features(feats_a.to(device)).cpu(), model.score_features(feats_b.to(device)).cpu()


def train_preference_model(
    pairs,
    out_path: str | os.PathLike,
    *,
    features: str = "recognizer+stats",
    feature_source: str = "recognizer:builtin",
    heldout_fraction: float = 0.2,
    seed: int = 0,
    steps: int = 300,
    lr: float = 3e-3,
    l2: float = 1e-2,
    hidden: int = 32,
    feature_net: torch.nn.Module | None = None,
    mel: MelConfig | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Fit a preference model to ``pairs``, measure it on held-out pairs and save it to ``out_path``.

    Args:
        pairs: A preferences file, a list of them (:func:`flowtts.prefs.store.read_pairs` reads them), or a
            list of pair objects (``prompt_frames``, ``mel_a``, ``mel_b``, ``choice``, ``human``, ``judge``).
        out_path: Where the ``.safetensors`` model goes.
        features: One of :data:`flowtts.prefs.model.FEATURES`.
        feature_source: The frozen feature network, when ``feature_net`` is not given.
        heldout_fraction: Share of the pairs held out (seeded split), in (0, 1).
        seed: Seeds the split and the head's initialisation.
        steps: Full-batch Adam steps on the head.
        lr: Learning rate.
        l2: Weight of the L2 penalty on the head's weight matrices, added to the mean loss (it keeps the head
            from memorising a few hundred pairs with a thousand features).
        hidden: Width of the head's hidden layer.
        feature_net: A loaded frozen feature network to use instead of loading ``feature_source``.
        mel: The mel front end of the pairs (default: the feature network's, else F5-TTS's).
        device: Where the features are computed.

    Returns:
        ``train_accuracy``, ``heldout_accuracy``, ``loss`` (the final mean Bradley-Terry loss on the training
        pairs, penalty left out), ``pairs``, ``train_pairs``, ``heldout_pairs``, ``same_pairs``, ``human``,
        ``judges``, ``path``, ``seconds``.

    Raises:
        ValueError: No pairs, all "same", an unknown choice, a bad ``heldout_fraction`` / ``steps`` /
            ``lr`` / ``l2``, too few pairs for a held-out split with a decided pair on both sides, or mels that do
            not fit the feature network.
    """
    began = time.perf_counter()
    check_features(features)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if not os.fspath(out_path).endswith(".safetensors"):
        raise ValueError(f"out_path must end in .safetensors, got {os.fspath(out_path)!r}")
    _check_out_path(os.fspath(out_path))
    pairs, sources = _read(pairs)
    target = _check_pairs(pairs)
    train_idx, held_idx = split_pairs(len(pairs), heldout_fraction, seed)
    for name, idx in (("held-out", held_idx), ("training", train_idx)):
        if bool((target[idx] == 0.5).all()):
            raise ValueError(
                f"too few pairs for a held-out split: the {name} pairs ({len(idx)} of {len(pairs)}) are all 'same'; "
                "add pairs or change heldout_fraction / seed"
            )

    if features != "stats" and feature_net is None:
        feature_net = load_feature_net(feature_source, device)
    with torch.random.fork_rng(devices=[]):  # the head's seeded start leaves the caller's generator alone
        torch.manual_seed(seed)
        net = feature_net if features != "stats" else None
        model = PreferenceModel(net, mel, features=features, hidden=hidden).to(device)
    feats_a, feats_b = pair_features(model, pairs, device=device)
    s_a, s_b = _fit_head(model, feats_a, feats_b, target, train_idx, steps=steps, lr=lr, l2=l2)
    train_t, held_t = target[train_idx], target[held_idx]
    final_loss = float(bradley_terry_loss(s_a[train_idx], s_b[train_idx], train_t).mean())
    train_accuracy = ranking_accuracy(s_a[train_idx], s_b[train_idx], train_t)
    heldout_accuracy = ranking_accuracy(s_a[held_idx], s_b[held_idx], held_t)

    human = all(bool(getattr(p, "human", False)) for p in pairs)
    judges = sorted({str(getattr(p, "judge", "") or "unknown") for p in pairs})
    summary = {
        "train_accuracy": train_accuracy,
        "heldout_accuracy": heldout_accuracy,
        "loss": final_loss,
        "pairs": len(pairs),
        "train_pairs": len(train_idx),
        "heldout_pairs": len(held_idx),
        "same_pairs": int((target == 0.5).sum()),
        "human": human,
        "judges": judges,
        "path": os.fspath(out_path),
    }
    record = {
        "human": "true" if human else "false",
        "judges": judges,
        "pairs": {"files": sources, "count": len(pairs), "train": len(train_idx), "heldout": len(held_idx)},
        "same_pairs": summary["same_pairs"],
        "heldout_accuracy": f"{heldout_accuracy:.4f}",
        "train_accuracy": f"{train_accuracy:.4f}",
        "trained_with": {
            "loss": "bradley-terry; 'same' pairs as target 0.5",
            "heldout_fraction": heldout_fraction,
            "seed": seed,
            "steps": steps,
            "lr": lr,
            "l2": l2,
            "hidden": hidden,
        },
    }
    model.metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()})
    save_preference_model(model, out_path)
    summary["seconds"] = time.perf_counter() - began
    return summary
