"""Import upstream F5-TTS's model code for parity tests, when the ``f5-tts`` package is installed.

Upstream's ``f5_tts.model`` package imports its trainer (wandb, datasets, accelerate) and its mel
module imports torchaudio, none of which the comparison needs. We register placeholders for
torchaudio/wandb and load the model subpackage without running its ``__init__``.

Every test that compares with upstream (or with torchdiffeq, which CI installs with it) carries the
``upstream`` marker (:data:`parity`, :func:`needs_upstream`). Outside CI such a test skips, with the
reason, where upstream is missing; with ``FLOWTTS_REQUIRE_UPSTREAM=1`` (set by ``.ci/run``) the skip
is turned into a failure by ``tests/conftest.py``, which also prints how many parity cases passed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import pytest

REQUIRE_ENV = "FLOWTTS_REQUIRE_UPSTREAM"
MARKER = "upstream"
parity = getattr(pytest.mark, MARKER)  # a test compared with upstream F5-TTS (or torchdiffeq)
_errors: dict[str, str] = {}  # what failed to import, for the skip (or, in CI, failure) message


def required() -> bool:
    """Whether a missing upstream is a failure (``FLOWTTS_REQUIRE_UPSTREAM=1``, set by ``.ci/run``)."""
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")


def missing_reason(what: str = "f5_tts") -> str:
    """Why ``what`` (``"f5_tts"``, ``"f5_tts.unett"`` or a module name) is unavailable, for a skip message."""
    if what in _errors:
        return f"{what} does not import ({_errors[what]})"
    if what.startswith("f5_tts"):
        return "f5-tts is not installed (pip install --no-deps f5-tts==1.1.22 torchdiffeq x_transformers)"
    return f"{what} is not installed (.ci/run installs it with f5-tts)"


def needs_upstream(available: bool, what: str = "f5_tts"):
    """Mark a test as an upstream-parity case that skips (fails under ``FLOWTTS_REQUIRE_UPSTREAM=1``)
    unless ``available``."""

    def mark(fn):
        return parity(pytest.mark.skipif(not available, reason=missing_reason(what))(fn))

    return mark


def skip_unless(available: bool, what: str = "f5_tts") -> None:
    """Inside a test marked :data:`parity`: skip (a failure in CI) with the reason unless ``available``."""
    if not available:
        pytest.skip(missing_reason(what))


def has_module(name: str) -> bool:
    """Whether ``name`` imports (recording why not)."""
    try:
        importlib.import_module(name)
    except ImportError as error:
        _errors[name] = f"{type(error).__name__}: {error}"
        return False
    return True


def load_upstream():
    """Return ``(CFM, DiT)`` of upstream F5-TTS, or ``None`` when it is not installed (or does not import)."""
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or spec.submodule_search_locations is None:
        return None
    for name in ("torchaudio", "wandb"):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)
    try:
        if "f5_tts.model" not in sys.modules:
            root = list(spec.submodule_search_locations)[0]
            package = types.ModuleType("f5_tts.model")
            package.__path__ = [os.path.join(root, "model")]
            sys.modules["f5_tts.model"] = package
        cfm = importlib.import_module("f5_tts.model.cfm")
        dit = importlib.import_module("f5_tts.model.backbones.dit")
    except ImportError as error:
        _errors["f5_tts"] = f"{type(error).__name__}: {error}"
        return None
    return cfm.CFM, dit.DiT


def load_upstream_unett():
    """Upstream's E2-TTS backbone ``UNetT``, or ``None`` when F5-TTS is not installed."""
    if load_upstream() is None:
        return None
    try:
        return importlib.import_module("f5_tts.model.backbones.unett").UNetT
    except ImportError as error:
        _errors["f5_tts.unett"] = f"{type(error).__name__}: {error}"
        return None


def random_pair(theirs_backbone, ours_backbone, config: dict, seed: int = 0, std: float = 0.05):
    """Upstream's ``CFM(theirs_backbone(**config))`` with random weights, and flowtts's with the same state dict.

    Every floating tensor but the rotary ``inv_freq`` is drawn from N(0, std) (upstream zero-initialises
    output layers, which would make comparisons trivial); flowtts loads the state dict strictly.
    """
    import torch

    from flowtts import CFM

    theirs_cfm, _ = load_upstream()
    theirs = theirs_cfm(theirs_backbone(**config))
    state = theirs.state_dict()
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if value.is_floating_point() and not key.endswith("inv_freq"):
            value.copy_(torch.randn(value.shape, generator=g) * std)
    ours = CFM(ours_backbone(**config))
    ours.load_state_dict(state, strict=True)
    return theirs, ours
